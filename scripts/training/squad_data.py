"""SQuAD loading and the project's article split (see benchmarks/squad/README.md, split.json).

Used by the training, export and evaluation scripts; not needed at serving time.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from citeqa.service.normalize import normalize_answer


@dataclass(frozen=True)
class QAExample:
    qid: str
    title: str
    question: str
    context: str
    answers: tuple[tuple[str, int], ...]  # (text, answer_start); empty = unanswerable
    synthetic_negative: bool = False

    @property
    def is_impossible(self) -> bool:
        return not self.answers

    @property
    def gold_texts(self) -> list[str]:
        return [a for a, _ in self.answers]


@dataclass
class Split:
    test: list[str]
    dev: list[str]
    train_v2: list[str]
    train_v1_only: list[str]
    all_train: set[str] = field(init=False)

    def __post_init__(self) -> None:
        self.all_train = set(self.train_v2) | set(self.train_v1_only)


def load_split(squad_dir: Path) -> Split:
    raw = json.loads((squad_dir / "split.json").read_text())
    return Split(raw["test"], raw["dev"], raw["train_v2"], raw["train_v1_only"])


def load_articles(path: Path) -> list[dict]:
    return json.loads(Path(path).read_text(encoding="utf-8"))["data"]


def iter_examples(articles: Iterable[dict], titles: set[str] | None = None) -> Iterable[QAExample]:
    for art in articles:
        if titles is not None and art["title"] not in titles:
            continue
        for para in art["paragraphs"]:
            for qa in para["qas"]:
                answers = () if qa.get("is_impossible") else tuple(
                    (a["text"], int(a["answer_start"])) for a in qa["answers"]
                )
                yield QAExample(qa["id"], art["title"], qa["question"], para["context"], answers)


def dev_file_train_examples(squad_dir: Path, split: Split) -> list[QAExample]:
    """Questions of the split's train articles from both dev files, de-duplicated by id (the v2
    copy wins: it carries the same answers plus the unanswerables). Test articles never appear."""
    v2 = list(iter_examples(load_articles(squad_dir / "dev-v2.0.json"), set(split.train_v2)))
    seen = {e.qid for e in v2}
    v1 = [
        e
        for e in iter_examples(load_articles(squad_dir / "dev-v1.1.json"), split.all_train)
        if e.qid not in seen
    ]
    out = v2 + v1
    assert not {e.title for e in out} & (set(split.test) | set(split.dev)), "split leak"
    return out


def split_examples(squad_dir: Path, split: Split, which: str) -> list[QAExample]:
    """Questions of the 'dev' (threshold tuning) or 'test' articles, from dev-v2.0."""
    titles = set(split.dev if which == "dev" else split.test)
    return list(iter_examples(load_articles(squad_dir / "dev-v2.0.json"), titles))


def paragraphs_by_title(articles: Iterable[dict]) -> dict[str, list[str]]:
    return {a["title"]: [p["context"] for p in a["paragraphs"]] for a in articles}


def synthetic_negative(
    ex: QAExample, paragraphs: list[str], rng: random.Random, tries: int = 5
) -> QAExample | None:
    """Pair an answerable question with another paragraph of its own article (same topic, so the
    negative is not trivially off-topic). Paragraphs that contain a gold answer string are
    rejected, because the question might then really be answerable there."""
    golds = [f" {normalize_answer(t)} " for t in ex.gold_texts if normalize_answer(t)]
    others = [p for p in paragraphs if p != ex.context]
    for _ in range(min(tries, len(others))):
        para = rng.choice(others)
        norm = f" {normalize_answer(para)} "
        if not any(g in norm for g in golds):
            return QAExample(ex.qid + "_neg", ex.title, ex.question, para, (), synthetic_negative=True)
    return None
