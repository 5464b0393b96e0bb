"""Official SQuAD v2.0 scoring (EM/F1, HasAns/NoAns, best thresholds) on top of eval.metrics.

The threshold works on ``na_score = null_score - best_span_score`` (logit space): a question is
answered with its best span when ``na_score <= threshold`` and abstained on otherwise. This
mirrors the official script's ``na_prob > thresh`` rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from citeqa.eval.metrics import exact_match, f1_score


@dataclass(frozen=True)
class Scored:
    golds: list[str]  # empty = unanswerable
    pred: str  # best non-null span text ("" if none)
    na_score: float


def _raw(items: Sequence[Scored]) -> tuple[list[float], list[float]]:
    return [exact_match(s.pred, s.golds) for s in items], [f1_score(s.pred, s.golds) for s in items]


def _at_threshold(items: Sequence[Scored], raw: Sequence[float], thresh: float) -> list[float]:
    # abstaining scores 1 on unanswerable questions and 0 on answerable ones
    return [
        (0.0 if s.golds else 1.0) if s.na_score > thresh else r for s, r in zip(items, raw)
    ]


def best_threshold(items: Sequence[Scored], raw: Sequence[float]) -> tuple[float, float]:
    """(best score in %, threshold) sweeping the threshold over the observed na_scores, as the
    official ``find_best_thresh`` does; starts from 'abstain on everything'."""
    if not items:
        return 0.0, 0.0
    cur = sum(1 for s in items if not s.golds)
    best, best_t = cur, min(s.na_score for s in items) - 1e-6
    for i in sorted(range(len(items)), key=lambda j: items[j].na_score):
        s = items[i]
        cur += raw[i] if s.golds else (-1 if s.pred else 0)
        if cur > best:
            best, best_t = cur, s.na_score
    return 100.0 * best / len(items), best_t


def squad_v2_report(items: Sequence[Scored], threshold: float | None) -> dict[str, float]:
    """EM/F1 overall, HasAns/NoAns at ``threshold`` (if given), plus best_f1/best_em thresholds."""
    em_raw, f1_raw = _raw(items)
    out: dict[str, float] = {"total": float(len(items))}
    best_f1, f1_t = best_threshold(items, f1_raw)
    best_em, em_t = best_threshold(items, em_raw)
    out.update(best_f1=best_f1, best_f1_thresh=f1_t, best_exact=best_em, best_exact_thresh=em_t)
    if threshold is None:
        threshold = f1_t
    em = _at_threshold(items, em_raw, threshold)
    f1 = _at_threshold(items, f1_raw, threshold)
    out["threshold"] = threshold
    out["exact"], out["f1"] = _pct(em), _pct(f1)
    has = [i for i, s in enumerate(items) if s.golds]
    no = [i for i, s in enumerate(items) if not s.golds]
    out["HasAns_total"], out["NoAns_total"] = float(len(has)), float(len(no))
    out["HasAns_exact"], out["HasAns_f1"] = _pct([em[i] for i in has]), _pct([f1[i] for i in has])
    out["NoAns_exact"], out["NoAns_f1"] = _pct([em[i] for i in no]), _pct([f1[i] for i in no])
    return out


def _pct(values: Sequence[float]) -> float:
    return 100.0 * sum(values) / len(values) if values else 0.0


def score_reader(reader, examples) -> list[Scored]:
    """Read each example's gold paragraph; keep the best span text and its na_score.

    ``reader`` is any SpanReader (ONNX or torch), ``examples`` are squad_data.QAExample.
    """
    items = []
    for ex in examples:
        res = reader.read(ex.question, [ex.context], top_n=1)[0]
        pred = ex.context[res.spans[0].start : res.spans[0].end] if res.spans else ""
        items.append(Scored(ex.gold_texts, pred, res.na_score))
    return items


def evaluate_reader(reader, examples, threshold: float | None = None) -> dict[str, float]:
    """Gold-paragraph SQuAD v2 report; threshold None = the examples' own best-F1 threshold."""
    return squad_v2_report(score_reader(reader, examples), threshold)
