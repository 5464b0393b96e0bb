"""Whether to answer at all, with the reader in the loop: the cross-encoder's relevance of the
answer sentence and the reader's span-minus-null margin, combined by a logistic model.

The model is fitted by ``scripts/reader_abstention.py`` on the 4 SQuAD dev articles of
``split.json`` plus our question set (labels: answerable or not) and written next to the reader
as ``abstention.json``; its ``threshold`` is the probability below which the service abstains,
chosen there at a cap on false abstention. Without the file the reader extractor keeps the
cross-encoder's score and the sentence extractor's threshold.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

FILE_NAME = "abstention.json"
log = logging.getLogger(__name__)
# A window where the reader found no span at all has best span score -inf; -30 logits below
# the null score is already "certainly no answer" and keeps the features finite.
MARGIN_FLOOR = -30.0


def rerank_logit(probability: float) -> float:
    """Back from the answer's 0..1 score (sigmoid of the cross-encoder logit) to the logit."""
    p = min(max(probability, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


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

    def probability(self, rerank_probability: float, margin: float) -> float:
        z = self.rerank * rerank_logit(rerank_probability) + self.reader * margin + self.bias
        return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))

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
            # An OSError, like a missing model file: the CLI and the server report it as such.
            raise OSError(f"{path}: not an abstention model ({exc}); refit it with "
                          f"scripts/reader_abstention.py --write {model_dir}") from None
        onnx = Path(model_dir) / "model.onnx"
        if model.reader_sha256 and onnx.is_file() and reader_fingerprint(onnx) != model.reader_sha256:
            log.warning("%s was fitted for another reader model: ignored (refit it with "
                        "scripts/reader_abstention.py --write %s)", path, model_dir)
            return None
        return model

    def save(self, model_dir: Path) -> Path:
        path = Path(model_dir) / FILE_NAME
        path.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")
        return path


def reader_fingerprint(onnx_file: Path) -> str:
    digest = hashlib.sha256()
    with open(onnx_file, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-3, steps: int = 50) -> np.ndarray:
    """Weights then bias of a logistic regression, by Newton's method (a tiny convex problem;
    ``l2`` keeps it defined when the classes separate)."""
    xb = np.hstack([np.asarray(x, dtype=np.float64), np.ones((len(x), 1))])
    y = np.asarray(y, dtype=np.float64)
    w = np.zeros(xb.shape[1])
    for _ in range(steps):
        p = 1 / (1 + np.exp(-np.clip(xb @ w, -50, 50)))
        grad = xb.T @ (p - y) + l2 * w
        hess = (xb * (p * (1 - p))[:, None]).T @ xb + l2 * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return w
