"""Run health: non-finite updates are skipped, rewards that always fail stop the run, and the output
folder is checked before anything is loaded.

The trainer calls these from a few lines (r1zero.training.trainer and r1zero.training.update); the rules live here:

* An optimizer update whose loss or gradient norm is NaN or infinite is skipped: the gradients are
  dropped and ``optimizer.step()`` is not called, so weights and optimizer state (AdamW moments,
  step count) stay exactly as they were. The learning-rate schedule still advances with the
  training step, so ``max_steps`` and the schedule mean the same with or without skips. Skips are
  counted in the ``skipped_updates`` metric and logged; after ``max_skipped_updates`` consecutive
  skips the run stops (the last complete checkpoint is untouched).
* A scorer (a user reward function, or the task's own) that failed on every completion of a step
  for ``max_failed_reward_steps`` consecutive steps stops the run with a message naming it: every
  sample then scores 0 from it, so the run would go on without learning from it.
"""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import torch

from r1zero.config import ConfigError
from r1zero.observe import metrics as metric_names

log = logging.getLogger("r1zero")


class RunStopped(RuntimeError):
    """The run cannot usefully go on; the message is one line naming the cause and the fix."""


class RunHealth:
    def __init__(self, max_skipped_updates: int, max_failed_reward_steps: int):
        self.max_skipped = max_skipped_updates
        self.max_failed = max_failed_reward_steps
        self.consecutive_skips = 0
        self.skipped_in_step = 0
        self.total_skipped = 0
        self.failed_streak: dict[str, int] = {}
        self._bad_loss = False
        self._losses: list = []  # this update's micro-batch losses, still on the device
        self.stop_message: str | None = None

    # ---- numerical faults -------------------------------------------------------------------------
    def note_loss(self, loss: Any) -> None:
        """Called after each micro-batch's backward: remember a non-finite loss for this update. A
        tensor is kept on its device and read in ``update_ok`` (no host sync per micro-batch)."""
        if isinstance(loss, torch.Tensor):
            self._losses.append(loss.detach().reshape(()))
        elif not math.isfinite(float(loss)):
            self._bad_loss = True

    def update_ok(self, grad_norm: Any, step: int) -> bool:
        """Whether to call ``optimizer.step()``: False (a skip) when this update's loss or gradient
        norm is not finite."""
        if self._losses:
            self._bad_loss |= not bool(torch.isfinite(torch.stack(self._losses)).all())
            self._losses = []
        bad_loss, self._bad_loss = self._bad_loss, False
        gn = float(grad_norm)
        if not bad_loss and math.isfinite(gn):
            self.consecutive_skips = 0
            return True
        self.consecutive_skips += 1
        self.skipped_in_step += 1
        self.total_skipped += 1
        what = "non-finite loss" if bad_loss else "non-finite gradient norm"
        log.warning("step %d: %s (grad norm %s): update skipped, weights and optimizer untouched "
                    "(%d in a row)", step, what, gn, self.consecutive_skips)
        if self.consecutive_skips >= self.max_skipped and self.stop_message is None:
            self.stop_message = (
                f"stopped at step {step}: {self.consecutive_skips} consecutive updates had a non-finite loss or "
                f"gradient norm and were skipped; lower learning_rate, set max_grad_norm, check bf16 and the "
                f"rewards, or raise max_skipped_updates ({self.max_skipped})")
        return False

    # ---- per step ---------------------------------------------------------------------------------
    def end_step(self, step: int, n_samples: int, scores) -> dict[str, float]:
        """Metrics of this step's health; records a stop when a scorer failed on every sample for
        too many steps in a row."""
        for name in set(self.failed_streak) | set(scores.errors):
            if scores.errors.get(name, 0) >= n_samples > 0:
                self.failed_streak[name] = self.failed_streak.get(name, 0) + 1
            else:
                self.failed_streak[name] = 0
        for name, streak in self.failed_streak.items():
            if streak >= self.max_failed and self.stop_message is None:
                why = getattr(scores, "error_reasons", {}).get(name, "no finite number returned")
                self.stop_message = (
                    f"stopped at step {step}: reward '{name}' failed on every sample for {streak} consecutive steps "
                    f"(e.g. {why}); fix it or remove it from reward_funcs, or raise max_failed_reward_steps "
                    f"({self.max_failed})")
        out = {metric_names.SKIPPED_UPDATES: float(self.skipped_in_step)}
        self.skipped_in_step = 0
        return out

    def raise_if_stopped(self) -> None:
        if self.stop_message is not None:
            raise RunStopped(self.stop_message)


def check_output_dir(path: str | os.PathLike) -> None:
    """Refuse an output folder that cannot be written, without creating or writing anything."""
    p = Path(os.path.expanduser(str(path)))
    if p.exists() and not p.is_dir():
        raise ConfigError(f"output_dir: {p} is a file, not a folder; choose another output_dir")
    probe = p
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"output_dir: {probe} (inside {p}) is a file, so the folder cannot be created; "
                          "choose another output_dir")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"output_dir: {probe} is not writable; choose a writable output_dir or fix its permissions")


__all__ = ["RunHealth", "RunStopped", "check_output_dir"]
