#!/usr/bin/env python
"""Could an answer-sentence model judge the teacher's answer? An abstention experiment (issue 12).

    python scripts/answer_judge.py --judge models/reranker_answer/work/export4 \
        --judge models/reranker_answer/work/export5 --json docs/results/answer-judge.json

The service answers as configured (CITEQA_* settings apply; by default the 12-layer teacher
ranks and its threshold abstains). Then each judge, a cross-encoder folder such as an
answer-sentence export of ``scripts/train_reranker.py``, scores one more pair per question:
the question against the top answer shown as the service shows it (the answer with the sentence
before it). A question is abstained on when the service abstains *or* the judge's probability
is below ``t``. The table gives, for each ``t``, our set, the 4 SQuAD v2.0 tuning articles of
split.json (never the test articles) and both pooled: evidence hit@1, abstention on
unanswerable questions and false abstention on answerable ones, as ``citeqa eval`` counts them.
"""

from __future__ import annotations

import _env  # noqa: F401  (thread pools pinned before numpy and onnxruntime start)

import argparse
import json
import math
import sys
from pathlib import Path

from _env import REPO
from citeqa.eval.app import DEFAULT_QUESTIONS, EvalOptions, in_process_qa, prepare_datasets
from citeqa.eval.metrics import mean
from citeqa.eval.runner import CitationChecker, InProcessTarget, run_questions, score_question
from citeqa.service.rerank import OnnxCrossEncoder
from training.squad_data import load_split

THRESHOLDS = (0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.2, 0.3, 0.5)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--judge", type=Path, action="append", required=True,
                   help="a cross-encoder folder (model.onnx, tokenizer.json); repeatable")
    p.add_argument("--squad-dir", type=Path,
                   default=REPO.parent / "shared" / "benchmarks" / "squad",
                   help="dev-v2.0.json and split.json (whose dev articles are the tuning set)")
    p.add_argument("--work-dir", type=Path, default=REPO / ".eval",
                   help="citeqa eval's work dir: the two sets' cached indexes are shared with it")
    p.add_argument("--limit", type=int, default=None, help="first N questions of each set")
    p.add_argument("--json", type=Path, default=None)
    return p.parse_args(argv)


def judged(rows: list[dict], judge: str, t: float) -> dict[str, float | None]:
    """Evidence hit@1, abstention and false abstention when answers the judge gives a
    probability below ``t`` become abstentions (rows: ``record``'s)."""
    evidence, abstained, false = [], [], []
    for row in rows:
        z = (row.get("judge") or {}).get(judge)
        out = z is not None and 1.0 / (1.0 + math.exp(-z)) < t
        m = row["metrics"]
        if row["answerable"]:
            false.append(float(out or m["false_abstain"] == 1.0))
            evidence.append(0.0 if out else m["evidence_hit@1"])
        else:
            abstained.append(float(out or m["abstain_acc"] == 1.0))
    return {"evidence_hit@1": mean(evidence), "abstain_acc": mean(abstained),
            "false_abstain": mean(false)}


def record(qa, questions, corpus: dict[str, str], threshold: float,
           judges: dict[str, OnnxCrossEncoder]) -> list[dict]:
    """Per question: its ``citeqa eval`` metrics at ``threshold`` and each judge's logit on the
    top answer (before the threshold: the judge only ever removes answers)."""
    checker = CitationChecker(corpus)
    rows = []
    for result in run_questions(InProcessTarget(qa), questions):
        row = {"id": result.question.id, "answerable": result.question.answerable,
               "metrics": score_question(result, checker, threshold)}
        answers = (result.response or {}).get("answers", [])
        if answers and not row["metrics"].get("false_abstain") and not row["metrics"].get("abstain_acc"):
            c = answers[0]["citation"]
            _, view = qa.index.span_with_context(c["file"], c["paragraph"], c["start"], c["end"],
                                                 before=1)
            row["judge"] = {name: float(j.score(result.question.question, [view])[0])
                            for name, j in judges.items()}
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    split = load_split(args.squad_dir)
    judges = {str(path): OnnxCrossEncoder(path, threads=1) for path in args.judge}
    for j in judges.values():
        j.warm_up()
    sets = {"ours": EvalOptions(questions=DEFAULT_QUESTIONS, limit=args.limit,
                                work_dir=args.work_dir),
            "tuning": EvalOptions(squad=args.squad_dir / "dev-v2.0.json", titles=split.dev,
                                  limit=args.limit, work_dir=args.work_dir)}
    rows: dict[str, list[dict]] = {}
    for name, opts in sets.items():
        (ds,) = prepare_datasets(opts)
        qa, threshold = in_process_qa(ds, {})
        with qa:
            rows[name] = record(qa, ds.questions, ds.corpus, threshold, judges)
        print(f"{name}: {len(rows[name])} questions (threshold {threshold})", file=sys.stderr)
    rows["pooled"] = rows["ours"] + rows["tuning"]
    table = {j: {str(t): {s: judged(r, j, t) for s, r in rows.items()} for t in THRESHOLDS}
             for j in judges}
    for j, by_t in table.items():
        print(f"\n{j}\n| t | " + " | ".join(f"{s}: evidence / abstention / false" for s in rows)
              + " |\n|---|" + "---|" * len(rows))
        for t, cells in by_t.items():
            print(f"| {t} | " + " | ".join(
                f"{c['evidence_hit@1']:.3f} / {c['abstain_acc']:.3f} / {c['false_abstain']:.3f}"
                for c in cells.values()) + " |")
    if args.json:
        args.json.write_text(json.dumps({"command": " ".join(sys.argv), "table": table},
                                        indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
