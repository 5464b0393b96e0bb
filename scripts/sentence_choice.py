#!/usr/bin/env python
"""Which sentence does the cross-encoder rank first? Strict and lenient top-1 (issue 12).

    python scripts/sentence_choice.py                    # today's defaults (12-layer teacher)
    python scripts/sentence_choice.py --reranker distilled --reranker-path models/reranker_answer

Runs on every answerable question of our set and of the 4 SQuAD v2.0 tuning articles of
split.json (never the test articles). The service retrieves, reranks and extracts as configured;
CITEQA_* settings apply and the flags override them. Each question is counted three ways:

- *strict*: the first-ranked sentence holds the gold. On our set that means it overlaps a gold
  quote; on SQuAD, it overlaps an answer span.
- *lenient*: the top answer's cited span holds it. On our set this is what ``evidence_hit@1``
  counts; that span is the first sentence joined with its well-scored neighbours.
- *sentences*: the mean number of sentences in that span.

``evidence_hit@1`` alone does not show whether the model found the sentence that answers or a
neighbour whose span happens to include it: docs/evaluation.md, "Issue 12, session 9".
"""

from __future__ import annotations

import _env  # noqa: F401  (thread pools pinned before numpy and onnxruntime start)

import argparse
import json
import sys
from pathlib import Path

from _env import REPO
from citeqa.eval.app import DEFAULT_QUESTIONS, EvalOptions, in_process_qa, prepare_datasets
from citeqa.eval.dataset import EvalQuestion, Span
from citeqa.eval.metrics import spans_overlap
from citeqa.service.pipeline import QA
from training.squad_data import load_split


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reranker", default=None, help="CITEQA_RERANKER: onnx, distilled, a path")
    p.add_argument("--reranker-path", type=Path, default=None)
    p.add_argument("--squad-dir", type=Path,
                   default=REPO.parent / "shared" / "benchmarks" / "squad",
                   help="dev-v2.0.json and split.json (whose dev articles are the tuning set)")
    p.add_argument("--work-dir", type=Path, default=REPO / ".eval",
                   help="citeqa eval's work dir: the two sets' cached indexes are shared with it")
    p.add_argument("--limit", type=int, default=None, help="first N questions of each set")
    p.add_argument("--json", type=Path, default=None)
    return p.parse_args(argv)


def _hits(spans: list[Span], file: str, start: int, end: int) -> bool:
    return any(s.file == file and spans_overlap(start, end, s.start, s.end) for s in spans)


def measure(qa: QA, questions: list[EvalQuestion], squad: bool) -> dict[str, float | int]:
    """Strict and lenient top-1 over the answerable questions (an abstention counts as a miss:
    the threshold is off here, so only a question without any answer abstains)."""
    index = qa.index
    strict = lenient = sentences = n = 0
    for q in questions:
        if not q.answerable:
            continue
        gold = q.answer_spans if squad else q.evidence
        n += 1
        ranking = qa.reranker.run(q.question, qa.retriever.run(q.question, index), index)
        if ranking.sentences:
            first = ranking.sentences[0].unit
            strict += _hits(gold, first.file, first.start, first.end)
        answers = qa.extractor.run(q.question, ranking, index)
        if answers:
            a = answers[0]
            lenient += _hits(gold, a.file, a.start, a.end)
            units = index.sentences.units
            sentences += sum(1 for r in index.sentences_of(a.file, a.paragraph)
                             if units[r].start < a.end and a.start < units[r].end)
    return {"questions": n, "strict": round(strict / n, 4), "lenient": round(lenient / n, 4),
            "sentences_per_answer": round(sentences / max(1, n), 2)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    overrides: dict = {}
    if args.reranker:
        overrides["reranker"] = args.reranker
    if args.reranker_path:
        overrides["reranker_path"] = args.reranker_path
    tuning = EvalOptions(squad=args.squad_dir / "dev-v2.0.json", limit=args.limit,
                         titles=load_split(args.squad_dir).dev, work_dir=args.work_dir)
    ours = EvalOptions(questions=DEFAULT_QUESTIONS, limit=args.limit, work_dir=args.work_dir)
    sets: dict[str, dict] = {}
    used: dict[str, str] = {}
    for name, opts in (("ours", ours), ("tuning articles", tuning)):
        (ds,) = prepare_datasets(opts)
        qa, _ = in_process_qa(ds, overrides)
        with qa:
            used = {"reranker": qa.settings.reranker,
                    "reranker_path": str(qa.settings.reranker_path or ""),
                    "embedding_model": str(qa.settings.embedding_model)}
            sets[name] = measure(qa, ds.questions, squad=opts.squad is not None)
        print(f"{name}: {json.dumps(sets[name])}", flush=True)
    report = {**used, "sets": sets}
    print("\n| set | answerable | strict top-1 | lenient top-1 | sentences per answer |")
    print("|---|---|---|---|---|")
    for name, m in report["sets"].items():
        print(f"| {name} | {m['questions']} | {m['strict']:.3f} | {m['lenient']:.3f} | "
              f"{m['sentences_per_answer']:.2f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
