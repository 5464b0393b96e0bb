"""Abstention: the reader's abstention model, its fitting, and how the service applies a
threshold (the extractor's calibrated default unless the settings name one)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from citeqa.service.abstention import (
    FILE_NAME, MARGIN_FLOOR, SENTENCE_THRESHOLD, AbstentionModel, cut,
    reader_margin, resolve_threshold,
)
from citeqa.index.documents import file_sha256
from citeqa.service.extract import Extracted
from training.abstention_fit import fit_logistic, save_model

from citeqa.index.errors import ModelNotFound
from tests.conftest import SHIPPED_READER, link_reader


def test_fit_logistic_recovers_known_weights() -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(20000, 2))
    p = 1 / (1 + np.exp(-(2.0 * x[:, 0] - 1.0 * x[:, 1] + 0.5)))
    y = (rng.random(len(p)) < p).astype(float)
    w = fit_logistic(x, y)
    assert w == pytest.approx([2.0, -1.0, 0.5], abs=0.1)


def test_fit_logistic_stays_finite_when_classes_separate() -> None:
    x = np.array([[-2.0], [-1.0], [1.0], [2.0]])
    w = fit_logistic(x, np.array([0.0, 0.0, 1.0, 1.0]))
    assert np.all(np.isfinite(w)) and w[0] > 0


def test_features_and_probability() -> None:
    assert reader_margin(7.0, 2.0) == 5.0
    assert reader_margin(float("-inf"), 4.0) == MARGIN_FLOOR  # no span at all: floored
    model = AbstentionModel(rerank=0.1, reader=0.05, bias=-0.5, threshold=0.4)
    # Raw cross-encoder logits go in: nothing converts a 0..1 score back into a logit.
    low, high = model.probability(-1.4, 1.0), model.probability(2.2, 1.0)
    assert 0 < low < high < 1
    assert model.probability(2.2, 8.0) > high  # a clearer span raises it too
    z = 0.1 * 2.2 + 0.05 * 1.0 - 0.5
    assert high == pytest.approx(1 / (1 + math.exp(-z)))
    assert model.probability(1e6, 0.0) == pytest.approx(1.0)  # extreme logits stay finite


def test_threshold_resolution_and_cut() -> None:
    assert resolve_threshold(None, 0.3) == 0.3
    assert resolve_threshold(0.0, 0.3) == 0.0  # an explicit 0 is a setting, not "unset"

    class A:
        def __init__(self, score: float) -> None:
            self.score = score

    answers = [A(0.9), A(0.5), A(0.1), A(0.8)]
    assert [a.score for a in cut(answers, 0.5)] == [0.9, 0.5]
    assert cut(answers, 0.95) == []
    assert cut([{"score": 0.6}, {"score": 0.2}], 0.5, score=lambda a: a["score"]) == [
        {"score": 0.6}]


def test_model_file_round_trip_and_errors(tmp_path: Path) -> None:
    assert AbstentionModel.load(tmp_path) is None
    model = AbstentionModel(rerank=0.08, reader=0.06, bias=-0.7, threshold=0.31, fitted_on="x",
                            metrics={"tune_auc": 0.66})
    save_model(model, tmp_path)
    assert AbstentionModel.load(tmp_path) == model
    (tmp_path / FILE_NAME).write_text(json.dumps({"rerank": 1}), encoding="utf-8")
    with pytest.raises(ModelNotFound, match="not an abstention model.*reader_abstention.py --write"):
        AbstentionModel.load(tmp_path)


def test_a_model_fitted_for_another_reader_is_ignored(tmp_path: Path, caplog) -> None:
    (tmp_path / "model.onnx").write_bytes(b"reader one")
    fitted = AbstentionModel(rerank=0.1, reader=0.1, bias=0.0, threshold=0.3,
                             reader_sha256=file_sha256(tmp_path / "model.onnx"))
    save_model(fitted, tmp_path)
    assert AbstentionModel.load(tmp_path) == fitted
    (tmp_path / "model.onnx").write_bytes(b"reader two, retrained")
    with caplog.at_level("WARNING"):
        assert AbstentionModel.load(tmp_path) is None
    assert "fitted for another reader model" in caplog.text


def test_the_shipped_reader_has_a_fitted_model() -> None:
    model = AbstentionModel.load(SHIPPED_READER)
    assert model is not None and 0 < model.threshold < 1
    assert model.rerank > 0 and model.reader > 0  # both signals count towards answering
    assert "dev articles" in model.fitted_on
    assert model.reader_sha256 == file_sha256(SHIPPED_READER / "model.onnx")


def _reader_copy(tmp_path: Path, model: AbstentionModel | None) -> Path:
    """The shipped reader's files, linked, with ``model`` as its abstention model."""
    target = link_reader(tmp_path / "reader")
    if model is not None:
        save_model(model, target)
    return target


