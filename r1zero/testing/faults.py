"""A test hook that holds the trainer at a chosen moment, so a crash test can SIGKILL it exactly there.

Off (one dictionary lookup per call) unless ``R1ZERO_PAUSE_AT`` is set to ``phase@step#n``. Phases:
``generate`` (a forward pass of the policy without gradients: sampling), ``update`` (a forward pass
with gradients), ``optimizer`` (just after an optimizer step: weights changed, nothing saved),
``metrics`` (half of a metrics.jsonl line written), ``checkpoint`` (a checkpoint's files are in its
temporary folder, not yet renamed into place) and ``resave`` (saving a step that already has a
checkpoint: the old folder moved away, the new one not yet in place). The n-th time the phase is
reached during training step ``step``, the process writes ``R1ZERO_PAUSE_FILE`` and sleeps until
it is killed. Nothing else changes, so the process
that is killed is an ordinary training run (tests/test_crash_resume.py).

``R1ZERO_DISK_FULL_AT=phase@step`` (phase ``checkpoint``) makes the disk full from that moment: the
write fails with the operating system's ENOSPC, as a full disk fails it (tests/test_run_safety.py).
"""
from __future__ import annotations

import errno
import os
import time
from pathlib import Path

PAUSE_AT = "R1ZERO_PAUSE_AT"
PAUSE_FILE = "R1ZERO_PAUSE_FILE"
DISK_FULL_AT = "R1ZERO_DISK_FULL_AT"
_counts: dict[tuple[str, int], int] = {}


def armed() -> bool:
    """Whether a pause point is set (callers skip work done only for the hook)."""
    return bool(os.environ.get(PAUSE_AT))


def reached(phase: str, step: int) -> None:
    spec = os.environ.get(PAUSE_AT)
    if not spec:
        return
    key = (phase, int(step))
    _counts[key] = _counts.get(key, 0) + 1
    if spec == f"{phase}@{step}#{_counts[key]}":
        # Written whole, then renamed into place: a test that sees the file reads the whole note.
        note = Path(os.environ[PAUSE_FILE] + ".tmp")
        note.write_text(f"{spec} pid={os.getpid()}\n", encoding="utf-8")
        os.replace(note, os.environ[PAUSE_FILE])
        while True:  # wait for the SIGKILL
            time.sleep(60)


def fill_disk(phase: str, step: int) -> None:
    if os.environ.get(DISK_FULL_AT) == f"{phase}@{step}":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def watch(trainer) -> None:
    """Report every forward pass of the policy as 'generate' or 'update' of the current step."""
    if not os.environ.get(PAUSE_AT):
        return
    import torch

    def hook(module, args):
        reached("update" if torch.is_grad_enabled() else "generate", trainer.step + 1)

    # On the input embeddings: every forward pass goes through them, also the update's, which
    # calls the decoder directly rather than the whole model (r1zero.training.logprobs).
    trainer.model.get_input_embeddings().register_forward_pre_hook(hook)
