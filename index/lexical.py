"""BM25 over text units (bm25s), with one tokenizer for documents and queries."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import bm25s
import numpy as np

_WORD = re.compile(r"\w+", re.UNICODE)
# Small English stop list: BM25's idf handles the rest, these only add noise to short queries.
_STOPWORDS = frozenset(
    """a an and are as at be been but by did do does for from had has have he her his how i if
    in into is it its of on or she so than that the their them then there these they this to
    was we were what when where which who whom why will with would you s t""".split()
)


@lru_cache(maxsize=1)
def _stemmer():
    import Stemmer

    return Stemmer.Stemmer("english")


def tokenize(text: str) -> list[str]:
    # Apostrophes (straight or curly) join possessives, so "Iran’s" and "Iran's" match "Iran".
    words = [w for w in _WORD.findall(text.lower().replace("’", "'")) if w not in _STOPWORDS]
    return _stemmer().stemWords(words)


class Bm25Index:
    """BM25 scores for every unit, built from the unit texts in unit-table order."""

    def __init__(self, bm25: bm25s.BM25 | None, size: int) -> None:
        self._bm25 = bm25
        self.size = size

    @classmethod
    def build(cls, texts: list[str]) -> Bm25Index:
        if not texts:
            return cls(None, 0)
        bm25 = bm25s.BM25()
        # A unit with no indexable word still needs a row, so ids stay aligned with the table.
        bm25.index([tokenize(t) or ["\x00empty"] for t in texts], show_progress=False)
        return cls(bm25, len(texts))

    def save(self, path: Path) -> None:
        if self._bm25 is not None:
            self._bm25.save(str(path))

    @classmethod
    def load(cls, path: Path, size: int) -> Bm25Index:
        if size == 0:
            return cls(None, 0)
        bm25 = bm25s.BM25.load(str(path))
        n_docs = bm25.scores["num_docs"]
        if n_docs != size:
            raise ValueError(f"lexical index has {n_docs} rows, unit table {size}")
        return cls(bm25, size)

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every unit for the query (zeros when nothing matches)."""
        tokens = tokenize(query)
        if self._bm25 is None or not tokens:
            return np.zeros(self.size, dtype=np.float32)
        known = [t for t in tokens if t in self._bm25.vocab_dict]
        if not known:
            return np.zeros(self.size, dtype=np.float32)
        return np.asarray(self._bm25.get_scores(known), dtype=np.float32)
