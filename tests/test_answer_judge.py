"""scripts/answer_judge.py: a judge's low score turns an answer into an abstention."""

from __future__ import annotations

import math
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))  # as when run: scripts/ first on the path

import answer_judge  # noqa: E402


def _row(answerable: bool, hit: float, abstained: bool, z: float | None) -> dict:
    metrics = ({"evidence_hit@1": hit, "false_abstain": float(abstained), "abstain_acc": None}
               if answerable else
               {"evidence_hit@1": None, "false_abstain": None, "abstain_acc": float(abstained)})
    return {"answerable": answerable, "metrics": metrics,
            **({"judge": {"j": z}} if z is not None else {})}


ROWS = [
    _row(True, 1.0, False, 2.0),     # a hit the judge believes (p 0.88)
    _row(True, 1.0, False, -3.0),    # a hit the judge doubts (p 0.05)
    _row(True, 0.0, True, None),     # the service abstained already
    _row(False, 0.0, False, -3.0),   # an unanswerable question answered; the judge doubts it
    _row(False, 0.0, False, 1.0),    # answered, and the judge believes it (p 0.73)
]


def test_threshold_zero_changes_nothing() -> None:
    m = answer_judge.judged(ROWS, "j", 0.0)
    assert m == {"evidence_hit@1": 2 / 3, "abstain_acc": 0.0, "false_abstain": 1 / 3}


def test_a_doubted_answer_becomes_an_abstention() -> None:
    m = answer_judge.judged(ROWS, "j", 0.1)
    assert m["evidence_hit@1"] == 1 / 3        # the doubted hit is lost...
    assert m["false_abstain"] == 2 / 3         # ...as a false abstention
    assert m["abstain_acc"] == 0.5             # and the doubted unanswerable one is abstained on
    assert answer_judge.judged(ROWS, "j", 0.9) == {
        "evidence_hit@1": 0.0, "abstain_acc": 1.0, "false_abstain": 1.0}
    assert math.isnan(answer_judge.judged(ROWS[:3], "j", 0.1)["abstain_acc"])
