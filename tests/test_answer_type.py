"""Expected answer types: which questions ask for a quantity, and which texts contain one."""

from __future__ import annotations

import pytest

from citeqa.service.answer_type import AnswerType, counted_noun, expected_type, satisfies


@pytest.mark.parametrize("question, kind", [
    ("how many missiles did Iran fire?", AnswerType.COUNT),
    ("How much oil does Iraq export?", AnswerType.COUNT),
    ("how much did the drone strike cost?", AnswerType.MONEY),
    ("how old was Soleimani when he was killed?", AnswerType.AGE),
    ("In what year did the troops withdraw?", AnswerType.YEAR),
    ("how long did the campaign last?", AnswerType.MEASURE),
    ("how many years did the war last?", AnswerType.MEASURE),
    ("what percentage of voters supported it?", AnswerType.MEASURE),
    ("why was the counter-ISIS campaign paused?", None),
    ("who succeeded Soleimani?", None),
    ("when did U.S. troops withdraw from Iraq?", None),
])
def test_expected_type(question, kind) -> None:
    assert expected_type(question) == kind


@pytest.mark.parametrize("question, noun", [
    ("how many Italian troops remain in Baghdad?", "troop"),
    ("how many U.S. bases in Iraq did Iran's missiles attack?", "base"),
    ("how many missiles did Iran fire at the U.S. bases in Iraq?", "missile"),
    ("how many countries are allies?", "country"),
    ("why was it paused?", None),
])
def test_counted_noun(question, noun) -> None:
    assert counted_noun(question) == noun


@pytest.mark.parametrize("question, text, ok", [
    # a count of the thing asked about, or of something the question does not name
    ("how many U.S. troops were in Iraq?", "The U.S. had about 5,200 troops in Iraq.", True),
    ("how many soldiers did France send?", "France sent two hundred men.", True),
    ("how many bases did Iran's missiles hit?", "Missiles hit two U.S. bases in Iraq.", True),
    # no number, or only numbers that count time or something the question already names
    ("how many Italian troops remain in Baghdad?", "He thanked Italy for keeping forces in Baghdad.", False),
    ("how many missiles did Iran fire at the U.S. bases?", "Iran's attacks on two U.S. bases.", False),
    ("how many soldiers left?", "Two days after the strike, soldiers left.", False),
    ("how old was he?", "Smith, 62, said so.", True),
    ("how old was he?", "He was 62 years old.", True),
    ("how old was he?", "Two days after he was killed.", False),
    ("how much did the strike cost?", "It cost $2 million.", True),
    ("how much did the strike cost?", "The strike cost 40 million euros.", True),
    ("how much did the strike cost?", "Two days after the strike.", False),
    ("in what year did it end?", "It ended in 2011.", True),
    ("in what year did it end?", "It ended after the war.", False),
    ("how long did it last?", "It lasted ten years.", True),
    ("how many years did it last?", "It lasted ten years.", True),
    ("what percentage voted?", "About 40% voted.", True),
])
def test_satisfies(question, text, ok) -> None:
    assert satisfies(expected_type(question), text, question) is ok


def test_untyped_questions_accept_anything() -> None:
    assert satisfies(None, "", "why?")


def test_pipeline_abstains_when_no_top_sentence_has_the_quantity(bundled_qa) -> None:
    # The articles name Italy's forces in Baghdad but never their number.
    response = bundled_qa.ask("how many Italian troops remain in Baghdad?")
    assert response.no_answer and response.answers == []
    assert response.passages  # the evidence that was considered is still listed


def test_pipeline_prefers_the_top_sentence_with_the_quantity(bundled_qa) -> None:
    response = bundled_qa.ask("how many U.S. troops were in Iraq before the Soleimani killing?")
    assert not response.no_answer
    assert "5,200" in response.answers[0].text


def test_the_check_can_be_turned_off(make_qa) -> None:
    qa = make_qa(answer_type_window=0)
    assert not qa.ask("how many Italian troops remain in Baghdad?").no_answer

