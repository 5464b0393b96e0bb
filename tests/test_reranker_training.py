"""scripts/training/reranker_data.py: the answer-sentence cross-encoder's pairs are the pipeline's
sentence units shown as the service shows them; positives are the sentences holding the
answer, negatives never hold it, unanswerable questions give label 0, the builder is
deterministic in its seed, and the split's test and dev articles are never trained on. A tiny
synthetic SQuAD file; no model is loaded."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from training import reranker_data as rd  # scripts/ is on sys.path (conftest)
from training.retriever_data import contains_answer

from citeqa.index.units import split_document
from citeqa.service.normalize import normalize_answer

CONTEXTS = [
    "Alpha was founded in 1901 by Jane Doe. It grew quickly. The town lies on the river Zed.",
    "In 1950 the town hosted a fair. A statue of Jane Doe's horse stands in the square. "
    "The river Zed floods every spring. The fair returned in 1960.",
]


def qa(qid: str, question: str, context: str, answer: str) -> dict:
    return {"id": qid, "question": question,
            "answers": [{"text": answer, "answer_start": context.index(answer)}]}


def article(title: str = "Alpha") -> dict:
    c0, c1 = CONTEXTS
    return {"title": title, "paragraphs": [
        {"context": c0, "qas": [
            {**qa(f"{title}1", "When was Alpha founded?", c0, "1901")},
            qa(f"{title}2", "Who founded Alpha?", c0, "Jane Doe"),
            qa(f"{title}3", "How did it grow?", c0, "quickly. The town"),  # crosses a boundary
            qa(f"{title}4", "What river is the town on?", c0, "Zed"),
        ]},
        {"context": c1, "qas": [
            qa(f"{title}5", "When did the town host a fair?", c1, "1950"),
            {"id": f"{title}6", "question": "When did the town host a horse race?", "answers": [],
             "is_impossible": True,
             "plausible_answers": [{"text": "1960", "answer_start": c1.index("1960")}]},
        ]},
    ]}


def pairs_of(art: dict | None = None, seed: int = 0, **kwargs) -> tuple[list[rd.Pair], Counter]:
    counts: Counter = Counter()
    return rd.article_pairs(art or article(), "test", random.Random(seed), counts, **kwargs), counts


def test_document_and_shown_text_are_the_services():
    doc = rd.article_index(article())
    text, offsets = rd.squad_document(article())
    assert doc.text == text and text == "\n\n".join(CONTEXTS) + "\n"  # as load_squad writes it
    for off, c in zip(offsets, CONTEXTS):
        assert text[off: off + len(c)] == c
    units = split_document("Alpha", text).sentences
    assert [u.text for u in doc.sentences] == [u.text for u in units]
    # with the preceding sentence of the same paragraph, never one of another paragraph
    assert rd.CONTEXT_SENTENCES == 1
    assert doc.shown(1) == "Alpha was founded in 1901 by Jane Doe. It grew quickly."
    assert doc.shown(3) == "In 1950 the town hosted a fair."
    assert doc.shown(1, 0) == "It grew quickly."


def test_positives_are_the_answer_sentences_with_exact_offsets():
    pairs, counts = pairs_of()
    doc = rd.article_index(article())
    units = {(u.start, u.end): u.text for u in doc.sentences}
    pos = [p for p in pairs if p.y == 1.0]
    assert {p.qid for p in pos} == {"Alpha1", "Alpha2", "Alpha4", "Alpha5"}
    assert all(p.kind == "positive" for p in pos) and len(pos) == 4
    for p in pos:
        sentence = units[p.span]  # exactly a unit the index holds
        assert doc.text[slice(*p.span)] == sentence
        assert p.answers[0] in sentence
        assert p.t.endswith(sentence) and p.t == doc.shown(doc.sentences.index(
            next(u for u in doc.sentences if (u.start, u.end) == p.span)))
    by_q = {p.qid: p for p in pos}
    assert doc.text[slice(*by_q["Alpha1"].span)] == "Alpha was founded in 1901 by Jane Doe."
    assert doc.text[slice(*by_q["Alpha4"].span)] == "The town lies on the river Zed."
    assert counts["skipped_answer_crosses_sentence"] == 1  # "quickly. The town"
    assert counts["questions_kept"] == 4 and counts["questions_unanswerable"] == 1


def test_negatives_never_hold_the_answer():
    pairs, counts = pairs_of(same_paragraph=None, other_paragraph=5)
    doc = rd.article_index(article())
    for p in pairs:
        if p.y == 0 and p.kind != "unanswerable":
            sentence = doc.text[slice(*p.span)]
            golds = [normalize_answer(a) for a in p.answers]
            assert not contains_answer(sentence, golds), (p.qid, sentence)
    negs = {p.qid: [doc.text[slice(*n.span)] for n in pairs if n.qid == p.qid and n.y == 0]
            for p in pairs}
    # "Jane Doe's horse" holds "Jane Doe": never a negative for "Who founded Alpha?"
    assert not any("Jane Doe" in s for s in negs["Alpha2"])
    # "The river Zed floods" (other paragraph) holds "Zed"
    assert not any("Zed" in s for s in negs["Alpha4"])
    # same-paragraph negatives: the answer paragraph's other sentences, the next one first
    alpha1 = [p for p in pairs if p.qid == "Alpha1" and p.kind in ("next_sentence", "same_paragraph")]
    assert [doc.text[slice(*p.span)] for p in alpha1][0] == "It grew quickly."
    assert alpha1[0].kind == "next_sentence"
    assert alpha1[0].t == "Alpha was founded in 1901 by Jane Doe. It grew quickly."  # holds 1901
    assert {doc.text[slice(*p.span)] for p in alpha1} == {"It grew quickly.",
                                                          "The town lies on the river Zed."}
    # other-paragraph negatives are BM25 hits of other contexts
    other5 = [doc.text[slice(*p.span)] for p in pairs if p.qid == "Alpha5" and p.kind == "other_paragraph"]
    assert other5 == ["The town lies on the river Zed."]
    assert counts["pairs_positive"] == 4


def test_unanswerable_questions_are_labelled_zero():
    pairs, _ = pairs_of(unanswerable=2)
    doc = rd.article_index(article())
    un = [p for p in pairs if p.qid == "Alpha6"]
    assert len(un) == 2 and all(p.y == 0.0 and p.kind == "unanswerable" for p in un)
    # the plausible answer's sentence first, then the paragraph's most similar by BM25
    assert doc.text[slice(*un[0].span)] == "The fair returned in 1960."
    assert doc.text[slice(*un[1].span)] == "In 1950 the town hosted a fair."
    assert all(p.span[0] >= rd.squad_document(article())[1][1] for p in un)  # its paragraph


def test_build_is_deterministic_by_seed_and_round_trips(tmp_path: Path):
    arts = [("a", article("Alpha")), ("b", article("Beta")), ("c", article("Gamma"))]
    one, c1 = rd.build_pairs(arts, seed=3, other_article_share=0.5)
    two, c2 = rd.build_pairs(arts, seed=3, other_article_share=0.5)
    assert one == two and c1 == c2
    assert c1["pairs_other_article"] > 0
    for p in one:
        if p.kind == "other_article":
            assert p.title != p.qid.rstrip("0123456789") and p.y == 0.0
    others = [rd.build_pairs(arts, seed=s, other_article_share=0.5)[0] for s in range(4, 12)]
    assert any(o != one for o in others)  # the seed matters
    sha = rd.write_pairs(tmp_path / "p.jsonl", one)
    assert rd.read_pairs(tmp_path / "p.jsonl") == one
    assert sha == rd.file_sha256(tmp_path / "p.jsonl")


def test_no_dev_or_test_articles(tmp_path: Path):
    split = {"rule": "x", "test": ["Secret"], "dev": ["Tuning"], "train_v2": ["Alpha"],
             "train_v1_only": ["Beta"]}
    (tmp_path / "split.json").write_text(json.dumps(split))
    (tmp_path / "train-v1.1.json").write_text(json.dumps({"data": [article("Gamma")]}))
    dev2 = [article("Alpha"), article("Secret"), article("Tuning")]
    (tmp_path / "dev-v2.0.json").write_text(json.dumps({"data": dev2}))
    (tmp_path / "dev-v1.1.json").write_text(json.dumps({"data": [article("Beta"), article("Secret")]}))
    pairs, counts = rd.training_pairs(tmp_path, seed=1)
    assert {p.title for p in pairs} == {"Alpha", "Beta", "Gamma"}
    assert {p.title for p in pairs if p.kind == "unanswerable"} <= {"Alpha", "Beta", "Gamma"}
    assert "dev-v2.0:train_v2" in {p.source for p in pairs if p.kind == "unanswerable"}
    assert counts["articles"] == 3
    dropped, c = rd.build_pairs([("x", article("Secret")), ("y", article("Gamma"))], seed=1,
                                forbidden={"Secret", "Tuning"})
    assert {p.title for p in dropped} == {"Gamma"} and c["skipped_forbidden_articles"] == 1
    # held-out: the dev articles only, never the test ones
    held = rd.heldout_articles(tmp_path)
    assert [a["title"] for a in held] == ["Tuning"]
    hp, _ = rd.heldout_pairs(held)
    assert {p.title for p in hp} == {"Tuning"}
    # a test article inside train-v1.1 is an error, not silently used
    (tmp_path / "train-v1.1.json").write_text(json.dumps({"data": [article("Secret")]}))
    with pytest.raises(ValueError, match="Secret"):
        rd.training_pairs(tmp_path, seed=1)


def test_heldout_metrics():
    pairs, _ = rd.heldout_pairs([article()])
    y = np.array([p.y for p in pairs])
    perfect = rd.heldout_metrics(pairs, np.where(y > 0, 5.0, -5.0))
    assert perfect["accuracy"] == 1.0 and perfect["auc"] == 1.0 and perfect["top1"] == 1.0
    assert perfect["abstain_auc"] == 1.0 and perfect["abstention@0.21"] == 1.0
    assert perfect["false_abstention@0.21"] == 0.0
    flat = rd.heldout_metrics(pairs, np.zeros(len(pairs)))
    assert flat["auc"] == 0.5
    assert rd.auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == 0.75


def test_stages_take_new_pairs_and_their_share_of_unanswerables():
    import train_reranker as tr

    arts = [(s, article(t)) for s, t in (("a", "Alpha"), ("b", "Beta"), ("c", "Gamma"), ("d", "Delta"))]
    pairs, _ = rd.build_pairs(arts, seed=1)
    una = {i for i, p in enumerate(pairs) if p.kind == "unanswerable"}
    s1 = tr.stage_rows(pairs, seed=5, offset=0, examples=10, unanswerable=4, stage=1)
    s2 = tr.stage_rows(pairs, seed=5, offset=10, examples=10, unanswerable=4, stage=2)
    assert s1 == tr.stage_rows(pairs, seed=5, offset=0, examples=10, unanswerable=4, stage=1)
    assert len(s1) == len(s2) == 14 and len(set(s1)) == 14
    assert not (set(s1) - una) & (set(s2) - una)  # later stages see new answerable pairs
    assert len(set(s1) & una) == len(set(s2) & una) == 4 and not set(s1) & set(s2) & una
    b = tr.plan_batches(pairs, s1, 4, seed=7)
    assert b == tr.plan_batches(pairs, s1, 4, seed=7) and sorted(sum(b, [])) == sorted(s1)
