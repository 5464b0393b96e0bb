"""Answer extraction: turn ranked evidence into verbatim, cited answer spans.

``Extractor`` is the stage a trained reader replaces: the sentence extractor answers with the
best-scoring sentences; ``service.reader`` answers with the exact phrase inside them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Protocol

from citeqa.index.corpus import CorpusIndex
from citeqa.service.abstention import SENTENCE_THRESHOLD, AbstentionModel, reader_margin
from citeqa.service.answer_type import AnswerType, expected_type, satisfies
from citeqa.service.normalize import normalize_answer
from citeqa.service.rerank import Ranked, Ranking


@dataclass(frozen=True, slots=True)
class Extracted:
    file: str
    paragraph: int
    start: int
    end: int
    text: str
    score: float  # 0..1: what abstention thresholds
    context: tuple[int, int, str] | None = None  # the containing sentence, for span answers
    # The evidence behind ``score``: the answer sentence's raw cross-encoder logit (None
    # without a reranker) and, for the reader, its span-minus-null margin on the window.
    logit: float | None = None
    reader_margin: float | None = None


class Extractor(Protocol):
    @property
    def default_threshold(self) -> float:
        """Answers scoring below this abstain, unless the settings name another threshold."""
        ...

    def warm_up(self) -> None: ...

    def close(self) -> None:
        """Release worker threads (the extractor may not be used afterwards)."""
        ...

    def run(self, question: str, ranking: Ranking, index: CorpusIndex) -> list[Extracted]:
        """Candidate answers, best first, deduplicated; abstention is decided by the caller."""
        ...


# Lead-ins that never answer anything: a speaker tag run into the text ("Dan: ") and
# discourse connectives at the start of a sentence.
_LEAD_IN = re.compile(
    r"^(?:[A-Z][a-z]+:\s+)?(?:(?:And|But|So|Still|However|In short|In fact|Similarly|Regardless"
    r"|Meanwhile|Indeed|Moreover|Furthermore|Also|Yet|Thus|Therefore|Last but not least"
    r"|As for [^,]{1,40}|In other words),?\s+)?"
)


def trim_lead_in(start: int, text: str) -> tuple[int, str]:
    """Drop a leading speaker tag and connective; the rest stays a verbatim span."""
    m = _LEAD_IN.match(text)
    cut = m.end() if m else 0
    if cut and cut < len(text) - 10:
        return start + cut, text[cut:]
    return start, text


def _tokens(text: str) -> set[str]:
    return set(normalize_answer(text).split())


def is_duplicate(candidate: Extracted, chosen: list[Extracted]) -> bool:
    """Same or overlapping span, or (near-)identical text elsewhere, e.g. a pull-quote."""
    cand_tokens = _tokens(candidate.text)
    for other in chosen:
        if other.file == candidate.file and candidate.start < other.end and other.start < candidate.end:
            return True
        other_tokens = _tokens(other.text)
        union = cand_tokens | other_tokens
        if union and len(cand_tokens & other_tokens) / len(union) >= 0.8:
            return True
        small, big = sorted((cand_tokens, other_tokens), key=len)
        if small and small <= big and len(small) >= 0.8 * len(big):
            return True
    return False


class SentenceExtractor:
    """The best sentences are the answers; a neighbouring sentence of the same paragraph that
    also scores well joins its span, so an answer can be two contiguous sentences."""

    def __init__(self, *, max_answers: int = 3, join_score: float = 0.5,
                 type_window: int = 2) -> None:
        self.max_answers = max_answers
        self.join_score = join_score
        # Answer-type check (service.answer_type): for "how many ..." and the like, the answer
        # is the best of the top ``type_window`` sentences that contains a quantity; when none
        # does, there is no answer. 0 turns the check off.
        self.type_window = type_window

    @property
    def default_threshold(self) -> float:
        return SENTENCE_THRESHOLD

    def warm_up(self) -> None:
        return None

    def close(self) -> None:
        return None

    def run(self, question: str, ranking: Ranking, index: CorpusIndex) -> list[Extracted]:
        by_id = {r.id: r for r in ranking.sentences}
        kind = self.answer_type(question)
        used: set[int] = set()
        answers: list[Extracted] = []
        examined = 0
        for r in ranking.sentences:
            if r.id in used:
                continue
            if kind is not None and not answers and examined >= self.type_window:
                break
            examined += 1
            first = last = r
            used.add(r.id)
            for neighbour_id in (r.id - 1, r.id + 1):
                n = by_id.get(neighbour_id)
                if (n is not None and n.id not in used and n.unit.file == r.unit.file
                        and n.unit.paragraph == r.unit.paragraph
                        and n.score >= max(self.join_score, 0.5 * r.score)):
                    used.add(n.id)
                    first = n if n.id < first.id else first
                    last = n if n.id > last.id else last
            answer = self._span(first, last, r.score, r.logit, index)
            if not satisfies(kind, answer.text, question):
                continue
            if not is_duplicate(answer, answers):
                answers.append(answer)
            if len(answers) >= self.max_answers:
                break
        return answers

    def answer_type(self, question: str) -> AnswerType | None:
        """The type the answer must have, or None when the check is off or not applicable."""
        return expected_type(question) if self.type_window else None

    @staticmethod
    def _span(first: Ranked, last: Ranked, score: float, logit: float | None,
              index: CorpusIndex) -> Extracted:
        unit = first.unit
        start, text = index.span_with_context(unit.file, unit.paragraph, unit.start, last.unit.end)
        start, text = trim_lead_in(start, text)
        return Extracted(unit.file, unit.paragraph, start, last.unit.end, text, score,
                         logit=logit)


class ReaderExtractor:
    """A trained span reader (``service.reader``) finds the exact phrase inside each answer
    sentence; the sentence comes along as ``context``, so a UI can highlight the span in it.

    Which sentences answer is the sentence extractor's decision (the cross-encoder's ranking
    and the answer-type check): letting the reader choose among sentences cost evidence hits
    (docs/evaluation.md). The reader reads each answer with the sentence before it (the view
    the cross-encoder had) and proposes spans inside the answer; the best one of the expected
    type becomes the answer. When it finds none there, the sentence is the answer.

    Whether to answer at all: by default (``abstention="sentence"``) exactly when the sentence
    extractor would, on the cross-encoder's score and the sentence threshold. The reader only
    narrows: its answers are the sentence path's answers, cut to a phrase, so the evidence
    behind them and the abstentions are the same by construction and only the span changes
    (README, "Sentence or reader"). With ``abstention="fitted"`` and an ``abstention.json``
    next to the reader (``citeqa.service.abstention``), each answer's score is instead the
    probability a logistic model gives from the sentence's cross-encoder logit and the reader's
    span-minus-null margin, with the threshold fitted with it.
    """

    def __init__(self, model_dir: Path, *, threads: int = 1, max_answers: int = 3,
                 type_window: int = 2, workers: int = 1,
                 abstention: str = "sentence") -> None:
        if abstention not in ("sentence", "fitted"):
            raise ValueError("reader abstention must be 'sentence' or 'fitted'")
        self.abstention_mode = abstention
        self.model_dir = Path(model_dir)
        self.threads = threads
        self.workers = workers
        self.sentences = SentenceExtractor(max_answers=max_answers, type_window=type_window)
        self._reader = None

    @cached_property
    def abstention(self) -> AbstentionModel | None:
        """The reader's fitted abstention model (read once from its small JSON file), or None
        (the sentence path's decision)."""
        if self.abstention_mode != "fitted":
            return None
        return AbstentionModel.load(self.model_dir)

    @property
    def default_threshold(self) -> float:
        model = self.abstention
        return model.threshold if model else SENTENCE_THRESHOLD

    def warm_up(self) -> None:
        if self._reader is not None:
            return
        from citeqa.service.reader.onnx_reader import OnnxReader

        reader = OnnxReader(self.model_dir, threads=self.threads, workers=self.workers)
        reader.warm_up()
        _ = self.abstention  # a broken abstention.json fails the start, not a question
        self._reader = reader

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()

    def run(self, question: str, ranking: Ranking, index: CorpusIndex) -> list[Extracted]:
        self.warm_up()
        answers = self.sentences.run(question, ranking, index)
        if not answers:
            return []
        kind = self.sentences.answer_type(question)
        # Each answer with the sentence before it: the view the cross-encoder had.
        windows = [index.span_with_context(a.file, a.paragraph, a.start, a.end, before=1)
                   for a in answers]
        results = self._reader.read(question, [text for _, text in windows], top_n=5)  # type: ignore[union-attr]
        out: list[Extracted] = []
        for answer, (w_start, w_text), result in zip(answers, windows, results):
            chosen = answer
            span_score = result.best_span_score  # no span of its own: the best span's margin
            for span in result.spans:
                start, end = w_start + span.start, w_start + span.end
                if start < answer.start or end > answer.end:
                    continue  # in the context sentence, not in the answer
                # The words after the span too: "two" in "two U.S. bases" counts bases.
                if not satisfies(kind, w_text[span.start:span.end + 40], question):
                    continue
                chosen = replace(answer, start=start, end=end,
                                 text=w_text[span.start:span.end],
                                 context=(answer.start, answer.end, answer.text))
                span_score = span.score
                break
            margin = reader_margin(span_score, result.null_score)
            chosen = replace(chosen, reader_margin=margin)
            if self.abstention is not None and chosen.logit is not None:
                chosen = replace(chosen, score=self.abstention.probability(chosen.logit, margin))
            out.append(chosen)
        return out
