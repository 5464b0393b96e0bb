"""Runs a question set in-process (through ``QA``) or against a live server (``POST /ask``)
and scores every question. Never reaches inside the pipeline stages."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from citeqa.eval.dataset import EvalQuestion
from citeqa.eval.metrics import contains_gold, exact_match, f1_score, first_hit_rank, spans_overlap
from citeqa.index.units import paragraph_at, paragraph_spans, Paragraph
from citeqa.service.abstention import cut

TOP_K = 10  # passages requested per question: enough for recall@10 and MRR@10


class Target(Protocol):
    description: str

    def ask(self, question: str, top_k: int) -> dict[str, Any]: ...


class InProcessTarget:
    """Asks a ``QA`` directly. The QA should return every answer (threshold 0) so that
    thresholds can be applied afterwards: that makes a sweep free."""

    def __init__(self, qa: Any) -> None:
        self.qa = qa
        self.description = "in-process"

    def ask(self, question: str, top_k: int) -> dict[str, Any]:
        return self.qa.ask(question, top_k=top_k).model_dump()


def wait_until_ready(url: str, timeout: float = 120.0, alive: Callable[[], bool] | None = None
                     ) -> None:
    """Poll ``GET /ready`` until the server answers 200; raises TimeoutError, or RuntimeError
    as soon as ``alive()`` says the server process has exited."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise RuntimeError(f"the server for {url} exited before becoming ready")
        try:
            if httpx.get(f"{url.rstrip('/')}/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} was not ready after {timeout:.0f} s")


class HttpTarget:
    def __init__(self, url: str, timeout: float = 60.0) -> None:
        import httpx

        self.url = url.rstrip("/")
        self.description = f"http {self.url}"
        self._client = httpx.Client(timeout=timeout)

    def ask(self, question: str, top_k: int) -> dict[str, Any]:
        response = self._client.post(f"{self.url}/ask", json={"question": question, "top_k": top_k})
        response.raise_for_status()
        return response.json()


@dataclass
class QuestionResult:
    question: EvalQuestion
    response: dict[str, Any] | None
    latency_ms: float
    error: str | None = None

    @property
    def top_score(self) -> float | None:
        answers = (self.response or {}).get("answers") or []
        return float(answers[0]["score"]) if answers else None


def run_questions(target: Target, questions: list[EvalQuestion], *,
                  progress: Callable[[int, int], None] | None = None) -> list[QuestionResult]:
    results: list[QuestionResult] = []
    for i, q in enumerate(questions):
        t0 = time.perf_counter()
        try:
            response, error = target.ask(q.question, TOP_K), None
        except Exception as exc:  # a failed question is scored as wrong, and reported
            response, error = None, f"{type(exc).__name__}: {exc}"
        results.append(QuestionResult(q, response, (time.perf_counter() - t0) * 1000, error))
        if progress:
            progress(i + 1, len(questions))
    return results


# --------------------------------------------------------------------------------------------
# Scoring one question


@dataclass
class CitationChecker:
    """Checks ``file_text[start:end] == text`` and the paragraph number of returned units,
    against the files as read from disk."""

    corpus: dict[str, str]
    _paragraphs: dict[str, list[Paragraph]] = field(default_factory=dict)

    def paragraph_of(self, file: str, offset: int) -> int | None:
        if file not in self._paragraphs:
            text = self.corpus[file]
            self._paragraphs[file] = [Paragraph(file, n, s, e, text[s:e])
                                      for n, (s, e) in enumerate(paragraph_spans(text), start=1)]
        p = paragraph_at(self._paragraphs[file], offset)
        return p.paragraph if p else None

    def valid(self, file: str, paragraph: int, start: int, end: int, text: str) -> bool:
        body = self.corpus.get(file)
        if body is None or not (0 <= start < end <= len(body)):
            return False
        return body[start:end] == text and self.paragraph_of(file, start) == paragraph


