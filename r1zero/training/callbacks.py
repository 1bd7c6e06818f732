"""The named points of a training run where code from outside the loop may act: a ``Callback`` (one
method per point, each doing nothing) to subclass, and the ``CallbackList`` the loop calls.

The crash tests pause a run at these points to kill it exactly there (tests/fault_points.py); the
loop itself never depends on what a callback does. The points, in the order a step reaches them:

- ``on_train_begin(trainer)``: the model is loaded and wrapped, nothing trained or evaluated yet
  (a callback may add forward hooks to ``trainer.model``).
- ``on_optimizer_step(step)``: just after an optimizer step: the weights moved, nothing is saved.
- ``on_log(step, path, line)``: a metrics line (its bytes) is about to be appended to ``path``.
- ``on_save_begin(step, folder)``: checkpoint ``step`` is about to be written into the temporary
  ``folder``; an ``OSError`` raised here fails the save as a failed write would.
- ``on_save_written(step, folder)``: its files are in ``folder``, not yet renamed into place.
- ``on_save_replacing(step)``: saving a step that had a checkpoint: the old folder is moved away,
  the new one not yet in place.
- ``on_save_end(step, folder)``: the checkpoint is in place as ``folder``.
- ``on_step_end(step, metrics)``: the step is logged, and evaluated and saved when due (the last step's
  save and evaluation come after the loop, after this point).

Under torchrun every process calls the points it reaches; the log and save points are reached by
the process that writes the run's files (rank 0).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any


class Callback:
    """Subclass it and override the points you need; every point does nothing by default."""

    def on_train_begin(self, trainer) -> None: pass
    def on_optimizer_step(self, step: int) -> None: pass
    def on_log(self, step: int, path: Path, line: bytes) -> None: pass
    def on_save_begin(self, step: int, folder: Path) -> None: pass
    def on_save_written(self, step: int, folder: Path) -> None: pass
    def on_save_replacing(self, step: int) -> None: pass
    def on_save_end(self, step: int, folder: Path) -> None: pass
    def on_step_end(self, step: int, metrics: dict[str, Any]) -> None: pass


class CallbackList(Callback):
    """Calls each point of every callback, in the order given."""

    def __init__(self, callbacks: list[Callback] | tuple[Callback, ...] = ()):
        self.callbacks = tuple(callbacks)

    def _each(self, point: str, *args) -> None:
        for c in self.callbacks:
            getattr(c, point)(*args)

    def on_train_begin(self, trainer) -> None: self._each("on_train_begin", trainer)
    def on_optimizer_step(self, step: int) -> None: self._each("on_optimizer_step", step)
    def on_log(self, step: int, path: Path, line: bytes) -> None: self._each("on_log", step, path, line)
    def on_save_begin(self, step: int, folder: Path) -> None: self._each("on_save_begin", step, folder)
    def on_save_written(self, step: int, folder: Path) -> None: self._each("on_save_written", step, folder)
    def on_save_replacing(self, step: int) -> None: self._each("on_save_replacing", step)
    def on_save_end(self, step: int, folder: Path) -> None: self._each("on_save_end", step, folder)
    def on_step_end(self, step: int, metrics: dict[str, Any]) -> None: self._each("on_step_end", step, metrics)


NO_CALLBACKS = CallbackList()  # the default where none are given
