"""Whether to answer at all: the one home of abstention.

- The calibrated defaults: the sentence extractor's threshold on its 0..1 cross-encoder score,
  and the reader's fitted model (``abstention.json`` next to the reader).
- The setting: ``abstain_threshold`` overrides the extractor's calibrated threshold.
- The cut: answers come best first and the first one below the threshold ends the list, so the
  best answer alone decides whether the question is answered. ``QA`` and the evaluation
  harness both cut with :func:`cut`.

The reader's model combines the cross-encoder's raw logit for the answer sentence with the
reader's span-minus-null margin in a logistic model. It is fitted by
``scripts/reader_abstention.py`` (training code, not part of the service) on the 4 SQuAD dev
articles of ``split.json`` plus our question set; serving only loads the fitted file.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from itertools import takewhile
from operator import attrgetter
from pathlib import Path
from typing import TypeVar

from citeqa.index.documents import file_sha256
from citeqa.index.errors import ModelNotFound

# The sentence extractor's abstention threshold on its 0..1 cross-encoder score: the sweep's
# recommendation on the SQuAD tuning articles + our set (docs/evaluation.md, "Abstention
# threshold"); CITEQA_ABSTAIN_THRESHOLD overrides it.
SENTENCE_THRESHOLD = 0.21

FILE_NAME = "abstention.json"
log = logging.getLogger(__name__)
# A window where the reader found no span at all has best span score -inf; -30 logits below
# the null score is already "certainly no answer" and keeps the features finite.
MARGIN_FLOOR = -30.0


A = TypeVar("A")


def resolve_threshold(setting: float | None, calibrated: float) -> float:
    """The threshold in force: the setting when it is set, else the extractor's calibrated one."""
    return calibrated if setting is None else setting


def cut(answers: Iterable[A], threshold: float,
        score: Callable[[A], float] = attrgetter("score")) -> list[A]:
    """The answers (best first) up to the first one scoring below ``threshold``."""
    return list(takewhile(lambda a: score(a) >= threshold, answers))


def reader_margin(span_score: float, null_score: float) -> float:
    """Span score minus null score (> 0: the reader prefers the span to "no answer")."""
    return max(span_score, MARGIN_FLOOR + null_score) - null_score


@dataclass(frozen=True)
class AbstentionModel:
    rerank: float  # weight of the cross-encoder logit
    reader: float  # weight of the reader's span-minus-null margin
    bias: float
    threshold: float  # abstain below this probability
    fitted_on: str = ""
    metrics: dict = field(default_factory=dict)
    # sha256 of the reader's model.onnx it was fitted with: a retrained reader's margins mean
    # something else, so a stale model is ignored rather than trusted.
    reader_sha256: str = ""

    def probability(self, rerank_logit: float, margin: float) -> float:
        z = self.rerank * rerank_logit + self.reader * margin + self.bias
        return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def load(cls, model_dir: Path) -> AbstentionModel | None:
        """The model next to a reader, or None when that reader has none."""
        path = Path(model_dir) / FILE_NAME
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            model = cls(rerank=float(data["rerank"]), reader=float(data["reader"]),
                        bias=float(data["bias"]), threshold=float(data["threshold"]),
                        fitted_on=str(data.get("fitted_on", "")), metrics=data.get("metrics", {}),
                        reader_sha256=str(data.get("reader_sha256", "")))
        except (ValueError, KeyError, TypeError) as exc:
            # Like a missing model file: the CLI and the server report it as such.
            raise ModelNotFound(f"{path}: not an abstention model ({exc}); refit it with "
                                f"scripts/reader_abstention.py --write {model_dir}") from None
        onnx = Path(model_dir) / "model.onnx"
        if model.reader_sha256 and onnx.is_file() and file_sha256(onnx) != model.reader_sha256:
            log.warning("%s was fitted for another reader model: ignored (refit it with "
                        "scripts/reader_abstention.py --write %s)", path, model_dir)
            return None
        return model
