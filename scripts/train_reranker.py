#!/usr/bin/env python
"""Fine-tune the 6-layer cross-encoder (models/reranker) to score "does this sentence, with its
preceding sentence as context, answer the question" on CPU, reproducibly and resumably, in
stages; export it as INT8 ONNX for ``CITEQA_RERANKER=distilled CITEQA_RERANKER_PATH=<out>``.

Data (scripts/training/reranker_data.py): (question, sentence as the service shows it, label)
pairs from SQuAD v1.1 train + the split's train articles of the dev files: the answer sentence
(1); the same paragraph's other sentences, BM25 sentences of the article's other paragraphs and
a few random sentences of other articles (0); and the train_v2 articles' SQuAD v2.0 unanswerable
questions with their paragraph's most similar sentences (0). Held out: the pairs of the split's
4 dev articles (dev-v2.0.json); the 17 test articles and SQuADShifts are never used.

    python scripts/train_reranker.py --prepare-only                   # data -> work/data/
    python scripts/train_reranker.py --stage 1                        # one stage (default size)
    python scripts/train_reranker.py --stage 1 --resume               # continue after a stop
    python scripts/train_reranker.py --stage 2 --offset 28800 \\
        --base-model models/reranker_answer/work/stage1/final         # next stage, new pairs
    python scripts/train_reranker.py --stage 1 --stop-at 400          # checkpoint at step 400 and
                                                                      # stop (--resume goes on)
    python scripts/train_reranker.py --stage 1 --max-steps 5          # timing only, saves nothing
    python scripts/train_reranker.py --eval --model models/reranker   # held-out metrics of any
                                                                      # ONNX or torch folder
    python scripts/train_reranker.py --export --model DIR             # export DIR to --out

Model: the 6-layer student's weights dequantized from its INT8 ONNX graph (the ``teacher_state_dict``
walk of scripts/distill_reranker.py), or a torch folder (``--base-model``, e.g. a previous
stage's ``final``). Loss: binary cross-entropy on the label, plus ``--distill-weight`` x mean
squared error to the 12-layer teacher's logit on the pairs that have one (``--teacher-pairs N``
labels the first N pairs of the stage, at prepare time or before a stage that distils; 0 by
default). AdamW, linear warm-up and
decay within the stage, bf16 autocast, length-bucketed batches, one thread.

Stage N trains on pairs [offset, offset + examples) of one seeded permutation of the answerable
questions' pairs (keep ``--seed`` across stages so stages see new pairs), plus ``--unanswerable``
pairs of unanswerable questions (the N-th slice of their own permutation: they are only 1.3% of
the pairs, too few to leave to chance). Default size: 28,800 + 2,400 pairs = 975 steps of 32, at
the 4.1 s/step measured on one thread (bf16, the other core busy) about 67 minutes, plus ~2
minutes for checkpoints and ~2 for the export and its held-out scoring.
Checkpoints (model + optimizer + scheduler + RNG + step) go to ``<work>/stageN/checkpoint.pt``
every ``--checkpoint-minutes`` with held-out metrics on a subset (``curve.jsonl``); ``--resume``
continues mid-stage on the same data (its sha256 is checked). At the end: ``<work>/stageN/final``
(torch), the INT8 ONNX export in ``--out`` and its held-out metrics scored through the service's
own ``OnnxCrossEncoder`` (``<out>/eval_dev.json``).
"""

from __future__ import annotations

from _env import REPO  # first: pins thread pools, puts the repo on sys.path

import argparse
import json
import logging
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from citeqa.index.documents import file_sha256
from training.loop import (
    CheckpointClock,
    StageCheckpoint,
    StepLog,
    optimizer_step,
    pin_threads,
)
from training.reranker_data import (
    CONTEXT_SENTENCES,
    KINDS,
    Pair,
    heldout_articles,
    heldout_metrics,
    heldout_pairs,
    read_pairs,
    training_pairs,
    write_pairs,
)

log = logging.getLogger("train_reranker")

