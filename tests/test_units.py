"""Paragraphs, sentences and windows: exact offsets and the numbering definition."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from citeqa.index.units import (
    is_noise, paragraph_at, paragraph_spans, sentence_spans, split_document, window_spans,
)

from .conftest import CORPUS


def reference_paragraphs(text: str) -> list[str]:
    """The definition, written independently: maximal blocks of non-blank lines, stripped."""
    blocks, current = [], []
    for line in text.split("\n"):
        if line.strip():
            current.append(line)
        elif current:
            blocks.append("\n".join(current).strip())
            current = []
    if current:
        blocks.append("\n".join(current).strip())
    return blocks


ALPHABET = st.sampled_from(list("ab Z.?!\n\n\n \t\r“”’—é.") + ["U.S.", "Gen. ", "Jan. 3", "RELATED",
                                                          "dan-300x300", " The ", "\u00a0", "😀"])
TEXTS = st.lists(ALPHABET, max_size=120).map("".join)


@settings(max_examples=300, deadline=None)
@given(TEXTS)
def test_every_unit_is_an_exact_slice_and_numbering_matches_definition(text: str) -> None:
    units = split_document("f.txt", text, max_chars=60, overlap=1)
    assert [p.text for p in units.paragraphs] == reference_paragraphs(text)
    assert [p.paragraph for p in units.paragraphs] == list(range(1, len(units.paragraphs) + 1))
    for u in [*units.paragraphs, *units.passages, *units.sentences]:
        assert text[u.start:u.end] == u.text
        assert u.text and u.text == u.text.strip()
        containing = paragraph_at(units.paragraphs, u.start)
        assert containing is not None and containing.paragraph == u.paragraph
        assert u.end <= containing.end
    noise = {p.paragraph for p in units.paragraphs if p.noise}
    assert not any(u.paragraph in noise for u in [*units.passages, *units.sentences])


@settings(max_examples=200, deadline=None)
@given(TEXTS)
def test_sentences_are_ordered_disjoint_and_windows_cover_them(text: str) -> None:
    units = split_document("f.txt", text, max_chars=40, overlap=1)
    for p in units.paragraphs:
        sents = [s for s in units.sentences if s.paragraph == p.paragraph]
        for a, b in zip(sents, sents[1:]):
            assert a.end <= b.start
        wins = [w for w in units.passages if w.paragraph == p.paragraph]
        for s in sents:  # every sentence lies inside some window of its paragraph
            assert any(w.start <= s.start and s.end <= w.end for w in wins)


def test_crlf_and_whitespace_lines_separate_paragraphs() -> None:
    text = "First para line one.\r\nline two.\r\n \t \r\nSecond para.\r\n\r\n\r\nThird."
    spans = paragraph_spans(text)
    assert [text[s:e] for s, e in spans] == ["First para line one.\r\nline two.", "Second para.", "Third."]


def test_abbreviations_initials_and_quotes() -> None:
    text = ("Gen. Qassem Soleimani was killed in a U.S. drone strike on Jan. 3 in Baghdad. "
            "“We knew there’d be risk.” But he said the threat was too great. "
            "John F. Kennedy spoke. The U.S. The army left — quickly. Done?! Yes.")
    got = [text[s:e] for s, e in sentence_spans(text)]
    assert got == [
        "Gen. Qassem Soleimani was killed in a U.S. drone strike on Jan. 3 in Baghdad.",
        "“We knew there’d be risk.”",
        "But he said the threat was too great.",
        "John F. Kennedy spoke.",
        "The U.S.",
        "The army left — quickly.",
        "Done?!",
        "Yes.",
    ]


def test_alt_text_prefix_is_not_part_of_a_sentence() -> None:
    text = "thanassis-300x300Thanassis: Military cooperation will shift. It is over."
    got = [text[s:e] for s, e in sentence_spans(text)]
    assert got == ["Thanassis: Military cooperation will shift.", "It is over."]
    text = "dan-300x300\nDan: The assassination will have impact. Next one."
    assert [text[s:e] for s, e in sentence_spans(text)][0] == "Dan: The assassination will have impact."


def test_noise_blocks() -> None:
    assert is_noise("RELATED")
    assert is_noise("dan-300x300")
    assert is_noise("Collateral Damage: Partnership with Iraq")
    assert is_noise("A March to War?")
    assert is_noise("President Trump listens to a question in the Oval Office. (Alex Brandon/AP)")
    assert is_noise("Header photo: People hold posters of the general.")
    assert not is_noise("The fight against ISIS is on hold.")
    assert not is_noise("Regardless, the damage has been done and cannot be undone by anyone now.")


def test_windows_split_long_paragraphs_with_overlap() -> None:
    sentences = [(i * 100, i * 100 + 90) for i in range(10)]
    wins = window_spans(sentences, max_chars=300, overlap=1)
    assert wins[0] == (0, 290)
    assert all(e - s <= 300 for s, e in wins)
    assert wins[-1][1] == 990
    for (s1, e1), (s2, e2) in zip(wins, wins[1:]):
        assert s2 < e1  # consecutive windows share a sentence
    assert window_spans([(0, 50)], 10, 1) == [(0, 50)]  # one long sentence is its own window


def test_bundled_corpus_paragraph_counts_match_the_corpus_readme() -> None:
    expected = {"000_75612bb2e23990a7.txt": 25, "001_2994c3cb9d8ee344.txt": 12,
                "002_dd898a8205fc9529.txt": 43}
    for name, count in expected.items():
        text = (CORPUS / name).read_text(encoding="utf-8")
        units = split_document(name, text)
        assert len(units.paragraphs) == count
        assert len(re.split(r"\n\s*\n", text.strip())) == count
        noise = [p.text for p in units.paragraphs if p.noise]
        assert "RELATED" in noise or name != "000_75612bb2e23990a7.txt"
