"""Expected answer types: a question that asks for a quantity is not answered by text without one.

The cross-encoder judges whether a sentence is *about* the question; it cannot tell that "how
many Italian troops remain in Baghdad?" is not answered by "He thanked Italy for keeping forces
in Baghdad". Classic QA systems check the expected answer type for exactly this. We do it only
for question forms whose type is unambiguous and cheap to check in text: amounts of money,
ages, counts, measures and years. Every other question is left alone (``expected_type`` returns
None), so the check can only remove candidates for those forms.
"""

from __future__ import annotations

import re
from enum import Enum


class AnswerType(str, Enum):
    MONEY = "money"  # how much did it cost / spend / pay
    AGE = "age"  # how old
    COUNT = "count"  # how many X / how much X
    MEASURE = "measure"  # how long / far / big / tall, what percentage
    YEAR = "year"  # what / which / in what year


_TIME_UNIT = r"(?:second|minute|hour|day|night|week|month|year|decade|century|centurie)s?"
_NUMBER_WORD = (
    r"(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen"
    r"|fifteen|sixteen|seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|sixty|seventy"
    r"|eighty|ninety|hundreds?|thousands?|millions?|billions?|trillions?|dozens?|half|third"
    r"|quarter|tens)"
)
_NUMBER = rf"(?:\d[\d,.]*|\b{_NUMBER_WORD}\b)"
_NUMBER_RE = re.compile(_NUMBER, re.IGNORECASE)
# A number that is part of a time expression ("two days after", "10 years") answers "how long"
# or "when", not "how many troops".
_TIMED_RE = re.compile(rf"{_NUMBER}(?:[\s-]+{_NUMBER})*[\s-]+{_TIME_UNIT}\b(?![\s-]+(?:old|of age))",
                       re.IGNORECASE)
_MONEY_RE = re.compile(
    rf"[$€£¥]\s?\d|\b(?:dollars?|euros?|pounds? sterling|yen|yuan|rupees?|francs?|marks?)\b"
    rf"|{_NUMBER}\s+(?:million|billion|trillion)\b|\b\d[\d,.]*\s?(?:m|bn)\b", re.IGNORECASE)
_YEAR_RE = re.compile(r"\b\d{3,4}s?\b|\b(?:eighteen|nineteen|twenty)[a-z-]*\b", re.IGNORECASE)

_COST = r"\b(?:cost|costs|spend|spent|pay|paid|price|priced|worth|charge|charged|fund|funded|budget)\b"
_FORMS: list[tuple[re.Pattern[str], AnswerType]] = [
    (re.compile(rf"\bhow much\b.*{_COST}", re.IGNORECASE), AnswerType.MONEY),
    (re.compile(r"\bhow old\b|\bat what age\b|\bwhat age\b", re.IGNORECASE), AnswerType.AGE),
    (re.compile(r"\b(?:what|which|in what|in which) year\b", re.IGNORECASE), AnswerType.YEAR),
    (re.compile(r"\bhow (?:long|far|big|large|tall|high|wide|deep|heavy|fast)\b"
                r"|\bwhat (?:percentage|percent|proportion|share|fraction)\b", re.IGNORECASE),
     AnswerType.MEASURE),
    (re.compile(r"\bhow (?:many|much)\b", re.IGNORECASE), AnswerType.COUNT),
]
_COUNTED_TIME = re.compile(rf"\bhow many {_TIME_UNIT}\b", re.IGNORECASE)


def expected_type(question: str) -> AnswerType | None:
    """The answer type a question asks for, when its form says so unambiguously."""
    for pattern, kind in _FORMS:
        if pattern.search(question):
            if kind is AnswerType.COUNT and _COUNTED_TIME.search(question):
                return AnswerType.MEASURE  # "how many years": a time expression is the answer
            return kind
    return None


_WORD_RE = re.compile(r"[A-Za-z][A-Za-z.'’-]*")
# Words that end the counted phrase of "how many <phrase> did ..." (verbs, prepositions).
_PHRASE_END = {
    "did", "do", "does", "were", "was", "are", "is", "have", "has", "had", "will", "would",
    "can", "could", "should", "might", "must", "in", "of", "at", "on", "from", "to", "for",
    "with", "by", "during", "after", "before", "per", "remain", "remained", "died", "live",
    "lived", "work", "worked",
}
_STOP = {"the", "a", "an", "and", "or", "of", "in", "on", "at", "to", "for", "by", "with", "its",
         "their", "his", "her", "about", "some", "than", "more", "less", "over", "nearly",
         "almost", "around", "roughly", "approximately", "least", "most", "what", "which", "who"}


def _stem(word: str) -> str:
    """Crude plural folding, the same on both sides: troops/troop, bases/base, allies/ally."""
    w = word.lower().strip(".'’")
    if len(w) > 4 and w.endswith("ies"):
        return w[:-3] + "y"
    if len(w) > 4 and w.endswith(("ches", "shes", "sses", "xes", "zes")):
        return w[:-2]
    if len(w) > 3 and w.endswith("s") and not w.endswith("ss"):
        return w[:-1]
    return w


def counted_noun(question: str) -> str | None:
    """The head of the counted phrase: "how many Italian troops remain ..." -> "troop"."""
    m = re.search(r"\bhow (?:many|much)\s+(.*)", question, re.IGNORECASE)
    if not m:
        return None
    head = None
    for word in _WORD_RE.findall(m.group(1)):
        if word.lower() in _PHRASE_END:
            break
        head = word
    return _stem(head) if head else None


def _count_candidates(text: str, question: str) -> bool:
    """A number that could be the count asked for. Not one that counts time ("two days after"),
    and not one that counts something else the question names: for "how many missiles hit the
    two bases?", "two bases" is given, not the answer."""
    text = _TIMED_RE.sub(" ", text)
    noun = counted_noun(question)
    named = {_stem(w) for w in _WORD_RE.findall(question) if w.lower() not in _STOP}
    for m in _NUMBER_RE.finditer(text):
        following = [_stem(w) for w in _WORD_RE.findall(text[m.end():m.end() + 40])[:3]
                     if w.lower() not in _STOP]
        if noun is None or noun in following:
            return True
        if not any(w in named for w in following):
            return True
    return False


def satisfies(kind: AnswerType | None, text: str, question: str = "") -> bool:
    """Whether ``text`` contains something of the type ``question`` asks for (true for None)."""
    if kind is None:
        return True
    if kind is AnswerType.MONEY:
        return _MONEY_RE.search(text) is not None
    if kind is AnswerType.YEAR:
        return _YEAR_RE.search(text) is not None
    if kind is AnswerType.MEASURE:
        return _NUMBER_RE.search(text) is not None or "%" in text
    if kind is AnswerType.AGE:  # "62", "aged 62", "62 years old"; not "two days after"
        return _NUMBER_RE.search(_TIMED_RE.sub(" ", text)) is not None
    return _count_candidates(text, question)
