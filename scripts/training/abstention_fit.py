"""Fitting the reader extractor's abstention model (``citeqa.service.abstention``): a logistic
regression, and writing the fitted model where the service loads it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from citeqa.service.abstention import FILE_NAME, AbstentionModel


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


def save_model(model: AbstentionModel, model_dir: Path) -> Path:
    """Write ``model`` next to its reader, as the service reads it."""
    path = Path(model_dir) / FILE_NAME
    path.write_text(model.to_json(), encoding="utf-8")
    return path
