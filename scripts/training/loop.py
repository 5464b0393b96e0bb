"""What every training script's stage loop shares: RNG state, atomic checkpoints that resume
only on the same data and arguments, and the step log (loss, seconds per step, ETA).

A stage is checkpointed every ``--checkpoint-minutes`` and at its end; ``--resume`` continues
from the last checkpoint and, because the batches are a pure function of the arguments and the
RNG state is restored, ends with the same weights as an uninterrupted run
(tests/test_training_loop.py).
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np


def pin_threads(threads: int) -> None:
    """``threads`` intra-op threads and one inter-op thread. torch accepts the inter-op
    setting once per process, before any parallel work: a second stage (or a test) in the
    same process keeps the first one's."""
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass


def rng_state() -> dict:
    import torch

    return {"python": random.getstate(), "numpy": np.random.get_state(),
            "torch": torch.get_rng_state()}


def set_rng_state(state: dict) -> None:
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def save_checkpoint(path: Path, state: dict) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)  # atomic: a crash mid-save never corrupts the last good checkpoint


@dataclass
class StageCheckpoint:
    """``<stage>/checkpoint.pt``: model, optimizer, scheduler, RNG, step and elapsed seconds,
    with the arguments that fix the stage's batches (``fixed``) and the data's sha256."""

    path: Path
    fixed: dict[str, Any]
    data_sha256: str

    def save(self, model, optimizer, scheduler, step: int, elapsed: float,
             extra: dict[str, Any] | None = None) -> None:
        save_checkpoint(self.path, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "rng": rng_state(), "step": step,
            "elapsed": elapsed, "fixed": self.fixed, "data_sha256": self.data_sha256,
            **(extra or {})})

    def resume(self, model, optimizer, scheduler) -> tuple[int, float]:
        """Load the checkpoint into the three objects and the RNGs: (step, elapsed seconds).
        Refuses (SystemExit with the reason) when there is none, or it was made from other
        data or arguments, since it would then continue a different stage."""
        import torch

        if not self.path.exists():
            raise SystemExit(f"nothing to resume: {self.path}")
        state = torch.load(self.path, weights_only=False)
        if state["data_sha256"] != self.data_sha256:
            raise SystemExit("the prepared data changed since the checkpoint; refusing to resume")
        if state["fixed"] != self.fixed:
            raise SystemExit(f"arguments differ from the checkpoint's: {state['fixed']} vs "
                             f"{self.fixed}")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        return state["step"], state["elapsed"]

    def refuse_to_overwrite(self) -> None:
        if self.path.exists():
            raise SystemExit(f"{self.path} exists: use --resume, or remove {self.path.parent}")


@dataclass
class StepLog:
    """Averages the loss over each ``every`` steps and logs it with seconds per step and an
    ETA; appends the same rows to ``path`` (``loss.jsonl``) unless it is None."""

    total_steps: int
    start_time: float
    every: int
    log: logging.Logger
    path: Path | None = None
    _loss: float = 0.0
    _n: int = 0
    _window_start: float = field(default_factory=time.time)

    def add(self, step: int, loss: float, lr: float) -> None:
        self._loss, self._n = self._loss + loss, self._n + 1
        if step % self.every and step != self.total_steps:
            return
        now = time.time()
        s_per_step = (now - self._window_start) / self._n
        eta = datetime.now(timezone.utc) + timedelta(seconds=s_per_step * (self.total_steps - step))
        row = {"step": step, "loss": round(self._loss / self._n, 4), "lr": lr,
               "elapsed_s": round(now - self.start_time, 1), "s_per_step": round(s_per_step, 3)}
        self.log.info("step %d/%d loss %.4f %.2fs/step lr %.2e elapsed %.0fs ETA %s", step,
                      self.total_steps, row["loss"], s_per_step, lr, row["elapsed_s"],
                      eta.strftime("%H:%M UTC"))
        if self.path is not None:
            with self.path.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
        self._loss, self._n, self._window_start = 0.0, 0, now


def optimizer_step(model, optimizer, scheduler, loss) -> None:
    """Backward, clip the gradient norm to 1, step the optimizer and the LR schedule."""
    import torch

    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


@dataclass
class CheckpointClock:
    """When a stage checkpoints before its end: every ``minutes``, and at step ``stop_at``
    (then the stage stops, for ``--resume`` to continue). ``enabled`` False (a timing run)
    never saves."""

    total_steps: int
    minutes: float
    stop_at: int
    enabled: bool
    log: logging.Logger
    _last: float = field(default_factory=time.time)

    def after_step(self, step: int, checkpoint: Callable[[str], None]) -> bool:
        """Checkpoint if due; True when the stage should stop here."""
        if not self.enabled or step >= self.total_steps:
            return False
        if step == self.stop_at:
            checkpoint(f"step{step}")
            self.log.info("stopped at step %d/%d as asked (--stop-at): --resume continues",
                          step, self.total_steps)
            return True
        if time.time() - self._last > self.minutes * 60:
            checkpoint(f"step{step}")
            self._last = time.time()
        return False