def test_reader_answers_carry_the_abstention_models_probability(make_qa, tmp_path) -> None:
    question = "how many U.S. troops were in Iraq before the Soleimani killing?"
    # A model that only listens to the reader: answer when its span clears null by 2+ logits.
    model = AbstentionModel(rerank=0.0, reader=1.0, bias=-2.0, threshold=0.5)
    qa = make_qa(extractor="reader", reader_abstention="fitted",
                 reader_path=_reader_copy(tmp_path, model))
    assert qa.abstain_threshold == 0.5
    candidates = qa.candidates(question)
    assert candidates
    for a in candidates:
        assert a.score == pytest.approx(1 / (1 + math.exp(-(a.reader_margin - 2.0))))
        assert a.logit is not None and math.isfinite(a.logit)  # the cross-encoder's, kept
    response = qa.ask(question)
    expected = []
    for a in candidates:  # the list stops at the first answer below the threshold
        if a.score < 0.5:
            break
        expected.append(a.text)
    assert [a.text for a in response.answers] == expected
    assert response.no_answer == (not expected)


def test_an_abstention_model_can_silence_every_answer(make_qa, tmp_path) -> None:
    never = AbstentionModel(rerank=0.0, reader=0.0, bias=-10.0, threshold=0.5)
    qa = make_qa(extractor="reader", reader_abstention="fitted",
                 reader_path=_reader_copy(tmp_path, never))
    response = qa.ask("what did Esper say about the impact on operations in Syria?")
    assert response.no_answer and response.answers == [] and response.passages
    # An explicit threshold in the settings wins over the model's.
    qa = make_qa(extractor="reader", reader_abstention="fitted",
                 reader_path=tmp_path / "reader", abstain_threshold=0.0)
    assert qa.abstain_threshold == 0.0
    assert not qa.ask("what did Esper say about the impact on operations in Syria?").no_answer


def test_thresholds_default_to_the_extractors(make_qa, tmp_path) -> None:
    sentence = make_qa(start=False)
    assert sentence.abstain_threshold == SENTENCE_THRESHOLD
    plain = make_qa(start=False, extractor="reader", reader_path=_reader_copy(tmp_path, None))
    assert plain.extractor.abstention is None
    assert plain.abstain_threshold == SENTENCE_THRESHOLD  # the cross-encoder's score stays
    assert make_qa(start=False, abstain_threshold=0.5).abstain_threshold == 0.5
    # The default reader answers exactly when the sentence path does: its abstention model
    # is not even read.
    never = AbstentionModel(rerank=0.0, reader=0.0, bias=-10.0, threshold=0.5)
    (tmp_path / "n").mkdir()
    narrowing = make_qa(start=False, extractor="reader",
                        reader_path=_reader_copy(tmp_path / "n", never))
    assert narrowing.extractor.abstention is None
    assert narrowing.abstain_threshold == SENTENCE_THRESHOLD


def test_the_reader_only_narrows_the_sentence_answers(make_qa) -> None:
    """Same answers, same order, same scores as the sentence extractor: each reader answer is
    a phrase inside the sentence answer, which it carries as its context."""
    sentence, reader = make_qa(), make_qa(extractor="reader")
    for question in ("how many U.S. troops were in Iraq before the Soleimani killing?",
                     "what did Esper say about the impact on operations in Syria?",
                     "what is the tallest mountain in Europe?"):
        s, r = sentence.ask(question), reader.ask(question)
        assert s.no_answer == r.no_answer
        assert len(s.answers) == len(r.answers)
        for a, b in zip(s.answers, r.answers):
            assert b.score == a.score
            if b.context is not None:
                assert (b.context.start, b.context.end, b.context.text) == (
                    a.citation.start, a.citation.end, a.text)
                assert a.citation.start <= b.citation.start <= b.citation.end <= a.citation.end
            else:
                assert b.citation == a.citation


def test_answers_below_the_threshold_end_the_list(make_qa) -> None:
    """Best first: once an answer falls below the threshold, later ones are dropped too, so the
    first answer alone decides whether the question is answered."""
    qa = make_qa(abstain_threshold=0.5)

    class Fixed:
        default_threshold = 0.5

        def warm_up(self) -> None: ...

        def close(self) -> None: ...

        def run(self, question, ranking, index):
            unit = index.sentences.units[0]
            return [Extracted(unit.file, unit.paragraph, unit.start, unit.end, unit.text, s)
                    for s in (0.9, 0.2, 0.8)]

    qa.extractor = Fixed()
    assert [a.score for a in qa.ask("anything?").answers] == [0.9]
