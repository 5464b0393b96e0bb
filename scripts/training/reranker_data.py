"""Training and held-out pairs for the answer-sentence cross-encoder (scripts/train_reranker.py).

A pair is (question, text, label): ``text`` is one sentence unit shown as the service shows it to
the cross-encoder (with its preceding sentence of the same paragraph: ``rerank_context``), and
the label says whether *that* sentence (the last one of the text) answers the question.

Every SQuAD article becomes one document exactly as ``citeqa.eval.squad.load_squad`` writes it
(contexts without line breaks, joined by a blank line) and is split by
:func:`citeqa.index.units.split_document` with the index's settings. The sentence units go into
a small :class:`citeqa.index.corpus.CorpusIndex` of that one article (placeholder vectors), so
the text shown is :meth:`CorpusIndex.sentence_with_context`, the very call the service's
reranker makes, and BM25 is the index's own sentence lexical index.

Per answerable question (label 1 / 0):

* positive: the sentence unit holding an answer's start (the offset mapped into the article
  text), when the answer also ends inside it; questions with no such sentence are counted and
  skipped. Several gold answers (dev files) can give several positives;
* ``same_paragraph`` negatives: the answer's other sentences of the same context: the *next*
  sentence first (shown with the answer sentence as its context, so the model must judge the
  last sentence, counted as ``next_sentence``), then the best by BM25, then random ones;
* ``other_paragraph`` negatives: BM25 hits (score > 0) of the article's other contexts, the best
  one and a random one of the next few;
* ``other_article`` negatives (a seeded share of questions): a random sentence of another
  article, so the "irrelevant" end of the scale, which abstention relies on, stays low.

No negative ever holds a gold answer text (SQuAD normalisation, from a word start:
:func:`training.retriever_data.has_answer`), so a sentence that merely might answer is never
labelled 0. Per unanswerable question (SQuAD v2.0 ``is_impossible``; in the training data only
those of the split's ``train_v2`` articles, from dev-v2.0.json): its paragraph's most similar
sentences, the one holding the "plausible answer" first, then by BM25 (label 0,
``unanswerable``).

Sources: :func:`training.retriever_data.training_articles` (SQuAD v1.1 train and the split's
train articles of the dev files); the split's ``test`` and ``dev`` articles are refused. The
held-out pairs are those of the 4 ``dev`` articles of dev-v2.0.json (:func:`heldout_articles`),
never the test articles. Everything is deterministic given the seed.
"""

from __future__ import annotations

import bisect
import json
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from citeqa.eval.squad import PARAGRAPH_SEPARATOR
from citeqa.index.corpus import CorpusIndex, FileInfo, IndexConfig
from citeqa.index.documents import file_sha256
from citeqa.index.units import split_document
from citeqa.service.normalize import normalize_answer
from citeqa.service.settings import Settings
from training.retriever_data import (
    MAX_CHARS,
    OVERLAP,
    exclude_forbidden,
    has_answer,
    load_articles,
    load_split,
    padded_norm,
    training_articles,
)

# Preceding sentences the service shows with each candidate (the ``rerank_context`` default).
CONTEXT_SENTENCES: int = Settings.model_fields["rerank_context"].default

KINDS = ("positive", "next_sentence", "same_paragraph", "other_paragraph", "other_article",
         "unanswerable")


@dataclass
class Pair:
    qid: str
    title: str
    source: str
    kind: str  # one of KINDS
    q: str  # the question
    t: str  # the sentence as the cross-encoder sees it (with its context)
    y: float  # 1.0: the sentence answers the question
    span: tuple[int, int]  # the sentence unit's offsets in the article document
    context: int  # number of preceding sentences shown in ``t``
    answers: list[str] = field(default_factory=list)  # the question's gold texts ([]: none)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_json(cls, line: str) -> Pair:
        d = json.loads(line)
        d["span"] = tuple(d["span"])
        return cls(**d)


# ----------------------------------------------------------------------------- one article


