"""Paragraphs, sentences and passage windows with exact character offsets.

This is the only module that decides where text units begin and end. Every unit carries
``start``/``end`` as Python ``str`` indices into the decoded file text (end exclusive), and
``file_text[start:end] == text`` holds for all of them; everything downstream carries these
integers and never searches for text again.

Definitions (the product contract):
- A paragraph is a maximal block of non-blank lines (a blank line is empty or whitespace only).
  Paragraphs are numbered from 1 in file order, counting every block, noise included. The
  paragraph's span is the block without its leading and trailing whitespace.
- Noise paragraphs (image alt text, "RELATED" markers, headings, photo captions) keep their
  number but are not retrieved.
- Long paragraphs become overlapping windows of whole sentences; a window keeps its paragraph
  number.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

# Bump when any rule below changes what units are produced: the index manifest records it,
# so an index built with other rules is rebuilt instead of silently mixing the two.
UNITS_VERSION = 1


@dataclass(frozen=True, slots=True)
class Unit:
    """A span of one file: a paragraph, a sentence or a passage window."""

    file: str
    paragraph: int
    start: int
    end: int
    text: str


@dataclass(frozen=True, slots=True)
class Paragraph(Unit):
    noise: bool = False


@dataclass(frozen=True, slots=True)
class DocumentUnits:
    paragraphs: list[Paragraph]
    passages: list[Unit]
    sentences: list[Unit]


# --------------------------------------------------------------------------------------------
# Paragraphs

_LINE = re.compile(r"[^\n]*\n|[^\n]+")


def _lines(text: str) -> Iterator[tuple[int, str]]:
    """Lines with their start offsets; the newline stays with its line."""
    for m in _LINE.finditer(text):
        yield m.start(), m.group()


def paragraph_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of every paragraph, in file order, whitespace-trimmed."""
    spans: list[tuple[int, int]] = []
    block_start: int | None = None
    block_end = 0
    for offset, line in _lines(text):
        if line.strip():
            if block_start is None:
                block_start = offset
            block_end = offset + len(line)
        elif block_start is not None:
            spans.append(_trim(text, block_start, block_end))
            block_start = None
    if block_start is not None:
        spans.append(_trim(text, block_start, block_end))
    return spans


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


# Image alt text as exported by the sites we ingest: "dan-300x300", "aron-lund-300x300".
_ALT_TEXT = re.compile(r"[A-Za-z][\w.]*(?:-[\w.]+)*-\d{2,4}x\d{2,4}(?:\.\w{3,4})?")
_ALT_PREFIX = re.compile(_ALT_TEXT.pattern + r"\s*")
_CAPTION_PREFIX = re.compile(r"^(?:header\s+)?(?:photo|image|picture|caption|file photo)\s*:", re.I)
# Photo credit at the end of a caption: "(Alex Brandon/AP)".
_PHOTO_CREDIT = re.compile(r"\([^()]{0,80}/\s*(?:AP|AFP|Reuters|Getty[^()]*|EPA[^()]*)\)\s*$")
_SENTENCE_END = re.compile(r"[.!?…][\"'”’)\]]*$")


def is_noise(text: str) -> bool:
    """True for blocks that carry no answerable prose: alt text, markers, headings, captions."""
    stripped = text.strip()
    if not stripped or _ALT_TEXT.fullmatch(stripped):
        return True
    if _CAPTION_PREFIX.match(stripped) or _PHOTO_CREDIT.search(stripped):
        return True
    words = stripped.split()
    # Headings and markers ("RELATED", "A March to War?") are short and lack sentence prose:
    # no sentence-final punctuation, or only a handful of words.
    if len(words) < 4:
        return True
    if len(words) < 8 and "\n" not in stripped:
        # A short Title Case line is a heading even with a question mark: "A March to War?"
        long_words = [w for w in words if sum(c.isalpha() for c in w) >= 4]
        if long_words and all(w[0].isupper() for w in long_words):
            return True
    return len(words) < 12 and not _SENTENCE_END.search(stripped)


# --------------------------------------------------------------------------------------------
# Sentences

# Abbreviations after which a period does not end a sentence (lower-cased, without the dot).
_ABBREVIATIONS = frozenset(
    """
    mr mrs ms dr prof gen lt col maj capt sgt cpl adm cmdr gov sen rep rev hon pres st jr sr
    no nos vol vols fig figs ed eds dept univ inc ltd co corp bros est approx vs etc al
    jan feb mar apr jun jul aug sep sept oct nov dec mon tue tues wed thu thurs fri sat sun
    ave blvd rd mt ft
    """.split()
)
# Words that, capitalised after "U.S." and the like, almost always start a new sentence.
_SENTENCE_STARTERS = frozenset(
    """
    the a an he she it they we i you this that these those there but and or so yet however
    in on at for if when while as after before his her its their our my what why how who
    """.split()
)
# Candidate boundary: terminal punctuation, optional closing quotes/brackets, whitespace.
_BOUNDARY = re.compile(r"[.!?…]+[\"'”’)\]]*(?=\s+)")
_NEXT_START = re.compile(r"\s+([\"'“‘(\[]*)(\S)")
_WORD_BEFORE = re.compile(r"(\S+)$")
_INITIALISM = re.compile(r"^(?:[A-Za-z]\.)+[A-Za-z]?$")


