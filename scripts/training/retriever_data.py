"""Training pairs for the question -> answer-sentence bi-encoder (scripts/train_retriever.py).

Every SQuAD article becomes one document, its contexts joined by blank lines, and is split by
:func:`citeqa.index.units.split_document` with the index's settings, so the sentences (and
passages) trained on are exactly the units the pipeline embeds. For each answerable question:

* positive: the sentence unit that contains the answer's start (the answer offset mapped into
  the joined text). Questions whose answer runs past the end of that sentence, or whose start
  lies in no sentence unit (noise blocks, trimmed whitespace), are skipped and counted;
* hard negatives: (a) the other sentences of the same context, (b) sentences of the article's
  *other* contexts ranked by BM25 (the index's tokenizer, :mod:`citeqa.index.lexical`) against
  the question. Neither ever contains a gold answer text (SQuAD normalisation, starting at a
  word boundary: :func:`has_answer`);
* a seeded share of the questions is trained as (question, passage unit) instead, with a BM25
  passage of another context as the hard negative, so passage embeddings (the index embeds
  passages too) are trained on the same task and do not drift.

Sources: SQuAD v1.1 train (all articles; none is a dev-v2.0 article) and the split's train
articles of the dev files (``train_v2`` from dev-v2.0, ``train_v1_only`` from dev-v1.1),
answerable questions only, de-duplicated by question id. The split's ``test`` and ``dev``
articles are refused, whatever file they come from.
"""

from __future__ import annotations

import bisect
import json
import random
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from citeqa.index.documents import file_sha256
from citeqa.index.lexical import Bm25Index
from citeqa.index.units import DocumentUnits, Unit, split_document
from citeqa.service.normalize import normalize_answer

# The index's unit settings (citeqa.index: max_chars=900, overlap=1).
MAX_CHARS = 900
OVERLAP = 1
PARAGRAPH_SEPARATOR = "\n\n"
KEEP_NEGATIVES = 3  # candidates of each kind kept in the prepared file


@dataclass
class ArticleDoc:
    """One SQuAD article as a pipeline document."""

    title: str
    text: str
    offsets: list[int]  # offsets[i]: where context i starts in ``text``
    units: DocumentUnits

    def context_of(self, offset: int) -> int:
        """Index of the context whose span holds ``offset`` (the one starting at or before it)."""
        return bisect.bisect_right(self.offsets, offset) - 1


def join_contexts(contexts: list[str]) -> tuple[str, list[int]]:
    offsets, pos = [], 0
    for c in contexts:
        offsets.append(pos)
        pos += len(c) + len(PARAGRAPH_SEPARATOR)
    return PARAGRAPH_SEPARATOR.join(contexts), offsets


def article_document(article: dict) -> ArticleDoc:
    contexts = [p["context"] for p in article["paragraphs"]]
    text, offsets = join_contexts(contexts)
    units = split_document(article["title"], text, max_chars=MAX_CHARS, overlap=OVERLAP)
    return ArticleDoc(article["title"], text, offsets, units)


def unit_at(units: list[Unit], starts: list[int], offset: int) -> int | None:
    """Index of the unit whose [start, end) holds ``offset`` (sentence units do not overlap)."""
    i = bisect.bisect_right(starts, offset) - 1
    if i >= 0 and units[i].start <= offset < units[i].end:
        return i
    return None


def padded_norm(text: str) -> str:
    return f" {normalize_answer(text)} "


def has_answer(padded: str, normalized_answers: Iterable[str]) -> bool:
    """Whether a ``padded_norm`` text holds one of the normalised, non-empty answers starting at
    a word boundary. The end is left open on purpose, so that "Rollo's" (normalised "rollos")
    and plurals count as holding "Rollo": a candidate that merely might hold the answer is
    never used as a negative (over-excluding only costs a negative)."""
    return any(f" {a}" in padded for a in normalized_answers)


def contains_answer(text: str, normalized_answers: Iterable[str]) -> bool:
    return has_answer(padded_norm(text), normalized_answers)


@dataclass
class Example:
    qid: str
    title: str
    source: str
    question: str
    answers: list[str]
    kind: str  # "sentence" or "passage"
    positive: str
    positive_span: tuple[int, int]  # offsets in the joined article text
    context_index: int
    negative: str | None  # the hard negative trained on
    negative_source: str | None  # "same_paragraph", "bm25_other_paragraph", "bm25_other_passage"
    same_paragraph_negatives: list[str] = field(default_factory=list)
    bm25_negatives: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_json(cls, line: str) -> Example:
        d = json.loads(line)
        d["positive_span"] = tuple(d["positive_span"])
        return cls(**d)