@dataclass
class ArticleIndex:
    """One SQuAD article as the pipeline indexes it (sentences only, placeholder vectors)."""

    title: str
    text: str
    offsets: list[int]  # offsets[i]: where context i starts in ``text``
    index: CorpusIndex
    sentence_context: list[int]  # context number of each sentence row

    @property
    def sentences(self):
        return self.index.sentences.units

    def context_of(self, offset: int) -> int:
        return bisect.bisect_right(self.offsets, offset) - 1

    def sentence_at(self, offset: int) -> int | None:
        """Row of the sentence unit whose [start, end) holds ``offset``."""
        units = self.sentences
        i = bisect.bisect_right(self._starts, offset) - 1
        if i >= 0 and units[i].start <= offset < units[i].end:
            return i
        return None

    def rows_of_context(self, ci: int) -> list[int]:
        return self._by_context.get(ci, [])

    def shown(self, row: int, context: int = CONTEXT_SENTENCES) -> str:
        """The text the service's reranker scores for this sentence."""
        return self.index.sentence_with_context(row, context)[1]

    def __post_init__(self) -> None:
        self._starts = [u.start for u in self.sentences]
        self._by_context: dict[int, list[int]] = {}
        for r, c in enumerate(self.sentence_context):
            self._by_context.setdefault(c, []).append(r)


def squad_document(article: dict) -> tuple[str, list[int]]:
    """The article as ``load_squad`` writes it: line breaks inside a context become spaces
    (offsets unchanged), contexts joined by a blank line, a final newline."""
    offsets, parts, pos = [], [], 0
    for para in article["paragraphs"]:
        context = para["context"].replace("\r", " ").replace("\n", " ")
        offsets.append(pos)
        parts.append(context)
        pos += len(context) + len(PARAGRAPH_SEPARATOR)
    return PARAGRAPH_SEPARATOR.join(parts) + "\n", offsets


def article_index(article: dict) -> ArticleIndex:
    title = article["title"]
    text, offsets = squad_document(article)
    units = split_document(title, text, max_chars=MAX_CHARS, overlap=OVERLAP)
    index = CorpusIndex(IndexConfig(embedding_model="none (training pairs)", dim=1))
    index.paragraphs[title] = units.paragraphs
    index.files[title] = FileInfo(sha256="", paragraphs=len(units.paragraphs))
    index.sentences.add(units.sentences, np.zeros((len(units.sentences), 1), dtype=np.float32))
    index.rebuild_lexical()
    ctx = [bisect.bisect_right(offsets, u.start) - 1 for u in units.sentences]
    return ArticleIndex(title, text, offsets, index, ctx)


def _qas(article: dict) -> Iterator[tuple[int, dict]]:
    for ci, para in enumerate(article["paragraphs"]):
        for qa in para["qas"]:
            yield ci, qa


def _bm25_order(doc: ArticleIndex, question: str) -> tuple[np.ndarray, np.ndarray]:
    scores = doc.index.sentence_lexical.scores(question)
    return scores.argsort(kind="stable")[::-1], scores  # best first; ties in document order


