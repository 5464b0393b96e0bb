#!/usr/bin/env python
"""Evaluate an ONNX reader dir on the 17 held-out SQuAD v2.0 test articles (gold paragraph).

    python scripts/eval_reader.py --model-dir models/reader --json docs/reader_eval.json

The no-answer threshold is tuned on the 4 dev articles (best F1) and applied to test; test's own
best threshold (an oracle, not a fair number) is reported as well, clearly labelled. Scores use
the official SQuAD v2.0 definitions via eval.metrics. ``--latency`` also times
``OnnxReader.read`` on 5 passages of ~150 words.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

from citeqa.eval.metrics import percentile  # noqa: E402
from citeqa.service.reader.onnx_reader import OnnxReader  # noqa: E402
from training.scoring import score_reader, squad_v2_report  # noqa: E402
from training.squad_data import QAExample, load_split, split_examples  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", type=Path, default=REPO / "models" / "reader")
    p.add_argument("--squad-dir", type=Path, default=REPO.parent / "shared" / "benchmarks" / "squad")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--limit", type=int, default=0, help="first N questions of each split (quick runs)")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--latency", action="store_true", help="time read() on 5 x ~150-word passages")
    p.add_argument("--latency-runs", type=int, default=50)
    return p.parse_args(argv)


def latency(reader: OnnxReader, passages: list[str], runs: int) -> dict[str, float]:
    question = "What was the main reason given for the change?"
    reader.read(question, passages)  # warm caches
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        reader.read(question, passages, top_n=3)
        times.append((time.perf_counter() - t0) * 1000)
    return {"passages": len(passages), "words_each": round(sum(len(p.split()) for p in passages) / len(passages)),
            "runs": runs, "p50_ms": round(percentile(times, 50), 1), "p95_ms": round(percentile(times, 95), 1)}


def latency_passages(test: list[QAExample], n: int = 5, words: int = 150) -> list[str]:
    """Distinct test paragraphs cut to ~150 words (realistic passage length for the service)."""
    seen: list[str] = []
    for ex in test:
        if ex.context not in seen and len(ex.context.split()) >= words:
            seen.append(ex.context)
        if len(seen) == n:
            break
    return [" ".join(p.split()[:words]) for p in seen]


ROW_KEYS = ["total", "threshold", "exact", "f1", "HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1"]


def markdown(rows: dict[str, dict[str, float]]) -> str:
    head = "| split / threshold | questions | threshold | EM | F1 | HasAns EM | HasAns F1 | NoAns EM | NoAns F1 |"
    lines = [head, "|" + "---|" * 9]
    for name, r in rows.items():
        cells = [f"{int(r['total'])}", f"{r['threshold']:.3f}" if r["threshold"] != float("inf") else "inf"] + [f"{r[k]:.2f}" for k in ROW_KEYS[2:]]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _finite(obj):
    """Strict JSON has no Infinity: the never-abstain row's threshold becomes null."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, float) and obj in (float("inf"), float("-inf")):
        return None
    return obj


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    split = load_split(args.squad_dir)
    dev, test = split_examples(args.squad_dir, split, "dev"), split_examples(args.squad_dir, split, "test")
    all_test = test  # latency passages come from the whole split, whatever --limit says
    if args.limit:
        dev, test = dev[: args.limit], test[: args.limit]
    reader = OnnxReader(args.model_dir, threads=args.threads)
    reader.warm_up()

    t0 = time.time()
    dev_items = score_reader(reader, dev)
    test_items = score_reader(reader, test)
    seconds = time.time() - t0
    dev_rep = squad_v2_report(dev_items, None)  # own best-F1 threshold = the tuned one
    tuned = dev_rep["threshold"]
    rows = {
        "dev articles (tuning), own best-F1 threshold": dev_rep,
        "**test, dev-tuned threshold** (headline)": squad_v2_report(test_items, tuned),
        "test, shipped reader_config threshold": squad_v2_report(test_items, reader.threshold),
        "test, test's own best-F1 threshold (oracle)": squad_v2_report(test_items, None),
        # span quality alone: always answer with the best span (HasAns columns are the useful ones)
        "test, never abstain": squad_v2_report(test_items, float("inf")),
    }
    oracle = rows["test, test's own best-F1 threshold (oracle)"]
    print(markdown(rows))
    print(f"\ntest best EM (oracle threshold {oracle['best_exact_thresh']:.3f}): {oracle['best_exact']:.2f}; "
          f"abstain-on-everything baseline F1: {100 * oracle['NoAns_total'] / oracle['total']:.1f}")
    print(f"{len(dev) + len(test)} questions read in {seconds:.0f}s on {args.threads} thread(s)")
    out: dict = {"model_dir": str(args.model_dir), "dev_tuned_threshold": tuned, "rows": rows,
                 "seconds": round(seconds, 1), "threads": args.threads}
    if args.latency:
        out["latency"] = latency(reader, latency_passages(all_test), args.latency_runs)
        print("latency:", json.dumps(out["latency"]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(_finite(out), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