BASE_DIR = REPO / "models" / "reranker"  # the 6-layer student: initialisation and tokenizer
# Default stage size: pairs of answerable questions per stage (unanswerable pairs come on top),
# sized from the measured seconds per step to about 75 minutes on one thread (see --help).
DEFAULT_EXAMPLES = 28800
DEFAULT_UNANSWERABLE = 2400


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--squad-dir", type=Path, default=REPO.parent / "shared" / "benchmarks" / "squad")
    p.add_argument("--work-dir", type=Path, default=REPO / "models" / "reranker_answer" / "work",
                   help="data/, stageN/ (git-ignored)")
    p.add_argument("--out", type=Path, default=REPO / "models" / "reranker_answer",
                   help="folder of the exported INT8 ONNX model")
    p.add_argument("--output-dir", type=Path, default=None, help="default: <work-dir>/stage<N>")
    p.add_argument("--data", type=Path, default=None, help="default: <work-dir>/data/pairs.jsonl")
    # data preparation
    p.add_argument("--prepare-only", action="store_true", help="build the pairs and stop")
    p.add_argument("--rebuild-data", action="store_true", help="rebuild even if the file exists")
    p.add_argument("--data-seed", type=int, default=23)
    p.add_argument("--same-paragraph", type=int, default=3, help="negatives per question")
    p.add_argument("--other-paragraph", type=int, default=2, help="BM25 negatives per question")
    p.add_argument("--unanswerable-sentences", type=int, default=3)
    p.add_argument("--other-article-share", type=float, default=0.1,
                   help="share of questions also paired with a random other article's sentence")
    p.add_argument("--bare-share", type=float, default=0.0,
                   help="share of pairs shown without the preceding sentence (rerank_context=0)")
    p.add_argument("--teacher-pairs", type=int, default=0,
                   help="label the first N pairs of the stage with the 12-layer teacher (~15 ms "
                        "each; at prepare time, or before training with --distill-weight)")
    # training
    p.add_argument("--stage", type=int, default=1)
    p.add_argument("--base-model", type=Path, default=None,
                   help="ONNX reranker folder or torch folder (default: models/reranker)")
    p.add_argument("--examples", type=int, default=DEFAULT_EXAMPLES,
                   help="answerable-question pairs this stage (0 = all after --offset)")
    p.add_argument("--offset", type=int, default=0, help="skip this many pairs of the permutation")
    p.add_argument("--unanswerable", type=int, default=DEFAULT_UNANSWERABLE,
                   help="unanswerable-question pairs this stage, on top of --examples (stage N "
                   "takes the N-th slice of their permutation; 0: sliced with the others)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-5)
    p.add_argument("--warmup", type=float, default=0.06, help="share of steps for linear warm-up")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--distill-weight", type=float, default=0.0,
                   help="weight of the MSE to the teacher's logit (pairs that have one)")
    p.add_argument("--distill-kinds", default="",
                   help="comma-separated pair kinds the teacher labels and the MSE applies to "
                        "(e.g. positive,other_paragraph,other_article: the teacher's sense of "
                        "which paragraph is on topic without its next-sentence bias); default all")
    p.add_argument("--max-length", type=int, default=256, help="tokens per pair (as served)")
    p.add_argument("--seed", type=int, default=23, help="pair order, batches and dropout")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--checkpoint-minutes", type=float, default=15.0)
    p.add_argument("--log-every", type=int, default=20)
    p.add_argument("--max-steps", type=int, default=0, help="stop after N steps, no save (timing)")
    p.add_argument("--stop-at", type=int, default=0, metavar="STEP",
                   help="checkpoint at this step and stop; --resume continues the stage (to "
                        "split a stage over sessions)")
    p.add_argument("--curve-questions", type=int, default=150,
                   help="held-out questions scored at each checkpoint (0: none)")
    p.add_argument("--no-export", action="store_true", help="stop after saving <stage>/final")
    # evaluation / export
    p.add_argument("--eval", action="store_true", help="held-out metrics of --model and stop")
    p.add_argument("--export", action="store_true", help="export --model (torch) to --out and stop")
    p.add_argument("--model", type=Path, default=None, help="for --eval/--export")
    p.add_argument("--eval-out", type=Path, default=None, help="also write the --eval report")
    args = p.parse_args(argv)
    args.output_dir = args.output_dir or args.work_dir / f"stage{args.stage}"
    args.data = args.data or args.work_dir / "data" / "pairs.jsonl"
    args.heldout = args.data.parent / "heldout.jsonl"
    args.teacher = args.data.parent / "teacher.jsonl"
    unknown = {k.strip() for k in args.distill_kinds.split(",") if k.strip()} - set(KINDS)
    if unknown:
        p.error(f"--distill-kinds: unknown {', '.join(sorted(unknown))} (kinds: {', '.join(KINDS)})")
    return args


