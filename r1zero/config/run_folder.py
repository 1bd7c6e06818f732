"""The names in a run folder that evaluation (r1zero.observe) and the trainer's checkpoints
(r1zero.training.checkpoint) share: ``checkpoint-<step>`` folders, the state files in them, and the
listing of the complete ones (putting back one that a kill left hidden: ``recover``)."""
from __future__ import annotations

import os
import re
from pathlib import Path

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
STATE_JSON = "trainer_state.json"  # written last: its presence marks a checkpoint complete
STATE_PT = "trainer_state.pt"
OPTIMIZER_DIR = "optimizer"  # under torchrun: every rank's optimizer state (torch.distributed.checkpoint)
# A checkpoint's folder while it is written (.tmp-) or moved away by a re-save of its step (.old-).
HIDDEN_CHECKPOINT = re.compile(r"^(\.tmp-|\.old-)checkpoint-(\d+)-")


def is_checkpoint_name(name: str) -> bool:
    """``checkpoint-<step>``, the name of a checkpoint folder in a run folder."""
    return CHECKPOINT.match(name) is not None


def list_checkpoints(output_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints in ``output_dir``, oldest first (after ``recover`` has put back any that a
    kill left outside its place)."""
    out = []
    root = Path(output_dir)
    if not root.is_dir():
        return out
    recover(root)
    for p in root.iterdir():
        m = CHECKPOINT.match(p.name)
        if m and p.is_dir() and (p / STATE_JSON).is_file():
            out.append((int(m.group(1)), p))
    return sorted(out)


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1][1] if found else None


def recover(output_dir: str | os.PathLike) -> list[Path]:
    """Put back a checkpoint that a kill left only outside its place, and return what was put back.

    A re-save of step N renames ``checkpoint-N`` to ``.old-checkpoint-N-<pid>`` and then the complete
    ``.tmp-checkpoint-N-*`` folder to ``checkpoint-N``; killed between the two, neither is where resume
    looks. When ``checkpoint-N`` is missing, a complete tmp folder of step N (its state file is written
    last) is the newer save and is renamed into place, else a complete ``.old-`` one. Several processes
    may recover at once (torchrun ranks at start): a rename that another one already made fails and
    is ignored. Everything else that is hidden is left for ``prune_checkpoints`` to remove.
    """
    root = Path(output_dir)
    candidates: dict[int, list[tuple[int, Path]]] = {}
    for p in root.iterdir():
        m = HIDDEN_CHECKPOINT.match(p.name)
        if m and (p / STATE_JSON).is_file():
            # A tmp folder is the newer save of the two kinds; among several of a kind, the latest written.
            newer_kind = 0 if m.group(1) == ".tmp-" else 1
            candidates.setdefault(int(m.group(2)), []).append((newer_kind, -(p / STATE_JSON).stat().st_mtime_ns, p))
    put_back = []
    for step, found in sorted(candidates.items()):
        final = root / f"checkpoint-{step}"
        if final.exists():
            continue
        for *_, p in sorted(found):
            try:
                os.replace(p, final)
            except OSError:  # gone or already replaced by another process
                continue
            put_back.append(final)
            break
    return put_back
