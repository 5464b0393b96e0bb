"""Answer-text normalisation, shared by the extractor (near-duplicate answers) and the
evaluation metrics (EM/F1): one definition, so "the same answer" means the same thing in both.

It follows the official SQuAD evaluation script (lower-case, delete punctuation, drop articles,
collapse whitespace), extended to Unicode punctuation so curly quotes in our articles do not
cost points: every Unicode punctuation character is deleted like ASCII punctuation, except
dashes (en, em, ...), which separate words ("interest—securing") and so become a space.
"""

from __future__ import annotations

import re
import string
import unicodedata

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


_ASCII_PUNCT = frozenset(string.punctuation)


def _strip_punct(ch: str) -> str:
    if ch in _ASCII_PUNCT:
        return ""  # as the official script: "U.S." -> "us", "650-750" -> "650750"
    category = unicodedata.category(ch)
    if category == "Pd":
        return " "
    return "" if category.startswith("P") else ch


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, no punctuation (ASCII and Unicode), no articles, single spaces."""
    text = "".join(_strip_punct(ch) for ch in text.lower())
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())