# ----------------------------------------------------------------------------- data


def stage_rows(pairs: list[Pair], seed: int, offset: int, examples: int,
               unanswerable: int = 0, stage: int = 1) -> list[int]:
    """Row numbers this stage trains on: pairs [offset, offset + examples) of one seeded
    permutation of the answerable questions' pairs, plus ``unanswerable`` pairs of unanswerable
    questions, stage N taking the N-th slice of their own seeded permutation (wrapping round).
    With ``unanswerable=0`` they are in the first permutation like every other pair."""
    una = [i for i, p in enumerate(pairs) if p.kind == "unanswerable"] if unanswerable else []
    rest = [i for i, p in enumerate(pairs) if not (unanswerable and p.kind == "unanswerable")]
    random.Random(seed).shuffle(rest)
    rows = rest[offset: offset + examples] if examples else rest[offset:]
    if una:
        random.Random(seed + 1).shuffle(una)
        start = (stage - 1) * unanswerable
        rows += [una[(start + k) % len(una)] for k in range(min(unanswerable, len(una)))]
    return rows


def plan_batches(pairs: list[Pair], rows: list[int], batch_size: int, seed: int) -> list[list[int]]:
    """Length-bucketed batches (shuffled chunks of 50 batches sorted by length, then the batches
    shuffled): little padding, still random; a pure function of its arguments (resume)."""
    rng = random.Random(seed)
    order = list(rows)
    rng.shuffle(order)
    chunk = batch_size * 50
    batches: list[list[int]] = []
    for i in range(0, len(order), chunk):
        part = sorted(order[i:i + chunk], key=lambda j: len(pairs[j].q) + len(pairs[j].t))
        batches += [part[k:k + batch_size] for k in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def prepare(args: argparse.Namespace) -> None:
    t0 = time.time()
    pairs, counts = training_pairs(
        args.squad_dir, args.data_seed, same_paragraph=args.same_paragraph,
        other_paragraph=args.other_paragraph, unanswerable=args.unanswerable_sentences,
        other_article_share=args.other_article_share, bare_share=args.bare_share)
    sha = write_pairs(args.data, pairs)
    held, held_counts = heldout_pairs(heldout_articles(args.squad_dir))
    held_sha = write_pairs(args.heldout, held)
    meta = {"counts": dict(sorted(counts.items())), "sha256": sha,
            "heldout": {"counts": dict(sorted(held_counts.items())), "sha256": held_sha,
                        "articles": sorted({p.title for p in held})},
            "seconds": round(time.time() - t0, 1), "data_seed": args.data_seed,
            "context_sentences": CONTEXT_SENTENCES,
            "settings": {k: getattr(args, k) for k in (
                "same_paragraph", "other_paragraph", "unanswerable_sentences",
                "other_article_share", "bare_share")}}
    args.data.with_suffix(".meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    log.info("prepared %d pairs (%d held out) in %.0fs: %s", len(pairs), len(held),
             time.time() - t0, json.dumps(meta["counts"]))
    if args.teacher_pairs:
        label_teacher(args, pairs, sha)


def label_teacher(args: argparse.Namespace, pairs: list[Pair], data_sha: str) -> dict[int, float]:
    """The packaged 12-layer teacher's logit for the first ``--teacher-pairs`` pairs of the
    stage being trained (``--stage``, ``--offset``, ``--seed``), added to ``teacher.jsonl`` next
    to the pairs (row -> logit); rows already labelled are kept, not scored again. Returns
    every label the file now holds."""
    from citeqa.service.rerank import OnnxCrossEncoder

    known = read_teacher(args.teacher, data_sha)
    rows = [i for i in stage_rows(pairs, args.seed, args.offset, args.examples, args.unanswerable,
                                  args.stage)[: args.teacher_pairs]
            if i not in known and distilled_kind(args, pairs[i])]
    if not rows:
        return known
    teacher = OnnxCrossEncoder(threads=args.threads, batch_size=1)
    teacher.warm_up()
    t0 = time.time()
    by_q: dict[str, list[int]] = {}
    for i in rows:
        by_q.setdefault(pairs[i].q, []).append(i)
    tmp = args.teacher.with_suffix(".tmp")
    with tmp.open("w") as fh:
        fh.write(json.dumps({"data_sha256": data_sha, "seed": args.seed}) + "\n")
        for i, z in sorted(known.items()):
            fh.write(json.dumps({"i": i, "z": z}) + "\n")
        for n, (q, idx) in enumerate(by_q.items(), 1):
            for i, z in zip(idx, teacher.score(q, [pairs[i].t for i in idx])):
                known[i] = round(float(z), 4)
                fh.write(json.dumps({"i": i, "z": known[i]}) + "\n")
            if n % 2000 == 0:
                log.info("teacher: %d/%d questions (%.0fs)", n, len(by_q), time.time() - t0)
    tmp.replace(args.teacher)
    log.info("teacher logits for %d pairs in %.0fs", len(rows), time.time() - t0)
    return known


def distilled_kind(args: argparse.Namespace, pair: Pair) -> bool:
    """Whether the distillation term covers this pair (``--distill-kinds``; empty: every kind)."""
    kinds = {k.strip() for k in args.distill_kinds.split(",") if k.strip()}
    return not kinds or pair.kind in kinds


def read_teacher(path: Path, data_sha: str) -> dict[int, float]:
    if not path.is_file():
        return {}
    with path.open() as fh:
        head = json.loads(fh.readline())
        if head["data_sha256"] != data_sha:
            raise SystemExit(f"{path} was labelled for other pairs: rerun --prepare-only")
        return {(d := json.loads(line))["i"]: d["z"] for line in fh if line.strip()}


# ----------------------------------------------------------------------------- model


def onnx_state_dict(model_dir: Path):
    """fp32 weights of an INT8 ONNX cross-encoder, keyed like ``BertForSequenceClassification``.

    ``distill_reranker.teacher_state_dict`` walks the graph; our own exports
    (``citeqa.index.onnx_export``) name their weights ``inner.bert...`` after the export
    wrapper, so a copy with that prefix stripped is walked instead."""
    import onnx

    from distill_reranker import teacher_state_dict

    model = onnx.load(str(Path(model_dir) / "model.onnx"))
    renamed = {}
    for init in model.graph.initializer:
        if init.name.startswith("inner."):
            renamed[init.name] = init.name[len("inner."):]
            init.name = renamed[init.name]
    if not renamed:
        return teacher_state_dict(Path(model_dir))
    for node in model.graph.node:
        for k, name in enumerate(node.input):
            if name in renamed:
                node.input[k] = renamed[name]
    with tempfile.TemporaryDirectory() as tmp:
        onnx.save(model, str(Path(tmp) / "model.onnx"))
        return teacher_state_dict(Path(tmp))


def load_model(path: Path | None):
    """A torch ``BertForSequenceClassification``: from a torch folder (``config.json``) or
    dequantized from an ONNX reranker folder (default: models/reranker)."""
    from transformers import BertForSequenceClassification

    from distill_reranker import bert_config

    path = Path(path or BASE_DIR)
    if (path / "config.json").is_file():
        return BertForSequenceClassification.from_pretrained(path)
    state = onnx_state_dict(path)
    layers = 1 + max(int(k.split(".encoder.layer.")[1].split(".")[0])
                     for k in state if ".encoder.layer." in k)
    model = BertForSequenceClassification(bert_config(layers))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if not m.endswith("position_ids")]
    if missing or unexpected:
        raise RuntimeError(f"weights do not fit: missing {missing}, unexpected {unexpected}")
    return model