def _questions(article: dict) -> Iterator[tuple[int, dict]]:
    for ci, para in enumerate(article["paragraphs"]):
        for qa in para["qas"]:
            if not qa.get("is_impossible") and qa.get("answers"):
                yield ci, qa


def article_examples(
    article: dict,
    source: str,
    rng: random.Random,
    counts: Counter,
    *,
    passage_share: float = 0.1,
    other_paragraph_share: float = 0.5,
    bm25_top: int = 3,
    seen_qids: set[str] | None = None,
) -> list[Example]:
    """Training examples of one article (see the module docstring). ``counts`` collects the
    kept and skipped numbers; ``rng`` makes every choice (hard negative, passage or sentence)."""
    doc = article_document(article)
    sents, passages = doc.units.sentences, doc.units.passages
    s_starts = [u.start for u in sents]
    s_ctx = [doc.context_of(u.start) for u in sents]
    p_ctx = [doc.context_of(u.start) for u in passages]
    s_norm = [padded_norm(u.text) for u in sents]
    p_norm = [padded_norm(u.text) for u in passages]
    s_bm25 = Bm25Index.build([u.text for u in sents])
    p_bm25 = Bm25Index.build([u.text for u in passages])
    out: list[Example] = []
    for ci, qa in _questions(article):
        if seen_qids is not None:
            if qa["id"] in seen_qids:
                counts["skipped_duplicate_id"] += 1
                continue
            seen_qids.add(qa["id"])
        counts["questions"] += 1
        ans = qa["answers"][0]
        a_text, a0 = ans["text"], doc.offsets[ci] + int(ans["answer_start"])
        a1 = a0 + len(a_text)
        if doc.text[a0:a1] != a_text:
            counts["skipped_misaligned_answer"] += 1
            continue
        golds = sorted({n for n in (normalize_answer(a["text"]) for a in qa["answers"]) if n})
        if not golds:
            counts["skipped_empty_normalized_answer"] += 1
            continue
        si = unit_at(sents, s_starts, a0)
        if si is None:
            counts["skipped_answer_in_no_sentence"] += 1
            continue
        if a1 > sents[si].end:
            counts["skipped_answer_crosses_sentence"] += 1
            continue
        scores = s_bm25.scores(qa["question"])
        order = scores.argsort(kind="stable")[::-1]  # best first
        other: list[str] = []  # BM25 hits (score > 0) in the article's other contexts
        for j in order:
            if len(other) == KEEP_NEGATIVES or scores[j] <= 0:
                break
            if s_ctx[j] != ci and not has_answer(s_norm[j], golds):
                other.append(sents[j].text)
        # the same paragraph's other sentences, in BM25 order too (most confusable first)
        same_sorted = [
            int(j) for j in order
            if s_ctx[j] == ci and j != si and not has_answer(s_norm[j], golds)
        ]
        same = [sents[j].text for j in same_sorted][:KEEP_NEGATIVES]

        kind, positive, span = "sentence", sents[si].text, (sents[si].start, sents[si].end)
        negative = neg_source = None
        if rng.random() < passage_share:
            # the first window that holds the whole answer (for paragraphs under MAX_CHARS:
            # the paragraph itself)
            pj = next((j for j, p in enumerate(passages) if p.start <= a0 and a1 <= p.end), None)
            if pj is not None:
                p_scores = p_bm25.scores(qa["question"])
                p_negs = [
                    passages[j].text for j in p_scores.argsort(kind="stable")[::-1]
                    if p_scores[j] > 0 and p_ctx[j] != ci
                    and not has_answer(p_norm[j], golds)
                ][:bm25_top]
                kind, positive, span = "passage", passages[pj].text, (passages[pj].start, passages[pj].end)
                if p_negs:
                    negative, neg_source = rng.choice(p_negs), "bm25_other_passage"
        if kind == "sentence":
            use_other = bool(other) and (not same or rng.random() < other_paragraph_share)
            if use_other:
                negative, neg_source = rng.choice(other[:bm25_top]), "bm25_other_paragraph"
            elif same:
                negative, neg_source = rng.choice(same[:bm25_top]), "same_paragraph"
        counts["kept"] += 1
        counts[f"kept_{kind}"] += 1
        counts[f"negative_{neg_source or 'none'}"] += 1
        out.append(Example(
            qid=qa["id"], title=article["title"], source=source, question=qa["question"],
            answers=[a["text"] for a in qa["answers"]], kind=kind, positive=positive,
            positive_span=span, context_index=ci, negative=negative, negative_source=neg_source,
            same_paragraph_negatives=same, bm25_negatives=other,
        ))
    return out


