"""Pure metric functions: EM/F1, span overlap, ranking and latency stats.

Answers are compared after ``citeqa.service.normalize.normalize_answer`` (the official SQuAD
normalisation, extended to Unicode punctuation), the same one the extractor deduplicates with.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence

from citeqa.service.normalize import normalize_answer

def _tokens(text: str) -> list[str]:
    return normalize_answer(text).split()


def exact_match(prediction: str, golds: Sequence[str]) -> float:
    """1.0 if the normalised prediction equals any normalised gold answer.

    With no gold answers (an unanswerable question) the only correct prediction is the empty one.
    """
    if not golds:
        return float(normalize_answer(prediction) == "")
    return float(max(normalize_answer(prediction) == normalize_answer(g) for g in golds))


def _f1_one(prediction: str, gold: str) -> float:
    pred, ref = _tokens(prediction), _tokens(gold)
    if not pred or not ref:
        # Official SQuAD v2 rule: both empty counts as a match, one empty as a miss.
        return float(pred == ref)
    common = Counter(pred) & Counter(ref)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def f1_score(prediction: str, golds: Sequence[str]) -> float:
    """Best token-level F1 of the prediction against any gold answer (SQuAD definition)."""
    if not golds:
        return float(normalize_answer(prediction) == "")
    return max(_f1_one(prediction, g) for g in golds)


def contains_gold(prediction: str, golds: Sequence[str]) -> float:
    """1.0 if any non-empty normalised gold answer occurs inside the normalised prediction."""
    norm = f" {normalize_answer(prediction)} "
    return float(any(normalize_answer(g) and f" {normalize_answer(g)} " in norm for g in golds))


def spans_overlap(a_start: int, a_end: int, b_start: int, b_end: int) -> bool:
    """Half-open character spans [start, end) share at least one character."""
    return a_start < b_end and b_start < a_end


def first_hit_rank(hits: Sequence[bool]) -> int | None:
    """1-based rank of the first relevant item, or None."""
    for i, hit in enumerate(hits, start=1):
        if hit:
            return i
    return None


def recall_at(rank: int | None, k: int) -> float:
    return float(rank is not None and rank <= k)


def reciprocal_rank(rank: int | None, k: int = 10) -> float:
    return 1.0 / rank if rank is not None and rank <= k else 0.0


def percentile(values: Iterable[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    data = sorted(values)
    if not data:
        return math.nan
    idx = max(0, math.ceil(q / 100 * len(data)) - 1)
    return data[min(idx, len(data) - 1)]


def mean(values: Iterable[float]) -> float:
    data = list(values)
    return sum(data) / len(data) if data else math.nan
