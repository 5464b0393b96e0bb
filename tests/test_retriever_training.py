"""scripts/training/retriever_data.py: the bi-encoder's training pairs are the pipeline's own
sentence units, positives hold the answer, negatives never do, and the split's test and dev
articles are never trained on. A tiny synthetic SQuAD file; no model is loaded."""

from __future__ import annotations

import json
import random
import sys
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))  # as when run: scripts/ first on the path

from training import retriever_data as rd  # noqa: E402

from citeqa.index.units import split_document  # noqa: E402

CONTEXTS = [
    "Alpha was founded in 1901 by Jane Doe. It grew quickly. The town lies on the river Zed.",
    "In 1950 the town hosted a fair. A statue of Jane Doe's horse stands in the square. "
    "The river Zed floods every spring.",
]


def qa(qid: str, question: str, context: str, answer: str, nth: int = 0) -> dict:
    start = -1
    for _ in range(nth + 1):
        start = context.index(answer, start + 1)
    return {"id": qid, "question": question, "answers": [{"text": answer, "answer_start": start}]}


def article(title: str = "Alpha") -> dict:
    c0, c1 = CONTEXTS
    return {"title": title, "paragraphs": [
        {"context": c0, "qas": [
            qa(f"{title}1", "When was Alpha founded?", c0, "1901"),
            qa(f"{title}2", "Who founded Alpha?", c0, "Jane Doe"),
            qa(f"{title}3", "How did it grow?", c0, "quickly. The town"),
            qa(f"{title}4", "What river is the town on?", c0, "Zed"),
        ]},
        {"context": c1, "qas": [
            qa(f"{title}5", "When did the town host a fair?", c1, "1950"),
            {"id": f"{title}6", "question": "Unanswerable?", "answers": [], "is_impossible": True},
        ]},
    ]}


def examples(**kwargs) -> tuple[list[rd.Example], Counter]:
    counts: Counter = Counter()
    return rd.article_examples(article(), "test", random.Random(0), counts, **kwargs), counts


def test_joined_text_keeps_every_context_at_its_offset():
    text, offsets = rd.join_contexts(CONTEXTS)
    for off, c in zip(offsets, CONTEXTS):
        assert text[off: off + len(c)] == c
    doc = rd.article_document(article())
    assert [p.text for p in doc.units.paragraphs] == CONTEXTS


def test_positive_is_the_pipeline_sentence_holding_the_answer():
    exs, counts = examples(passage_share=0.0)
    doc = rd.article_document(article())
    units = {(u.start, u.end): u.text for u in split_document("Alpha", doc.text).sentences}
    assert {e.qid for e in exs} == {"Alpha1", "Alpha2", "Alpha4", "Alpha5"}
    for e in exs:
        assert e.kind == "sentence"
        assert units[e.positive_span] == e.positive  # exactly a unit the index embeds
        assert doc.text[slice(*e.positive_span)] == e.positive
        assert e.answers[0] in e.positive
    assert counts["skipped_answer_crosses_sentence"] == 1  # "quickly. The town"
    assert counts["kept"] == 4 and counts["questions"] == 5  # the unanswerable is not a question


def test_negatives_never_hold_the_answer():
    exs, _ = examples(passage_share=0.0, other_paragraph_share=1.0)
    by_id = {e.qid: e for e in exs}
    for e in exs:
        golds = [rd.normalize_answer(a) for a in e.answers]
        for neg in [e.negative, *e.same_paragraph_negatives, *e.bm25_negatives]:
            if neg is not None:
                assert not rd.contains_answer(neg, golds), (e.qid, neg)
                assert neg != e.positive
    # "Jane Doe's horse" holds "Jane Doe" (possessive): never a negative for "Who founded Alpha?"
    jane = by_id["Alpha2"]
    assert all("Jane Doe" not in n for n in [jane.negative or "", *jane.bm25_negatives])
    # "The river Zed floods" (other paragraph) holds "Zed": never a negative for question 4
    assert all("Zed" not in n for n in [by_id["Alpha4"].negative or "", *by_id["Alpha4"].bm25_negatives])
    # same-paragraph negatives are the other sentences of the answer's context only
    assert set(by_id["Alpha1"].same_paragraph_negatives) == {"It grew quickly.", "The town lies on the river Zed."}


