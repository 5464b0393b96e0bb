"""Question sets: our JSONL format, located against the corpus files.

One question per line:
``{"id", "question", "answerable", "answers": [...], "evidence": [{"file", "quote"}], "type"}``.
Each ``quote`` must be a verbatim substring of its file; it is located once, here, and carried
as character offsets (``gold_spans``) from then on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from citeqa.index.errors import InvalidInput


class DatasetError(InvalidInput):
    """A question set, SQuAD file or report that cannot be used; the message says why."""


@dataclass(frozen=True)
class Span:
    file: str
    start: int
    end: int


@dataclass
class EvalQuestion:
    id: str
    question: str
    answerable: bool
    answers: list[str]
    type: str = "other"
    # Gold evidence: a passage or cited answer that overlaps one of these is on target.
    evidence: list[Span] = field(default_factory=list)
    # SQuAD only: gold answer spans; a passage hits when it contains one.
    answer_spans: list[Span] = field(default_factory=list)
    # SQuAD only: the paragraph the question was written about (unanswerable ones too).
    paragraph: Span | None = None


def load_questions(path: Path, corpus: dict[str, str]) -> list[EvalQuestion]:
    """Read and validate a JSONL question set against ``corpus`` (file name -> text)."""
    questions: list[EvalQuestion] = []
    seen: set[str] = set()
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{where}: not valid JSON ({exc.msg})") from None
            questions.append(_parse(row, corpus, where))
            if questions[-1].id in seen:
                raise DatasetError(f"{where}: duplicate id {questions[-1].id!r}")
            seen.add(questions[-1].id)
    if not questions:
        raise DatasetError(f"{path}: no questions")
    return questions


def _parse(row: dict, corpus: dict[str, str], where: str) -> EvalQuestion:
    for key in ("id", "question", "answerable"):
        if key not in row:
            raise DatasetError(f"{where}: missing {key!r}")
    answers = list(row.get("answers", []))
    evidence: list[Span] = []
    for ev in row.get("evidence", []):
        file, quote = ev.get("file"), ev.get("quote")
        if file not in corpus:
            raise DatasetError(f"{where}: evidence file {file!r} is not in the corpus")
        if not quote:
            raise DatasetError(f"{where}: empty evidence quote")
        start = corpus[file].find(quote)
        if start < 0:
            raise DatasetError(f"{where}: quote not found verbatim in {file}: {quote[:60]!r}")
        evidence.append(Span(file, start, start + len(quote)))
    if row["answerable"]:
        if not answers or not evidence:
            raise DatasetError(f"{where}: an answerable question needs answers and evidence")
        quotes = [corpus[s.file][s.start:s.end] for s in evidence]
        for a in answers:
            if not any(a in q for q in quotes):
                raise DatasetError(f"{where}: answer {a!r} is not inside its evidence")
    elif answers or evidence:
        raise DatasetError(f"{where}: an unanswerable question has no answers or evidence")
    return EvalQuestion(str(row["id"]), str(row["question"]), bool(row["answerable"]), answers,
                        str(row.get("type", "other")), evidence)


def read_corpus(directory: Path) -> dict[str, str]:
    """File name -> text for the harness's own checks (read independently of the index)."""
    from citeqa.index.documents import SUPPORTED_SUFFIXES

    return {p.name: p.read_text(encoding="utf-8") for p in sorted(directory.iterdir())
            if p.is_file() and p.name.lower().endswith(SUPPORTED_SUFFIXES)
            and not p.name.startswith(".")}