def encode(pairs: list[Pair], tokenizer, max_length: int):
    from distill_reranker import _encode

    return _encode([{"q": p.q, "t": p.t, "y": p.y} for p in pairs], tokenizer, max_length)


def torch_logits(model, tokenizer, pairs: list[Pair], max_length: int, batch: int = 64,
                 bf16: bool = False) -> np.ndarray:
    """Logits of ``pairs`` (in order), scored in length-sorted batches (fp32, or bf16
    autocast: about twice as fast on one thread, for the checkpoints' quick look)."""
    import torch

    was_training = model.training
    model.eval()
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i].q) + len(pairs[i].t))
    out = np.zeros(len(pairs), dtype=np.float32)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for k in range(0, len(order), batch):
            idx = order[k:k + batch]
            ids, mask, types, _ = encode([pairs[i] for i in idx], tokenizer, max_length)
            z = model(input_ids=ids, attention_mask=mask, token_type_ids=types).logits.reshape(-1)
            out[idx] = z.float().numpy()
    model.train(was_training)
    return out


def onnx_logits(model_dir: Path, pairs: list[Pair], threads: int = 1) -> np.ndarray:
    """Logits through the service's own ``OnnxCrossEncoder`` (tokenizer, max_length, INT8)."""
    from citeqa.service.rerank import OnnxCrossEncoder

    ce = OnnxCrossEncoder(Path(model_dir), threads=threads)
    ce.warm_up()
    by_q: dict[tuple[str, str], list[int]] = {}
    for i, p in enumerate(pairs):
        by_q.setdefault((p.qid, p.q), []).append(i)
    out = np.zeros(len(pairs), dtype=np.float32)
    for (_, q), idx in by_q.items():
        out[idx] = ce.score(q, [pairs[i].t for i in idx])
    ce.close()
    return out


