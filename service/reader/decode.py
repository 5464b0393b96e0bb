"""Turn per-window start/end logits into character spans of the original context.

Shared by the ONNX reader and the training-time evaluation so both score spans identically.
"""

from __future__ import annotations

import string
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from citeqa.service.reader.windows import Window


@dataclass(frozen=True)
class Span:
    """Answer candidate: ``context[start:end]`` is the answer (end exclusive)."""

    start: int
    end: int
    score: float  # start_logit + end_logit


@dataclass
class ReaderResult:
    """Reader output for one context. The caller abstains when ``null_score`` beats the best span
    by more than the tuned threshold (see ``should_abstain``)."""

    spans: list[Span] = field(default_factory=list)  # best first
    null_score: float = float("inf")  # [CLS] start+end logit, min over windows (SQuAD2)
    best_span_score: float = float("-inf")

    @property
    def na_score(self) -> float:
        """null_score - best_span_score; bigger means more confidently unanswerable."""
        return self.null_score - self.best_span_score

    def margin(self, threshold: float, span: Span | None = None) -> float:
        """How far ``span`` (default: the best) clears the no-answer bar; > 0 means answer.

        ``span.score - null_score + threshold``: the sign convention of ``null_threshold`` is
        "abstain when null - span > threshold", so a negative threshold demands that the span beat
        the null score by at least ``-threshold`` logits.
        """
        score = (span.score if span is not None else self.best_span_score)
        return score - self.null_score + threshold

    def should_abstain(self, threshold: float) -> bool:
        return not self.spans or self.na_score > threshold


_OPENERS = "([{\u201c\u2018\"'\u00ab"
_CLOSERS = ")]}\u201d\u2019\"'\u00bb"
_MATCH = dict(zip(_CLOSERS, _OPENERS))


def _is_punct(ch: str) -> bool:
    return ch in string.punctuation or unicodedata.category(ch).startswith("P")


def _joined(context: str, left: int) -> bool:
    """Whether ``context[left]`` and ``context[left + 1]`` belong to one word: letters or digits
    on both sides ("assassin|ating"), or a digit-group mark between digits ("5|,200")."""
    a, b = context[left], context[left + 1]
    if a.isalnum() and b.isalnum():
        return True
    after = context[left + 2] if left + 2 < len(context) else ""
    return (b in ",." and a.isdigit() and after.isdigit()) or (
        a in ",." and b.isdigit() and left > 0 and context[left - 1].isdigit())


def snap_to_words(context: str, start: int, end: int) -> tuple[int, int]:
    """Widen a span whose edge falls inside a word to the whole word.

    The model scores WordPiece tokens, so its best span can start or end on a piece of a word
    ("assassin" of "assassinating"); a quoted answer never cuts a word.
    """
    while start > 0 and _joined(context, start - 1):
        start -= 1
    while 0 < end < len(context) and _joined(context, end - 1):
        end += 1
    return start, end


def trim_span(context: str, start: int, end: int) -> tuple[int, int]:
    """Strip whitespace and dangling punctuation from the span's edges.

    Keeps a closing bracket/quote whose opener is inside the span, and a final '.' when the span
    already holds a '.' (abbreviations such as "U.S."), because a citation should quote them.
    """
    while True:
        while start < end and (context[start].isspace() or (_is_punct(context[start]) and not _keeps_left(context, start, end))):
            start += 1
        while end > start and (context[end - 1].isspace() or (_is_punct(context[end - 1]) and not _keeps_right(context, start, end))):
            end -= 1
        # a pair of brackets/quotes wrapping the whole answer is not part of it: "(1889)" -> 1889
        if end - start >= 2 and context[start] in _OPENERS and _MATCH.get(context[end - 1]) == context[start]:
            start, end = start + 1, end - 1
            continue
        return start, end


def _keeps_left(context: str, start: int, end: int) -> bool:
    ch = context[start]
    if ch in _OPENERS:
        closer = _CLOSERS[_OPENERS.index(ch)]
        return closer in context[start + 1 : end]
    return ch in "$£€#"  # currency / hashtag signs belong to the answer


def _keeps_right(context: str, start: int, end: int) -> bool:
    ch = context[end - 1]
    if ch in _MATCH:
        return _MATCH[ch] in context[start : end - 1]
    if ch == ".":
        return "." in context[start : end - 1]
    return ch == "%"


def decode_windows(
    context: str,
    windows: Sequence[Window],
    start_logits: Sequence[np.ndarray],
    end_logits: Sequence[np.ndarray],
    top_n: int = 3,
    max_answer_tokens: int = 30,
    n_best_tokens: int = 20,
) -> ReaderResult:
    """Best character spans over all windows of one context, plus the SQuAD2 null score.

    Only spans made of context tokens (never [CLS], question or [SEP]) with end >= start and at
    most ``max_answer_tokens`` tokens are considered.
    """
    best: dict[tuple[int, int], float] = {}
    null_score = float("inf")
    for win, s_log, e_log in zip(windows, start_logits, end_logits):
        n = len(win)
        s_log, e_log = np.asarray(s_log[:n], dtype=np.float32), np.asarray(e_log[:n], dtype=np.float32)
        null_score = min(null_score, float(s_log[0] + e_log[0]))
        ctx = np.flatnonzero(win.is_context)
        if ctx.size == 0:
            continue
        k = min(n_best_tokens, ctx.size)
        top_s = ctx[np.argsort(-s_log[ctx], kind="stable")[:k]]
        top_e = ctx[np.argsort(-e_log[ctx], kind="stable")[:k]]
        for s in top_s:
            for e in top_e:
                if e < s or e - s + 1 > max_answer_tokens:
                    continue
                c0, c1 = trim_span(context, *snap_to_words(context, int(win.offsets[s, 0]),
                                                           int(win.offsets[e, 1])))
                if c1 <= c0:
                    continue
                score = float(s_log[s] + e_log[e])
                if score > best.get((c0, c1), float("-inf")):
                    best[(c0, c1)] = score
    ranked = sorted(best.items(), key=lambda kv: -kv[1])[:top_n]
    spans = [Span(start=a, end=b, score=sc) for (a, b), sc in ranked]
    return ReaderResult(
        spans=spans,
        null_score=null_score,
        best_span_score=spans[0].score if spans else float("-inf"),
    )
