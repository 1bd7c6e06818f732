"""Checkpoints: Hugging Face weights plus the trainer state, written atomically, bounded on disk.

A checkpoint is ``output_dir/checkpoint-<step>/`` holding the model (safetensors, loadable by
``AutoModelForCausalLM`` and vLLM), the tokenizer, ``trainer_state.json`` (step, data position,
readable) and ``trainer_state.pt`` (optimizer, scheduler and RNG states; under torchrun the optimizer
state is in ``optimizer/`` instead, each rank's shards in torch.distributed.checkpoint format). It is written into a
hidden temporary folder and renamed into place only when complete, so a crash never leaves a
half-written checkpoint that resume would pick up.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

_NAME = re.compile(r"^checkpoint-(\d+)$")
STATE_JSON = "trainer_state.json"
STATE_PT = "trainer_state.pt"
OPTIMIZER_DIR = "optimizer"  # under torchrun: every rank's optimizer state (torch.distributed.checkpoint)


def is_checkpoint_name(name: str) -> bool:
    """``checkpoint-<step>``, the name of a checkpoint folder in a run folder."""
    return _NAME.match(name) is not None


def list_checkpoints(output_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints in ``output_dir``, oldest first."""
    out = []
    root = Path(output_dir)
    if not root.is_dir():
        return out
    for p in root.iterdir():
        m = _NAME.match(p.name)
        if m and p.is_dir() and (p / STATE_JSON).is_file():
            out.append((int(m.group(1)), p))
    return sorted(out)


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1][1] if found else None


def save_checkpoint(output_dir: str | os.PathLike, step: int, model, tokenizer, state: dict[str, Any],
                    *, heavy_state: dict[str, Any] | None = None, total_limit: int | None = None,
                    extra_models: dict[str, Any] | None = None, model_state_dict: dict | None = None,
                    tmp: Path | None = None) -> Path:
    """Write ``checkpoint-<step>`` atomically and prune old ones down to ``total_limit``.

    ``state`` is JSON-serialisable (step, data position); ``heavy_state`` holds tensors
    (optimizer, scheduler, RNG) and is skipped when None (optimizer state is optional).
    ``extra_models`` (name -> model, e.g. PPO's critic) are saved in sub-folders of that name.
    ``model_state_dict`` replaces the model's own weights (a sharded model's gathered ones);
    ``tmp`` is a folder from ``new_tmp`` that other processes already wrote parts into.
    """
    root = Path(output_dir)
    tmp = tmp or new_tmp(root, step)
    final = root / f"checkpoint-{step}"
    try:
        model.save_pretrained(tmp, safe_serialization=True, state_dict=model_state_dict)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        for name, extra in (extra_models or {}).items():
            extra.save_pretrained(tmp / name, safe_serialization=True)
        if heavy_state is not None:
            torch.save(heavy_state, tmp / STATE_PT)
        from r1zero import faults

        faults.reached("checkpoint", step)  # crash tests kill here: files written, folder not yet complete
        # The JSON is written last: its presence marks the folder as complete.
        (tmp / STATE_JSON).write_text(json.dumps(state, indent=2), encoding="utf-8")
        if final.exists():  # saving the same step again (after a resume): replace it
            trash = root / f".old-{final.name}-{os.getpid()}"
            os.replace(final, trash)
            os.replace(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    if total_limit is not None:
        prune_checkpoints(root, total_limit)
    return final


def new_tmp(output_dir: str | os.PathLike, step: int) -> Path:
    """A fresh hidden folder in ``output_dir`` to write checkpoint ``step`` into before the rename."""
    root = Path(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=root, prefix=f".tmp-checkpoint-{step}-"))


def prune_checkpoints(output_dir: str | os.PathLike, keep: int) -> None:
    found = list_checkpoints(output_dir)
    for _, path in found[:-keep] if keep > 0 else found:
        shutil.rmtree(path, ignore_errors=True)
    # Leftovers of writes that crashed midway.
    for p in Path(output_dir).glob(".tmp-checkpoint-*"):
        shutil.rmtree(p, ignore_errors=True)


def load_state(checkpoint: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(json state, tensor state or None) of a checkpoint folder."""
    checkpoint = Path(checkpoint)
    state = json.loads((checkpoint / STATE_JSON).read_text(encoding="utf-8"))
    heavy = None
    if (checkpoint / STATE_PT).is_file():
        heavy = torch.load(checkpoint / STATE_PT, map_location="cpu", weights_only=False)
    return state, heavy