def _is_boundary(text: str, punct_start: int, punct_end: int) -> bool:
    nxt = _NEXT_START.match(text, punct_end)
    if nxt is None:
        return False
    first = nxt.group(2)
    if not (first.isupper() or first.isdigit() or nxt.group(1)):
        return False  # "e.g. the", "approx. five": a lower-case continuation
    if text[punct_start] != ".":
        return True
    word_match = _WORD_BEFORE.search(text, 0, punct_start + 1)
    word = word_match.group(1) if word_match else ""
    word = word.lstrip("\"'“‘([")
    bare = word.rstrip(".").lower()
    if bare in _ABBREVIATIONS:
        return False
    if len(bare) == 1 and bare.isalpha():
        return False  # an initial: "John F. Kennedy"
    if _INITIALISM.match(word.rstrip(".") + "."):
        # "U.S." ends a sentence only when a typical sentence opener follows.
        next_word = re.match(r"\w+", text[nxt.start(2):])
        return bool(next_word and next_word.group().lower() in _SENTENCE_STARTERS)
    return True


def sentence_spans(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """Sentence (start, end) spans within text[start:end], whitespace-trimmed, in order.

    Line breaks inside a block also separate sentences (a speaker line after alt text), and a
    leading alt-text token run into the prose ("thanassis-300x300Thanassis: ...") is dropped.
    """
    end = len(text) if end is None else end
    spans: list[tuple[int, int]] = []
    for line_start, line_end in _line_spans(text, start, end):
        cursor = line_start
        for m in _BOUNDARY.finditer(text, line_start, line_end):
            if _is_boundary(text[:line_end], m.start(), m.end()):
                spans.append((cursor, m.end()))
                cursor = m.end()
        spans.append((cursor, line_end))
    out: list[tuple[int, int]] = []
    for s, e in spans:
        s, e = _trim(text, s, e)
        alt = _ALT_PREFIX.match(text, s, e)
        if alt:
            s = alt.end()
        if s < e:
            out.append((s, e))
    return out


def _line_spans(text: str, start: int, end: int) -> Iterator[tuple[int, int]]:
    pos = start
    while pos < end:
        nl = text.find("\n", pos, end)
        stop = end if nl == -1 else nl
        yield pos, stop
        pos = stop + 1


# --------------------------------------------------------------------------------------------
# Passage windows


def window_spans(
    sentences: list[tuple[int, int]], max_chars: int, overlap: int
) -> list[tuple[int, int]]:
    """Group consecutive sentences into windows of at most ``max_chars`` (a single longer
    sentence is its own window), consecutive windows sharing ``overlap`` sentences."""
    if not sentences:
        return []
    if sentences[-1][1] - sentences[0][0] <= max_chars:
        return [(sentences[0][0], sentences[-1][1])]
    windows: list[tuple[int, int]] = []
    i = 0
    while i < len(sentences):
        j = i + 1
        while j < len(sentences) and sentences[j][1] - sentences[i][0] <= max_chars:
            j += 1
        windows.append((sentences[i][0], sentences[j - 1][1]))
        if j >= len(sentences):
            break
        i = max(i + 1, j - overlap)
    return windows


def split_document(
    file: str, text: str, *, max_chars: int = 900, overlap: int = 1
) -> DocumentUnits:
    """All units of one document."""
    paragraphs: list[Paragraph] = []
    passages: list[Unit] = []
    sentences: list[Unit] = []
    for number, (p_start, p_end) in enumerate(paragraph_spans(text), start=1):
        p_text = text[p_start:p_end]
        noise = is_noise(p_text)
        paragraphs.append(Paragraph(file, number, p_start, p_end, p_text, noise))
        if noise:
            continue
        spans = [
            (s, e) for s, e in sentence_spans(text, p_start, p_end) if not is_alt_text(text[s:e])
        ]
        sentences.extend(Unit(file, number, s, e, text[s:e]) for s, e in spans)
        passages.extend(
            Unit(file, number, s, e, text[s:e]) for s, e in window_spans(spans, max_chars, overlap)
        )
    return DocumentUnits(paragraphs, passages, sentences)


def is_alt_text(text: str) -> bool:
    return _ALT_TEXT.fullmatch(text.strip()) is not None


def paragraph_at(paragraphs: list[Paragraph], offset: int) -> Paragraph | None:
    """The paragraph whose span contains ``offset`` (None between paragraphs)."""
    lo, hi = 0, len(paragraphs)
    while lo < hi:
        mid = (lo + hi) // 2
        if paragraphs[mid].end <= offset:
            lo = mid + 1
        else:
            hi = mid
    if lo < len(paragraphs) and paragraphs[lo].start <= offset < paragraphs[lo].end:
        return paragraphs[lo]
    return None