def article_pairs(
    article: dict,
    source: str,
    rng: random.Random,
    counts: Counter,
    *,
    same_paragraph: int | None = 3,
    other_paragraph: int = 2,
    other_pool: int = 5,
    unanswerable: int = 3,
    bare_share: float = 0.0,
    seen_qids: set[str] | None = None,
    doc: ArticleIndex | None = None,
) -> list[Pair]:
    """The pairs of one article (module docstring). ``same_paragraph=None`` keeps every other
    sentence of the paragraph (held-out pairs); ``rng`` makes every random choice."""
    doc = doc or article_index(article)
    sents = doc.sentences
    norm = [padded_norm(u.text) for u in sents]
    out: list[Pair] = []

    def pair(qa: dict, kind: str, row: int, label: float) -> Pair:
        context = 0 if bare_share and rng.random() < bare_share else CONTEXT_SENTENCES
        counts[f"pairs_{kind}"] += 1
        u = sents[row]
        return Pair(qa["id"], doc.title, source, kind, qa["question"], doc.shown(row, context),
                    label, (u.start, u.end), context,
                    [a["text"] for a in qa.get("answers") or []])

    for ci, qa in _qas(article):
        if seen_qids is not None:
            if qa["id"] in seen_qids:
                counts["skipped_duplicate_id"] += 1
                continue
            seen_qids.add(qa["id"])
        order, scores = _bm25_order(doc, qa["question"])
        in_context = doc.rows_of_context(ci)
        if qa.get("is_impossible") or not qa.get("answers"):
            counts["questions_unanswerable"] += 1
            picked: list[int] = []
            for a in qa.get("plausible_answers") or []:
                row = doc.sentence_at(doc.offsets[ci] + int(a["answer_start"]))
                if row is not None and doc.sentence_context[row] == ci and row not in picked:
                    picked.append(row)
            picked += [int(r) for r in order if doc.sentence_context[r] == ci and r not in picked]
            # BM25 ranks only sentences sharing a word; the paragraph's others follow in order
            picked += [r for r in in_context if r not in picked]
            for row in picked[:unanswerable]:
                out.append(pair(qa, "unanswerable", row, 0.0))
            continue

        counts["questions_answerable"] += 1
        golds = sorted({n for n in (normalize_answer(a["text"]) for a in qa["answers"]) if n})
        positives: list[int] = []
        crossing = misaligned = 0
        for a in qa["answers"]:
            a0 = doc.offsets[ci] + int(a["answer_start"])
            a1 = a0 + len(a["text"])
            if doc.text[a0:a1] != a["text"].replace("\r", " ").replace("\n", " "):
                misaligned += 1
                continue
            row = doc.sentence_at(a0)
            if row is None:
                continue
            if a1 > sents[row].end:
                crossing += 1
                continue
            if row not in positives:
                positives.append(row)
        if not positives or not golds:
            counts["skipped_misaligned_answer" if misaligned == len(qa["answers"])
                   else "skipped_answer_crosses_sentence" if crossing
                   else "skipped_answer_in_no_sentence"] += 1
            continue
        counts["questions_kept"] += 1
        for row in positives:
            out.append(pair(qa, "positive", row, 1.0))

        def usable(row: int) -> bool:
            return row not in positives and not has_answer(norm[row], golds)

        same = [r for r in in_context if usable(r)]
        chosen: list[int] = []
        if same_paragraph is None:
            chosen = same
        elif same_paragraph > 0:
            nxt = positives[0] + 1
            if nxt in same:
                chosen.append(nxt)
            ranked = [int(r) for r in order if scores[r] > 0 and int(r) in same
                      and int(r) not in chosen]
            if ranked and len(chosen) < same_paragraph:
                chosen.append(ranked[0])
            rest = [r for r in same if r not in chosen]
            rng.shuffle(rest)
            chosen += rest[: max(0, same_paragraph - len(chosen))]
        for row in chosen:
            kind = "next_sentence" if row == positives[0] + 1 else "same_paragraph"
            out.append(pair(qa, kind, row, 0.0))

        other = [int(r) for r in order
                 if scores[r] > 0 and doc.sentence_context[r] != ci and usable(int(r))][:other_pool]
        if other and other_paragraph > 0:
            picks = [other[0]]
            rest = other[1:]
            rng.shuffle(rest)
            picks += rest[: other_paragraph - 1]
            for row in picks:
                out.append(pair(qa, "other_paragraph", row, 0.0))
    return out


# ----------------------------------------------------------------------------- many articles


def build_pairs(
    articles: list[tuple[str, dict]],
    seed: int,
    forbidden: set[str] = frozenset(),
    *,
    other_article_share: float = 0.1,
    **kwargs,
) -> tuple[list[Pair], Counter]:
    """All pairs of the given (source, article) list, deterministic in ``seed``; articles whose
    title is in ``forbidden`` are dropped (and counted), never used."""
    rng = random.Random(seed)
    counts: Counter = Counter()
    seen: set[str] = set()
    out: list[Pair] = []
    shown: list[tuple[str, list[tuple[str, str, tuple[int, int]]]]] = []  # other-article pool
    wants_other: list[int] = []  # positions in ``out`` of positives that get one
    for source, art in articles:
        if art["title"] in forbidden:
            counts["skipped_forbidden_articles"] += 1
            continue
        counts["articles"] += 1
        counts[f"articles_{source}"] += 1
        doc = article_index(art)
        pairs = article_pairs(art, source, rng, counts, seen_qids=seen, doc=doc, **kwargs)
        for p in pairs:
            if p.kind == "positive" and rng.random() < other_article_share:
                wants_other.append(len(out))
            out.append(p)
        if other_article_share > 0:
            shown.append((art["title"], [(u.text, doc.shown(r), (u.start, u.end))
                                          for r, u in enumerate(doc.sentences)]))
    # One random sentence of another article per chosen question (after the pass, so every
    # question can draw from every article).
    extra: list[Pair] = []
    done: set[str] = set()
    for pos in wants_other:
        p = out[pos]
        if p.qid in done or len(shown) < 2:
            continue
        done.add(p.qid)
        golds = [n for n in map(normalize_answer, p.answers) if n]
        for _ in range(5):
            title, sents = shown[rng.randrange(len(shown))]
            if title == p.title or not sents:
                continue
            sent, text, span = sents[rng.randrange(len(sents))]
            if golds and has_answer(padded_norm(sent), golds):
                continue
            extra.append(Pair(p.qid, title, p.source, "other_article", p.q, text, 0.0, span,
                              CONTEXT_SENTENCES, list(p.answers)))
            counts["pairs_other_article"] += 1
            break
    out += extra
    counts["pairs"] = len(out)
    counts["positives"] = sum(1 for p in out if p.y > 0)
    return out, counts