def curve_subset(held: list[Pair], n_questions: int) -> list[Pair]:
    qids = sorted({p.qid for p in held})
    random.Random(0).shuffle(qids)
    keep = set(qids[:n_questions])
    return [p for p in held if p.qid in keep]


# ----------------------------------------------------------------------------- export


def export(model_dir: Path, out: Path, max_length: int, extra: dict | None = None) -> Path:
    """INT8 ONNX as distill_reranker.py exports the student (the shared export recipe; MatMul
    and the embedding Gather quantised per channel), with the student's tokenizer and a
    ``reranker_config.json``: a folder for ``CITEQA_RERANKER=distilled CITEQA_RERANKER_PATH=``."""
    from transformers import BertForSequenceClassification

    from citeqa.index.onnx_export import export_onnx, quantize_int8

    model = BertForSequenceClassification.from_pretrained(model_dir).eval()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "model-fp32.onnx"
        export_onnx(model, lambda o: o.logits, ["logits"], fp32, quiet=True)
        quantize_int8(fp32, out / "model.onnx", op_types=["MatMul", "Gather"])
    shutil.copy(BASE_DIR / "tokenizer.json", out / "tokenizer.json")
    (out / "reranker_config.json").write_text(json.dumps({
        "max_length": max_length, "has_token_type_ids": True,
        "task": "answer-sentence selection: does the last sentence answer the question",
        "base": "models/reranker (6-layer student of cross-encoder/ms-marco-MiniLM-L-12-v2)",
        "layers": model.config.num_hidden_layers, **(extra or {}),
    }, indent=2) + "\n")
    log.info("exported %s (%.1f MB)", out / "model.onnx", (out / "model.onnx").stat().st_size / 1e6)
    return out / "model.onnx"


# ----------------------------------------------------------------------------- evaluation


def load_heldout(args: argparse.Namespace) -> list[Pair]:
    if args.heldout.is_file():
        return read_pairs(args.heldout)
    return heldout_pairs(heldout_articles(args.squad_dir))[0]


def run_eval(args: argparse.Namespace) -> int:
    import torch

    from distill_reranker import load_tokenizer

    torch.set_num_threads(args.threads)
    model_dir = Path(args.model or BASE_DIR)
    held = load_heldout(args)
    t0 = time.time()
    if (model_dir / "model.onnx").is_file():
        logits, how = onnx_logits(model_dir, held, args.threads), "onnx (service path)"
    else:
        model = load_model(model_dir)
        logits = torch_logits(model, load_tokenizer(BASE_DIR, args.max_length), held, args.max_length)
        how = "torch fp32"
    rep = {**heldout_metrics(held, logits), "model": str(model_dir), "scored_with": how,
           "seconds": round(time.time() - t0, 1)}
    print(json.dumps(rep, indent=2))
    if args.eval_out:
        args.eval_out.parent.mkdir(parents=True, exist_ok=True)
        args.eval_out.write_text(json.dumps(rep, indent=2) + "\n")
    return 0