def score_question(result: QuestionResult, checker: CitationChecker,
                   threshold: float | None) -> dict[str, float | None]:
    """Per-question metric values (None where a metric does not apply to this question)."""
    q = result.question
    resp = result.response or {"answers": [], "passages": [], "no_answer": True}
    raw_answers = answers = resp.get("answers", [])
    if threshold is not None:  # as the service applies it: the first answer below it ends the list
        answers = cut(answers, threshold, score=lambda a: a["score"])
    abstained = not answers
    passages = resp.get("passages", [])[:TOP_K]

    valid = result.response is not None and all(
        checker.valid(a["citation"]["file"], a["citation"]["paragraph"], a["citation"]["start"],
                      a["citation"]["end"], a["text"]) for a in answers
    ) and all(checker.valid(p["file"], p["paragraph"], p["start"], p["end"], p["text"])
              for p in passages)
    row: dict[str, float | None] = {
        "citation_valid": float(valid),
        "latency_ms": result.latency_ms,
        "abstain_acc": None if q.answerable else float(abstained),
        "false_abstain": float(abstained) if q.answerable else None,
    }
    if q.paragraph is not None:
        # The benchmark figure "top answer in the gold paragraph": the best answer before
        # abstention (over HTTP the server has already applied its threshold).
        top = raw_answers[0]["citation"] if raw_answers else None
        row["top_in_gold_paragraph"] = float(top is not None and top["file"] == q.paragraph.file
                                             and spans_overlap(top["start"], top["end"],
                                                               q.paragraph.start, q.paragraph.end))
    prediction = "" if abstained else answers[0]["text"]
    # SQuAD v2 convention: an unanswerable question scores 1 when the system abstains.
    row["exact_match"] = exact_match(prediction, q.answers)
    row["f1"] = f1_score(prediction, q.answers)
    if not q.answerable:
        for key in ("recall@1", "recall@3", "recall@5", "recall@10", "mrr@10",
                    "evidence_hit@1", "answer_contains_gold"):
            row[key] = None
        return row
    hits = [_passage_hits(p, q) for p in passages]
    rank = first_hit_rank(hits)
    for k in (1, 3, 5, 10):
        row[f"recall@{k}"] = float(rank is not None and rank <= k)
    row["mrr@10"] = 1.0 / rank if rank is not None and rank <= 10 else 0.0
    if abstained:
        row["evidence_hit@1"] = 0.0
        row["answer_contains_gold"] = 0.0
    else:
        c = answers[0]["citation"]
        # The evidence the top answer stands on: the sentence it was taken from (a reader's
        # phrase carries it as ``context``), so the sentence and reader paths compare alike.
        ctx = answers[0].get("context") or {}
        start, end = ctx.get("start", c["start"]), ctx.get("end", c["end"])
        row["evidence_hit@1"] = float(any(
            ev.file == c["file"] and spans_overlap(start, end, ev.start, ev.end)
            for ev in q.evidence))
        row["answer_contains_gold"] = contains_gold(prediction, q.answers)
    return row


def _passage_hits(p: dict[str, Any], q: EvalQuestion) -> bool:
    if q.answer_spans:  # SQuAD: the passage contains a gold answer span
        return any(s.file == p["file"] and p["start"] <= s.start and s.end <= p["end"]
                   for s in q.answer_spans)
    return any(ev.file == p["file"] and spans_overlap(p["start"], p["end"], ev.start, ev.end)
               for ev in q.evidence)


def corpus_key(documents: dict[str, str]) -> str:
    h = hashlib.sha256()
    for name in sorted(documents):
        h.update(name.encode())
        h.update(hashlib.sha256(documents[name].encode()).digest())
    return h.hexdigest()[:16]


def write_corpus(documents: dict[str, str], directory: Path) -> None:
    """Materialise an imported corpus (only rewriting files whose content changed)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in documents.items():
        path = directory / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
    for path in directory.iterdir():
        if path.is_file() and path.name not in documents:
            path.unlink()


def dump_results(results: list[QuestionResult], path: Path, dataset: str, *,
                 append: bool = False, ablation: str | None = None) -> None:
    with open(path, "a" if append else "w", encoding="utf-8") as f:
        for r in results:
            label = {"ablation": ablation} if ablation else {}
            f.write(json.dumps({"dataset": dataset, **label, "id": r.question.id,
                                "latency_ms": r.latency_ms,
                                "error": r.error, "response": r.response},
                               ensure_ascii=False) + "\n")