def heldout_articles(squad_dir: Path) -> list[dict]:
    """The split's 4 ``dev`` articles of dev-v2.0.json (answerable and unanswerable questions):
    the held-out set. The test articles are never returned."""
    split = load_split(squad_dir)
    dev = set(split["dev"])
    if dev & set(split["test"]):
        raise ValueError("split.json: dev and test articles overlap")
    arts = [a for a in load_articles(Path(squad_dir) / "dev-v2.0.json") if a["title"] in dev]
    return arts


def heldout_pairs(articles: list[dict], seed: int = 0) -> tuple[list[Pair], Counter]:
    """Every other sentence of the answer's paragraph, 3 BM25 sentences of other paragraphs,
    and the 3 most similar sentences of an unanswerable question's paragraph."""
    counts: Counter = Counter()
    rng = random.Random(seed)
    out: list[Pair] = []
    for art in articles:
        out += article_pairs(art, "dev-v2.0:dev", rng, counts, same_paragraph=None,
                             other_paragraph=3, other_pool=3, unanswerable=3)
    counts["pairs"] = len(out)
    return out, counts


def training_pairs(squad_dir: Path, seed: int, **kwargs) -> tuple[list[Pair], Counter]:
    split = load_split(squad_dir)
    forbidden = set(split["test"]) | set(split["dev"])
    articles = exclude_forbidden(training_articles(squad_dir), forbidden)
    return build_pairs(articles, seed, forbidden, **kwargs)


def write_pairs(path: Path, pairs: list[Pair]) -> str:
    """Write JSONL; returns its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for p in pairs:
            fh.write(p.to_json() + "\n")
    tmp.replace(path)
    return file_sha256(path)


def read_pairs(path: Path) -> list[Pair]:
    with Path(path).open(encoding="utf-8") as fh:
        return [Pair.from_json(line) for line in fh if line.strip()]


# ----------------------------------------------------------------------------- metrics


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half); nan without both classes."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels) > 0
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if not n_pos or not n_neg:
        return float("nan")
    order = scores.argsort(kind="stable")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):  # average ranks over ties
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def heldout_metrics(pairs: list[Pair], logits: np.ndarray, threshold: float = 0.21) -> dict:
    """Pair accuracy (logit > 0) and AUC; per answerable question whether its best-scored
    sentence is a positive (top-1: the within-paragraph proxy of evidence hit@1); per question
    the best sentence's probability as an answer/abstain signal (AUC of answerable against
    unanswerable, and abstention / false abstention at ``threshold``, the sentence extractor's
    default cut on that probability)."""
    logits = np.asarray(logits, dtype=np.float64)
    y = np.array([p.y for p in pairs])
    by_q: dict[str, list[int]] = {}
    for i, p in enumerate(pairs):
        by_q.setdefault(p.qid, []).append(i)
    top1, n_ans, best, answerable = 0, 0, [], []
    for idx in by_q.values():
        is_ans = any(pairs[i].kind != "unanswerable" for i in idx)
        if is_ans:
            n_ans += 1
            top1 += int(y[idx[int(np.argmax(logits[idx]))]] > 0)
        best.append(float(logits[idx].max()))
        answerable.append(is_ans)
    prob = 1 / (1 + np.exp(-np.clip(np.array(best), -50, 50)))
    answerable_arr = np.array(answerable)
    kinds = {k: [i for i, p in enumerate(pairs) if p.kind == k] for k in KINDS}
    return {
        "pairs": len(pairs), "questions": len(by_q), "answerable": n_ans,
        "unanswerable": int((~answerable_arr).sum()),
        "accuracy": round(float(((logits > 0) == (y > 0)).mean()), 4),
        "auc": round(auc(logits, y), 4),
        "top1": round(top1 / max(1, n_ans), 4),
        "abstain_auc": round(auc(prob, answerable_arr.astype(float)), 4),
        f"abstention@{threshold}": round(float((prob[~answerable_arr] < threshold).mean()), 4)
        if (~answerable_arr).any() else None,
        f"false_abstention@{threshold}": round(float((prob[answerable_arr] < threshold).mean()), 4)
        if answerable_arr.any() else None,
        "mean_logit": {k: round(float(logits[v].mean()), 3) for k, v in kinds.items() if v},
    }
