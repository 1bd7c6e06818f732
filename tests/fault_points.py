"""The crash tests' faults, as callbacks of the training loop (r1zero.training.callbacks): a pause
at a chosen moment, so a test can SIGKILL the run exactly there, and a disk that is full from a
chosen save on. ``python tests/fault_points.py train ...`` is ``python -m r1zero train ...`` with the
pause its environment asks for. Nothing else changes, so the process that is killed is an ordinary
training run (tests/test_crash_resume.py, tests/test_run_safety.py).

``R1ZERO_PAUSE_AT=phase@step#n``: the n-th time training step ``step`` reaches ``phase``, the process
writes ``R1ZERO_PAUSE_FILE`` and sleeps until it is killed. Phases: ``generate`` (a forward pass of
the policy without gradients: sampling), ``update`` (a forward pass with gradients), ``optimizer``
(just after an optimizer step: weights changed, nothing saved), ``metrics`` (half of a metrics.jsonl
line written), ``checkpoint`` (a checkpoint's files are in its temporary folder, not yet renamed into
place) and ``resave`` (saving a step that already has a checkpoint: the old folder moved away, the
new one not yet in place).
"""
from __future__ import annotations

import errno
import faulthandler
import os
import signal
import sys
import time
from pathlib import Path

from r1zero import cli
from r1zero.training.callbacks import Callback

PAUSE_AT = "R1ZERO_PAUSE_AT"
PAUSE_FILE = "R1ZERO_PAUSE_FILE"


class PauseAt(Callback):
    """Sleeps at the n-th time a step reaches a phase (``spec``: ``phase@step#n``), after writing
    ``note`` (whole, then renamed into place: a test that sees the file reads the whole note)."""

    def __init__(self, spec: str, note: str):
        self.spec, self.note = spec, Path(note)
        self.counts: dict[tuple[str, int], int] = {}

    def due(self, phase: str, step: int) -> bool:
        key = (phase, int(step))
        self.counts[key] = self.counts.get(key, 0) + 1
        return self.spec == f"{phase}@{step}#{self.counts[key]}"

    def pause(self) -> None:
        tmp = self.note.with_name(self.note.name + ".tmp")
        tmp.write_text(f"{self.spec} pid={os.getpid()}\n", encoding="utf-8")
        os.replace(tmp, self.note)
        while True:  # wait for the SIGKILL
            time.sleep(60)

    def reached(self, phase: str, step: int) -> None:
        if self.due(phase, step):
            self.pause()

    def on_train_begin(self, trainer) -> None:
        """Every forward pass of the policy is 'generate' or 'update' of the current step."""
        import torch

        def hook(module, args):
            self.reached("update" if torch.is_grad_enabled() else "generate", trainer.step + 1)

        # On the input embeddings: every forward pass goes through them, also the update's, which
        # calls the decoder directly rather than the whole model (r1zero.training.logprobs).
        trainer.model.get_input_embeddings().register_forward_pre_hook(hook)

    def on_optimizer_step(self, step: int) -> None:
        self.reached("optimizer", step)

    def on_log(self, step: int, path: Path, line: bytes) -> None:
        if self.due("metrics", step):  # half of the line on disk, the way a kill can cut a write short
            with open(path, "ab") as f:
                f.write(line[:len(line) // 2])
            self.pause()

    def on_save_written(self, step: int, folder: Path) -> None:
        self.reached("checkpoint", step)

    def on_save_replacing(self, step: int) -> None:
        self.reached("resave", step)


class FullDiskAt(Callback):
    """The disk is full from the save of ``step`` on: the write fails with the operating system's
    ENOSPC, as a full disk fails it."""

    def __init__(self, step: int):
        self.step = step

    def on_save_begin(self, step: int, folder: Path) -> None:
        if step >= self.step:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def main(argv: list[str]) -> int:
    """``r1zero`` on ``argv``, pausing where ``R1ZERO_PAUSE_AT`` says (if set). SIGUSR1 prints every
    thread's Python stack to stderr, so a test whose run does not exit can say where it waits."""
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    # Ctrl-C as in a terminal: a test suite started as a background job of a non-interactive shell
    # (`pytest ... &`, a CI script's `&`) ignores SIGINT, and this process would inherit that, sleep
    # through the test's SIGINT and never exit (the hang of tests/test_run_safety.py's Ctrl-C test).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    spec = os.environ.get(PAUSE_AT)
    return cli.main(argv, callbacks=[PauseAt(spec, os.environ[PAUSE_FILE])] if spec else [])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