# ----------------------------------------------------------------------------- sources


def load_split(squad_dir: Path) -> dict[str, list[str]]:
    raw = json.loads((Path(squad_dir) / "split.json").read_text())
    return {k: raw[k] for k in ("test", "dev", "train_v2", "train_v1_only")}


def load_articles(path: Path) -> list[dict]:
    return json.loads(Path(path).read_text(encoding="utf-8"))["data"]


def training_articles(squad_dir: Path) -> list[tuple[str, dict]]:
    """(source, article) pairs allowed for training, in a fixed order. Refuses test/dev."""
    squad_dir = Path(squad_dir)
    split = load_split(squad_dir)
    forbidden = set(split["test"]) | set(split["dev"])
    pairs = [("train-v1.1", a) for a in load_articles(squad_dir / "train-v1.1.json")]
    if (squad_dir / "dev-v2.0.json").exists():
        pairs += [("dev-v2.0:train_v2", a) for a in load_articles(squad_dir / "dev-v2.0.json")
                  if a["title"] in set(split["train_v2"])]
    if (squad_dir / "dev-v1.1.json").exists():
        pairs += [("dev-v1.1:train_v1_only", a) for a in load_articles(squad_dir / "dev-v1.1.json")
                  if a["title"] in set(split["train_v1_only"])]
    return exclude_forbidden(pairs, forbidden)


def exclude_forbidden(pairs: list[tuple[str, dict]], forbidden: set[str]) -> list[tuple[str, dict]]:
    leaked = sorted({a["title"] for _, a in pairs} & forbidden)
    if leaked:
        raise ValueError(f"test/dev articles among the training articles: {leaked}")
    return pairs


def build_examples(
    pairs: list[tuple[str, dict]],
    seed: int,
    forbidden: set[str] = frozenset(),
    **kwargs,
) -> tuple[list[Example], Counter]:
    """All examples of the given articles, deterministic in ``seed``; articles whose title is in
    ``forbidden`` are dropped (and counted), never trained on."""
    rng = random.Random(seed)
    counts: Counter = Counter()
    seen: set[str] = set()
    out: list[Example] = []
    for source, art in pairs:
        if art["title"] in forbidden:
            counts["skipped_forbidden_articles"] += 1
            continue
        counts["articles"] += 1
        counts[f"articles_{source}"] += 1
        exs = article_examples(art, source, rng, counts, seen_qids=seen, **kwargs)
        counts[f"kept_{source}"] += len(exs)
        out.extend(exs)
    return out, counts


def write_examples(path: Path, examples: list[Example]) -> str:
    """Write JSONL; returns its sha256 (recorded in checkpoints, so a resume cannot silently
    continue on different data)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for ex in examples:
            fh.write(ex.to_json() + "\n")
    tmp.replace(path)
    return file_sha256(path)


def read_examples(path: Path) -> list[Example]:
    with Path(path).open(encoding="utf-8") as fh:
        return [Example.from_json(line) for line in fh if line.strip()]




# ----------------------------------------------------------------------------- evaluation data


@dataclass
class EvalSet:
    """Sentence units of some articles (pooled: one corpus) and their answerable questions."""

    sentences: list[str]
    sentence_titles: list[str]
    questions: list[str]
    gold: list[set[int]]  # indices into ``sentences``: units holding an answer start
    skipped_no_unit: int
    articles: list[str]


def eval_set(articles: list[dict]) -> EvalSet:
    sentences: list[str] = []
    titles: list[str] = []
    questions: list[str] = []
    gold: list[set[int]] = []
    skipped = 0
    for art in articles:
        doc = article_document(art)
        sents = doc.units.sentences
        starts = [u.start for u in sents]
        base = len(sentences)
        sentences.extend(u.text for u in sents)
        titles.extend([art["title"]] * len(sents))
        for ci, qa in _questions(art):
            g = set()
            for a in qa["answers"]:
                i = unit_at(sents, starts, doc.offsets[ci] + int(a["answer_start"]))
                if i is not None:
                    g.add(base + i)
            if not g:
                skipped += 1
                continue
            questions.append(qa["question"])
            gold.append(g)
    return EvalSet(sentences, titles, questions, gold, skipped, [a["title"] for a in articles])
