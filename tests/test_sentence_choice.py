"""scripts/sentence_choice.py: strict (first-ranked sentence) and lenient (cited span) top-1."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))  # as when run: scripts/ first on the path

import sentence_choice  # noqa: E402

from citeqa.eval.dataset import EvalQuestion, Span  # noqa: E402

QUESTION = "who is the chairman of the Joint Chiefs of Staff?"


def _ranked(qa):
    index = qa.index
    ranking = qa.reranker.run(QUESTION, qa.retriever.run(QUESTION, index), index)
    return ranking, qa.extractor.run(QUESTION, ranking, index)[0]


def test_strict_counts_the_first_sentence_and_lenient_the_cited_span(bundled_qa):
    ranking, answer = _ranked(bundled_qa)
    first = ranking.sentences[0].unit
    outside = [s.unit for s in ranking.sentences
               if s.unit.file != answer.file or s.unit.end <= answer.start
               or s.unit.start >= answer.end][0]
    questions = [
        # gold = the first-ranked sentence itself: a hit both ways
        EvalQuestion("a", QUESTION, True, ["x"], evidence=[Span(first.file, first.start, first.end)]),
        # gold = a sentence the answer does not cite: a miss both ways
        EvalQuestion("b", QUESTION, True, ["x"],
                     evidence=[Span(outside.file, outside.start, outside.end)]),
        # unanswerable questions are not counted
        EvalQuestion("c", QUESTION, False, []),
    ]
    m = sentence_choice.measure(bundled_qa, questions, squad=False)
    assert m["questions"] == 2
    assert m["strict"] == 0.5 and m["lenient"] == 0.5
    assert m["sentences_per_answer"] >= 1.0


def test_squad_gold_is_the_answer_span(bundled_qa):
    ranking, answer = _ranked(bundled_qa)
    first = ranking.sentences[0].unit
    # Evidence (the paragraph) is ignored for SQuAD: only the answer span decides.
    q = EvalQuestion("a", QUESTION, True, ["x"],
                     evidence=[Span(first.file, first.start, first.end)],
                     answer_spans=[Span("elsewhere.txt", 0, 5)])
    assert sentence_choice.measure(bundled_qa, [q], squad=True)["strict"] == 0.0
    q.answer_spans = [Span(first.file, first.start + 1, first.start + 4)]
    assert sentence_choice.measure(bundled_qa, [q], squad=True)["strict"] == 1.0