def export_and_eval(args: argparse.Namespace, model_dir: Path, extra: dict) -> dict:
    export(model_dir, args.out, args.max_length, extra)
    held = load_heldout(args)
    t0 = time.time()
    rep = {**heldout_metrics(held, onnx_logits(args.out, held, args.threads)),
           "model": str(args.out / "model.onnx"), "scored_with": "onnx (service path)",
           "seconds": round(time.time() - t0, 1)}
    (args.out / "eval_dev.json").write_text(json.dumps(rep, indent=2) + "\n")
    log.info("held-out (INT8 ONNX): %s", json.dumps(rep))
    return rep


# ----------------------------------------------------------------------------- training


def train(args: argparse.Namespace) -> int:
    import torch
    from transformers import get_linear_schedule_with_warmup

    from distill_reranker import load_tokenizer

    pin_threads(args.threads)
    out = args.output_dir
    out.mkdir(parents=True, exist_ok=True)
    if not args.data.exists() or args.rebuild_data:
        if args.resume:
            raise SystemExit(f"--resume needs the prepared data {args.data}")
        prepare(args)
    data_sha = file_sha256(args.data)
    pairs = read_pairs(args.data)
    teacher: dict[int, float] = {}
    if args.distill_weight:  # labelled first when asked (a resumed stage was labelled already)
        teacher = (label_teacher(args, pairs, data_sha) if args.teacher_pairs and not args.resume
                   else read_teacher(args.teacher, data_sha))
        teacher = {i: z for i, z in teacher.items() if distilled_kind(args, pairs[i])}
    rows = stage_rows(pairs, args.seed, args.offset, args.examples, args.unanswerable, args.stage)
    batches = plan_batches(pairs, rows, args.batch_size, args.seed * 1000 + args.stage)
    steps_per_stage = len(batches)
    total_steps = min(steps_per_stage, args.max_steps) if args.max_steps else steps_per_stage

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    base = str(args.base_model or BASE_DIR)
    model = load_model(args.base_model)
    tok = load_tokenizer(BASE_DIR, args.max_length)
    no_decay = ("bias", "LayerNorm.weight")
    groups = [
        {"params": [p for n, p in model.named_parameters() if not n.endswith(no_decay)], "weight_decay": args.weight_decay},
        {"params": [p for n, p in model.named_parameters() if n.endswith(no_decay)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=args.lr)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(args.warmup * steps_per_stage), steps_per_stage)

    fixed = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
             if k in ("seed", "offset", "examples", "batch_size", "lr", "warmup", "max_length",
                      "base_model", "weight_decay", "distill_weight", "unanswerable",
                      "stage", "bf16")}
    if args.distill_kinds:  # only when set, so that earlier stages' checkpoints still resume
        fixed["distill_kinds"] = args.distill_kinds
    ckpt = StageCheckpoint(out / "checkpoint.pt", fixed, data_sha)
    step, elapsed_before = 0, 0.0
    if args.resume:
        step, elapsed_before = ckpt.resume(model, optimizer, scheduler)
        log.info("resumed at step %d/%d", step, steps_per_stage)
    elif not args.max_steps:
        ckpt.refuse_to_overwrite()

    loss_path, curve_path = out / "loss.jsonl", out / "curve.jsonl"
    if step == 0 and not args.max_steps:
        loss_path.unlink(missing_ok=True)
        curve_path.unlink(missing_ok=True)
    curve = [] if (args.max_steps or not args.curve_questions) else curve_subset(
        load_heldout(args), args.curve_questions)
    kinds: dict[str, int] = {}
    for i in rows:
        kinds[pairs[i].kind] = kinds.get(pairs[i].kind, 0) + 1
    log.info("stage %d: %d pairs (offset %d, %d answerable-question pairs in the data, data %s), "
             "batch %d, %d steps, base %s, %d thread(s), bf16 %s, %d teacher logits",
             args.stage, len(rows), args.offset, sum(p.kind != "unanswerable" for p in pairs),
             data_sha[:12], args.batch_size, steps_per_stage, base, args.threads, args.bf16,
             sum(1 for i in rows if i in teacher))
    if not args.max_steps:
        (out / "stage.json").write_text(json.dumps(
            {"fixed": fixed, "data": str(args.data), "data_sha256": data_sha, "pairs": len(rows),
             "steps": steps_per_stage, "kinds": kinds}, indent=2) + "\n")

    start_time = time.time() - elapsed_before

    def checkpoint(tag: str) -> None:
        elapsed = time.time() - start_time
        ckpt.save(model, optimizer, scheduler, step, elapsed,
                  {"args": {k: str(v) for k, v in vars(args).items()}})
        row = {"tag": tag, "step": step, "elapsed_s": round(elapsed, 1)}
        if curve:
            t_eval = time.time()
            row["heldout_subset"] = heldout_metrics(curve, torch_logits(
                model, tok, curve, args.max_length, bf16=args.bf16))
            row["eval_s"] = round(time.time() - t_eval, 1)
        with curve_path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        log.info("checkpoint %s %s", tag, json.dumps(row))

    model.train()
    steps_log = StepLog(total_steps, start_time, args.log_every, log,
                        None if args.max_steps else loss_path)
    clock = CheckpointClock(total_steps, args.checkpoint_minutes, args.stop_at,
                            enabled=not args.max_steps, log=log)
    while step < total_steps:
        batch = [pairs[i] for i in batches[step]]
        ids, mask, types, y = encode(batch, tok, args.max_length)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            logits = model(input_ids=ids, attention_mask=mask, token_type_ids=types).logits.reshape(-1)
        logits = logits.float()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
        if teacher:
            have = [k for k, i in enumerate(batches[step]) if i in teacher]
            if have:
                z = torch.tensor([teacher[batches[step][k]] for k in have])
                loss = loss + args.distill_weight * torch.nn.functional.mse_loss(logits[have], z)
        optimizer_step(model, optimizer, scheduler, loss)
        step += 1
        steps_log.add(step, loss.item(), scheduler.get_last_lr()[0])
        if clock.after_step(step, checkpoint):
            return 0

    if args.max_steps:
        s = (time.time() - start_time) / max(1, step)
        log.info("stopped after --max-steps %d (nothing saved): %.2f s/step overall; the full "
                 "stage (%d steps) would take about %.0f min", step, s, steps_per_stage,
                 s * steps_per_stage / 60)
        return 0
    checkpoint("final")
    final = out / "final"
    model.save_pretrained(final)
    train_seconds = round(time.time() - start_time, 1)
    summary = {"stage": args.stage, "steps": step, "pairs": len(rows), "kinds": kinds,
               "batch_size": args.batch_size, "train_seconds": train_seconds,
               "data_sha256": data_sha, "fixed": fixed, "torch": torch.__version__,
               "threads": args.threads, "teacher_logits": sum(1 for i in rows if i in teacher)}
    (final / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    log.info("saved %s", final)
    if not args.no_export:
        rep = export_and_eval(args, final, {"stage": args.stage, "steps": step, "pairs": len(rows),
                                            "train_seconds": train_seconds})
        shutil.copy(final / "train_summary.json", args.out / "train_summary.json")
        summary["heldout_onnx"] = rep
        (final / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                        handlers=[logging.StreamHandler(sys.stdout)])
    logging.getLogger("bm25s").setLevel(logging.WARNING)
    if args.eval:
        return run_eval(args)
    if args.export:
        if not args.model:
            raise SystemExit("--export needs --model (a torch folder, e.g. <work>/stage1/final)")
        export_and_eval(args, args.model, {"exported_from": str(args.model)})
        return 0
    if args.prepare_only:
        if args.data.is_file() and args.heldout.is_file() and not args.rebuild_data:
            log.info("%s exists (deterministic in --data-seed): kept; --rebuild-data rebuilds it",
                     args.data)
            return 0
        prepare(args)
        return 0
    return train(args)


if __name__ == "__main__":
    raise SystemExit(main())
