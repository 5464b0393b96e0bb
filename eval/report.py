"""Aggregating per-question scores into the report, printing it, comparing two reports and
sweeping the abstention threshold."""

from __future__ import annotations

import json
import math
from typing import Any

from citeqa.eval.metrics import mean, percentile
from citeqa.eval.runner import CitationChecker, QuestionResult, score_question

METRIC_KEYS = (
    "recall@1", "recall@3", "recall@5", "recall@10", "mrr@10", "evidence_hit@1",
    "exact_match", "f1", "answer_contains_gold", "abstain_acc", "false_abstain",
    "citation_valid", "latency_p50_ms", "latency_p95_ms",
)
RATE_KEYS = METRIC_KEYS[:-2]
EXTRA_KEYS = ("top_in_gold_paragraph",)  # SQuAD only


def aggregate(rows: list[dict[str, float | None]]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for key in RATE_KEYS + EXTRA_KEYS:
        values = [r[key] for r in rows if r.get(key) is not None]
        if values or key in RATE_KEYS:
            out[key] = round(mean(values), 4) if values else None
    latencies = [r["latency_ms"] for r in rows if r.get("latency_ms") is not None]
    out["latency_p50_ms"] = round(percentile(latencies, 50), 1) if latencies else None
    out["latency_p95_ms"] = round(percentile(latencies, 95), 1) if latencies else None
    out["latency_max_ms"] = round(max(latencies), 1) if latencies else None
    return out


def build_report(dataset: str, results: list[QuestionResult], checker: CitationChecker,
                 threshold: float | None, settings: dict[str, Any]) -> dict[str, Any]:
    rows = [score_question(r, checker, threshold) for r in results]
    by_type: dict[str, list[dict[str, float | None]]] = {}
    for r, row in zip(results, rows):
        by_type.setdefault(r.question.type, []).append(row)
    return {
        "dataset": dataset,
        "n": len(results),
        "n_answerable": sum(r.question.answerable for r in results),
        "n_unanswerable": sum(not r.question.answerable for r in results),
        "errors": sum(r.error is not None for r in results),
        "settings": settings,
        "metrics": aggregate(rows),
        "by_type": {t: {"n": len(v), **aggregate(v)} for t, v in sorted(by_type.items())},
    }


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.3f}" if abs(value) <= 1.0 else f"{value:.0f}"


def markdown_table(columns: dict[str, dict[str, float | None]], keys=METRIC_KEYS) -> str:
    names = list(columns)
    keys = tuple(keys) + tuple(k for k in EXTRA_KEYS if any(k in c for c in columns.values()))
    lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for key in keys:
        lines.append(f"| {key} | " + " | ".join(_fmt(columns[n].get(key)) for n in names) + " |")
    return "\n".join(lines)


def render(report: dict[str, Any]) -> str:
    head = (f"## {report['dataset']}: {report['n']} questions "
            f"({report['n_answerable']} answerable, {report['n_unanswerable']} unanswerable)"
            + (f", {report['errors']} errors" if report.get("errors") else ""))
    parts = [head, "", markdown_table({"all": report["metrics"]})]
    if len(report["by_type"]) > 1:
        cols = {f"{t} (n={v['n']})": v for t, v in report["by_type"].items()}
        parts += ["", "By question type:", "", markdown_table(cols)]
    return "\n".join(parts)


def render_comparison(new: dict[str, Any], old: dict[str, Any]) -> str:
    lines = [f"## {new['dataset']}: change against the previous report",
             "", "| metric | old | new | delta |", "|---|---|---|---|"]
    for key in METRIC_KEYS + tuple(k for k in EXTRA_KEYS if k in new["metrics"]):
        a, b = old["metrics"].get(key), new["metrics"].get(key)
        delta = "–" if a is None or b is None else f"{b - a:+.3f}"
        lines.append(f"| {key} | {_fmt(a)} | {_fmt(b)} | {delta} |")
    return "\n".join(lines)


def sweep(results: list[QuestionResult], thresholds: list[float] | None = None,
          max_false_abstain: float = 1.0) -> tuple[list[dict[str, float]], dict[str, float]]:
    """Abstention accuracy vs false abstention for each threshold on the top answer's score;
    the best threshold maximises their balanced accuracy among those whose false-abstention
    rate is at most ``max_false_abstain``."""
    scores = [(r.top_score, r.question.answerable) for r in results]
    if thresholds is None:
        thresholds = sorted({0.0, 1.0} | {round(x / 100, 2) for x in range(1, 100)}
                            | {round(10 ** (-e / 4), 5) for e in range(4, 17)})
    n_ans = sum(a for _, a in scores) or 1
    n_un = sum(not a for _, a in scores) or 1
    table = []
    for t in thresholds:
        abstain = [s is None or s < t for s, _ in scores]
        acc = sum(ab for ab, (_, a) in zip(abstain, scores) if not a) / n_un
        false = sum(ab for ab, (_, a) in zip(abstain, scores) if a) / n_ans
        table.append({"threshold": t, "abstain_acc": round(acc, 4),
                      "false_abstain": round(false, 4),
                      "balanced_acc": round((acc + 1 - false) / 2, 4)})
    allowed = [r for r in table if r["false_abstain"] <= max_false_abstain] or table[:1]
    best = max(allowed, key=lambda r: (r["balanced_acc"], -r["false_abstain"]))
    return table, best


def dumps(report: dict[str, Any]) -> str:
    def clean(v: Any) -> Any:
        if isinstance(v, float) and math.isnan(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(report), indent=2, ensure_ascii=False, default=str)