def test_bm25_negatives_come_from_other_paragraphs():
    exs, _ = examples(passage_share=0.0, other_paragraph_share=1.0)
    e = next(e for e in exs if e.qid == "Alpha5")  # "When did the town host a fair?" (context 1)
    assert e.bm25_negatives == ["The town lies on the river Zed."]  # shares "town"; context 0
    assert e.negative_source == "bm25_other_paragraph"


def test_passage_examples_hold_the_answer():
    exs, counts = examples(passage_share=1.0)
    assert counts["kept_passage"] == len(exs) == 4
    for e in exs:
        assert e.kind == "passage" and e.positive in CONTEXTS and e.answers[0] in e.positive
        assert e.negative is None or not rd.contains_answer(e.negative, [rd.normalize_answer(e.answers[0])])


def test_test_and_dev_articles_are_excluded(tmp_path: Path):
    split = {"rule": "x", "test": ["Secret"], "dev": ["Tuning"], "train_v2": ["Alpha"], "train_v1_only": ["Beta"]}
    (tmp_path / "split.json").write_text(json.dumps(split))
    (tmp_path / "train-v1.1.json").write_text(json.dumps({"data": [article("Gamma")]}))
    dev2 = [article("Alpha"), article("Secret"), article("Tuning")]
    (tmp_path / "dev-v2.0.json").write_text(json.dumps({"data": dev2}))
    (tmp_path / "dev-v1.1.json").write_text(json.dumps({"data": [article("Beta"), article("Secret")]}))
    pairs = rd.training_articles(tmp_path)
    assert sorted(a["title"] for _, a in pairs) == ["Alpha", "Beta", "Gamma"]
    exs, counts = rd.build_examples(pairs + [("x", article("Secret"))], seed=1, forbidden={"Secret", "Tuning"})
    assert {e.title for e in exs} == {"Alpha", "Beta", "Gamma"}
    assert counts["skipped_forbidden_articles"] == 1
    # a test article inside train-v1.1 is an error, not silently used
    (tmp_path / "train-v1.1.json").write_text(json.dumps({"data": [article("Secret")]}))
    with pytest.raises(ValueError, match="Secret"):
        rd.training_articles(tmp_path)


def test_examples_are_deterministic_and_round_trip(tmp_path: Path):
    pairs = [("a", article("Alpha")), ("b", article("Beta"))]
    one, _ = rd.build_examples(pairs, seed=3)
    two, _ = rd.build_examples(pairs, seed=3)
    assert one == two
    sha = rd.write_examples(tmp_path / "d.jsonl", one)
    assert rd.read_examples(tmp_path / "d.jsonl") == one and sha == rd.file_sha256(tmp_path / "d.jsonl")


def test_eval_gold_is_the_sentence_holding_the_answer_start():
    es = rd.eval_set([article("Alpha"), article("Beta")])
    assert len(es.questions) == 10 and es.skipped_no_unit == 0  # the crossing answer counts by its start
    assert len(es.sentences) == 12
    assert all(len(g) == 1 for g in es.gold)
    i = es.questions.index("When did the town host a fair?", 5)  # Beta's copy
    assert es.sentences[next(iter(es.gold[i]))] == "In 1950 the town hosted a fair."
    assert es.sentence_titles[next(iter(es.gold[i]))] == "Beta"


def test_batch_mask_spares_questions_about_the_same_answer():
    import train_retriever as tr

    exs, _ = examples(passage_share=0.0)
    a, b = (next(e for e in exs if e.qid == q) for q in ("Alpha1", "Alpha4"))
    twin = rd.Example(**{**a.__dict__, "qid": "twin", "question": "In which year was Alpha founded?"})
    batch = [a, twin, b]
    cands = [e.positive for e in batch] + ["Nothing about it.", "The river Zed floods every spring."]
    golds = [[rd.normalize_answer(x) for x in e.answers] for e in batch]
    mask = tr.batch_mask(batch, cands, golds)
    assert not mask[0, 0] and mask[0, 1] and mask[1, 0]  # same positive: not each other's negative
    assert not mask[0, 2] and not mask[0, 3]
    assert not mask[2, 0] and mask[2, 4]  # holds "Zed"
    assert not mask.diagonal().any()
