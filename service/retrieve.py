"""Hybrid retrieval: BM25 and dense search over passages and sentences, fused by reciprocal
rank; each sentence's score also counts its passage's score, its context."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from citeqa.index.corpus import CorpusIndex
from citeqa.index.embed import Embedder
from citeqa.index.lexical import Bm25Index
from citeqa.index.store import Store
from citeqa.index.units import Unit

MODES = ("hybrid", "lexical", "dense")


@dataclass(frozen=True, slots=True)
class Scored:
    id: int  # row in its store
    unit: Unit
    score: float  # fused retrieval score (higher is better)
    dense: float = 0.0  # cosine similarity to the question (0 in lexical mode)


@dataclass(frozen=True, slots=True)
class Retrieved:
    passages: list[Scored]
    sentences: list[Scored]


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest positive scores, best first."""
    k = min(k, int((scores > 0).sum()))
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    part = np.argpartition(-scores, k - 1)[:k]
    return part[np.argsort(-scores[part], kind="stable")]


def rrf(rankings: list[list[int]], k: int, weights: list[float] | None = None
        ) -> dict[int, float]:
    """Reciprocal rank fusion: sum of w / (k + rank) over the rankings an item appears in."""
    fused: dict[int, float] = {}
    for r, ranking in enumerate(rankings):
        w = 1.0 if weights is None else weights[r]
        for rank, item in enumerate(ranking, start=1):
            fused[item] = fused.get(item, 0.0) + w / (k + rank)
    return fused


class HybridRetriever:
    def __init__(self, embedder: Embedder | None, *, mode: str = "hybrid", rrf_k: int = 60,
                 candidates: int = 50, context_weight: float = 0.5,
                 context_passages: int = 3, dense_weight: float = 1.0) -> None:
        if mode not in MODES:
            raise ValueError(f"retrieval mode must be one of {MODES}")
        if mode != "lexical" and embedder is None:
            raise ValueError(f"{mode} retrieval needs an embedder")
        self.embedder = embedder
        self.mode = mode
        self.rrf_k = rrf_k
        self.candidates = candidates
        self.context_weight = context_weight
        self.dense_weight = dense_weight  # relative to BM25's 1.0 in the fusion
        # Sentences of the best passages are candidates even when they rank poorly on their
        # own: "He said it was foreseen." needs its paragraph to be found.
        self.context_passages = context_passages

    def embed(self, question: str) -> np.ndarray | None:
        if self.mode == "lexical":
            return None
        return self.embedder.encode_query(question)  # type: ignore[union-attr]

    def _fuse(self, question: str, vector: np.ndarray | None, store: Store, lexical: Bm25Index
              ) -> tuple[dict[int, float], dict[int, float]]:
        rankings: list[list[int]] = []
        weights: list[float] = []
        dense: dict[int, float] = {}
        if vector is not None:
            ids, scores = store.search(vector[None, :], self.candidates)
            dense = {int(i): float(s) for i, s in zip(ids[0], scores[0]) if i >= 0}
            rankings.append(list(dense))
            weights.append(self.dense_weight)
        if self.mode != "dense":
            rankings.append([int(i) for i in _top(lexical.scores(question), self.candidates)])
            weights.append(1.0)
        return rrf(rankings, self.rrf_k, weights), dense

    def run(self, question: str, index: CorpusIndex, vector: np.ndarray | None = None
            ) -> Retrieved:
        if vector is None:
            vector = self.embed(question)
        p_fused, p_dense = self._fuse(question, vector, index.passages, index.passage_lexical)
        passages = sorted(
            (Scored(i, index.passages.units[i], s, p_dense.get(i, 0.0))
             for i, s in p_fused.items()),
            key=lambda c: -c.score,
        )
        # A paragraph's context score is its best passage's fused score.
        context: dict[tuple[str, int], float] = {}
        for p in passages:
            key = (p.unit.file, p.unit.paragraph)
            context[key] = max(context.get(key, 0.0), p.score)

        s_fused, s_dense = self._fuse(question, vector, index.sentences, index.sentence_lexical)
        top_keys = {(p.unit.file, p.unit.paragraph) for p in passages[: self.context_passages]}
        for file, paragraph in top_keys:
            for i in index.sentences_of(file, paragraph):
                s_fused.setdefault(i, 0.0)
        if vector is not None:
            # Dense similarity of every candidate, for the answer score when no reranker runs.
            missing = [i for i in s_fused if i not in s_dense]
            if missing:
                sims = index.sentences.vectors_for(missing) @ vector
                s_dense.update(zip(missing, map(float, sims)))
        sentences = sorted(
            (
                Scored(i, index.sentences.units[i],
                       s + self.context_weight * context.get(
                           (index.sentences.units[i].file, index.sentences.units[i].paragraph), 0.0),
                       s_dense.get(i, 0.0))
                for i, s in s_fused.items()
            ),
            key=lambda c: -c.score,
        )
        return Retrieved(passages, sentences)
