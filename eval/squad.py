"""SQuAD v1.1 / v2.0 import: each article becomes one document, its paragraphs separated by a
blank line, and every gold answer becomes a character span of that document."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from citeqa.eval.dataset import DatasetError, EvalQuestion, Span

PARAGRAPH_SEPARATOR = "\n\n"


@dataclass
class SquadCorpus:
    documents: dict[str, str]  # file name -> text
    questions: list[EvalQuestion]
    version: str


def _file_name(index: int, title: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", title).strip("_.") or "article"
    return f"{index:03d}_{slug[:80]}.txt"


def load_squad(path: Path, *, limit: int | None = None, articles: int | None = None,
               titles: list[str] | None = None) -> SquadCorpus:
    """``limit``: the first N questions in file order (only the articles they need);
    ``articles``: the first K articles; ``titles``: only the articles with these titles."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        version = str(data.get("version", "?"))
        raw_articles = data["data"]
    except (OSError, json.JSONDecodeError, KeyError, AttributeError) as exc:
        raise DatasetError(f"{path}: not a SQuAD JSON file ({exc})") from None
    if titles:
        known = {a.get("title") for a in raw_articles}
        unknown = [t for t in titles if t not in known]
        if unknown:
            raise DatasetError(f"{path}: no article titled {', '.join(map(repr, unknown))}")
        raw_articles = [a for a in raw_articles if a.get("title") in set(titles)]
    if articles is not None:
        raw_articles = raw_articles[:articles]
    documents: dict[str, str] = {}
    questions: list[EvalQuestion] = []
    for a_index, article in enumerate(raw_articles):
        if limit is not None and len(questions) >= limit:
            break
        name = _file_name(a_index, article.get("title", "article"))
        parts: list[str] = []
        offset = 0
        for para in article["paragraphs"]:
            # A newline inside a context would change paragraph numbering: replace it with a
            # space, which keeps every answer offset valid.
            context = para["context"].replace("\r", " ").replace("\n", " ")
            p_start = offset
            p_end = p_start + len(context)
            for qa in para["qas"]:
                if limit is not None and len(questions) >= limit:
                    break
                impossible = bool(qa.get("is_impossible", False))
                spans: list[Span] = []
                texts: list[str] = []
                for ans in [] if impossible else qa.get("answers", []):
                    a_start = p_start + int(ans["answer_start"])
                    a_text = ans["text"]
                    if context[a_start - p_start:a_start - p_start + len(a_text)] != a_text:
                        continue  # a handful of official answers are misaligned: skip them
                    spans.append(Span(name, a_start, a_start + len(a_text)))
                    texts.append(a_text)
                if not impossible and not spans:
                    continue
                questions.append(EvalQuestion(
                    id=str(qa["id"]), question=qa["question"], answerable=not impossible,
                    answers=texts, type="unanswerable" if impossible else "answerable",
                    evidence=[] if impossible else [Span(name, p_start, p_end)],
                    answer_spans=spans, paragraph=Span(name, p_start, p_end),
                ))
            parts.append(context)
            offset = p_end + len(PARAGRAPH_SEPARATOR)
        documents[name] = PARAGRAPH_SEPARATOR.join(parts) + "\n"
    if not questions:
        raise DatasetError(f"{path}: no questions selected")
    return SquadCorpus(documents, questions, version)
