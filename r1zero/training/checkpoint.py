"""Checkpoints: Hugging Face weights plus the trainer state, written atomically, bounded on disk.

A checkpoint is ``output_dir/checkpoint-<step>/`` holding the model (safetensors, loadable by
``AutoModelForCausalLM`` and vLLM), the tokenizer, ``trainer_state.json`` (step, data position,
readable) and ``trainer_state.pt`` (optimizer, scheduler and RNG states; under torchrun the optimizer
state is in ``optimizer/`` instead, each rank's shards in torch.distributed.checkpoint format). It is written into a
hidden temporary folder and renamed into place only when complete, so a crash never leaves a
half-written checkpoint that resume would pick up. A crash in the middle of replacing a checkpoint
of the same step leaves it complete but hidden: ``list_checkpoints`` puts it back first
(``recover``), and every save removes the hidden leftovers (``prune_checkpoints``).

Nothing in a checkpoint runs code when it is read: the trainer state holds only tensors and plain
values and is read with ``torch.load(weights_only=True)``; one that needs more (a payload, or an
object pickled by other code) is refused, naming what it holds. A resume checks the files of the
checkpoint before any model loads (``damage``) and walks back from a damaged newest one to the
newest good one. A save first checks the disk for room for a checkpoint the size of the last one,
and a write that finds the disk full is one line (r1zero.errors.DiskFull); the previous checkpoint
is never touched before the new one is complete.
"""
from __future__ import annotations

import json
import logging
import os
import pickle
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from r1zero.config.run_folder import (OPTIMIZER_DIR, STATE_JSON, STATE_PT, is_checkpoint_name,  # noqa: F401  (public here)
                                     latest_checkpoint, list_checkpoints, recover)
from r1zero.errors import ConfigError, disk_full, free_bytes, is_disk_full, size_text
from r1zero.models import unsafe_globals
from r1zero.observe.tracking import EVALS, read_jsonl
from r1zero.training.callbacks import NO_CALLBACKS, CallbackList

log = logging.getLogger("r1zero")
# Hidden folders of a checkpoint in flight: being written, moved away by a re-save, being removed.
_DELETING = ".del-"
_STRAYS = (".tmp-checkpoint-", ".old-checkpoint-", _DELETING + "checkpoint-")


def save_checkpoint(output_dir: str | os.PathLike, step: int, model, tokenizer, state: dict[str, Any],
                    *, tensor_state: dict[str, Any] | None = None, total_limit: int | None = None,
                    extra_models: dict[str, Any] | None = None, model_state_dict: dict | None = None,
                    tmp: Path | None = None, callbacks: CallbackList = NO_CALLBACKS) -> Path:
    """Write ``checkpoint-<step>`` atomically and prune old ones down to ``total_limit``.

    ``state`` is JSON-serialisable (step, data position); ``tensor_state`` holds tensors
    (optimizer, scheduler, RNG) and is skipped when None (optimizer state is optional).
    ``extra_models`` (name -> (model, its gathered state dict or None), e.g. PPO's critic) are saved
    in sub-folders of that name.
    ``model_state_dict`` replaces the model's own weights (a sharded model's gathered ones);
    ``tmp`` is a folder from ``new_tmp`` that other processes already wrote parts into.
    ``callbacks``: the save points of r1zero.training.callbacks, called as the save reaches them.
    """
    root = Path(output_dir)
    check_room(root, step)
    tmp = tmp or new_tmp(root, step)
    final = root / f"checkpoint-{step}"
    try:
        callbacks.on_save_begin(step, tmp)  # inside the try: an OSError raised there fails the save
        model.save_pretrained(tmp, safe_serialization=True, state_dict=model_state_dict)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        for name, (extra, extra_state) in (extra_models or {}).items():
            extra.save_pretrained(tmp / name, safe_serialization=True, state_dict=extra_state)
        if tensor_state is not None:
            torch.save(tensor_state, tmp / STATE_PT)
        callbacks.on_save_written(step, tmp)  # files written, folder not yet complete
        # The JSON is written last: its presence marks the folder as complete.
        (tmp / STATE_JSON).write_text(json.dumps(state, indent=2), encoding="utf-8")
        if final.exists():  # saving the same step again (after a resume): replace it
            # Two renames, not one atomic swap: a kill between them leaves checkpoint-<step> only
            # as this complete .old- folder and the complete tmp one; recover() puts tmp in place.
            trash = root / f".old-{final.name}-{os.getpid()}"
            os.replace(final, trash)
            callbacks.on_save_replacing(step)  # the old one moved away, the new not in place
            os.replace(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except Exception as e:
        if not is_disk_full(e):
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # first, so that the line says the space there is now
        raise _full(root, f"checkpoint-{step}") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    prune_checkpoints(root, total_limit)
    callbacks.on_save_end(step, final)
    return final


def folder_bytes(path: Path) -> int:
    """Bytes of the files in ``path``, sub-folders included."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _full(root: Path, what: str, fix: str = "free space, then rerun the same command to resume from it"):
    """The disk-full error of a save, naming the checkpoint a rerun resumes from (left intact)."""
    prev = latest_checkpoint(root)
    return disk_full(root, what, f"the previous checkpoint {prev if prev else '(none yet)'} is intact; {fix}")


def check_room(root: Path, step: int) -> None:
    """Refuse a save the disk has no room for, before writing anything: a checkpoint takes about
    the size of the last one (the first save is checked only as it writes)."""
    prev = latest_checkpoint(root)
    if prev is None or prev.name == f"checkpoint-{step}":
        return
    need = folder_bytes(prev)
    if free_bytes(root) < need:
        raise _full(root, f"checkpoint-{step}", f"it needs about {size_text(need)} (the size of {prev.name}): "
                    "free space, then rerun the same command to resume from it")


def new_tmp(output_dir: str | os.PathLike, step: int) -> Path:
    """A fresh hidden folder in ``output_dir`` to write checkpoint ``step`` into before the rename."""
    root = Path(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=root, prefix=f".tmp-checkpoint-{step}-"))


def prune_checkpoints(output_dir: str | os.PathLike, keep: int | None) -> None:
    """Keep the newest ``keep`` checkpoints (all when None) and remove the leftovers of writes and
    removals that a crash cut short (after ``recover`` has taken back what it can)."""
    root = Path(output_dir)
    found = list_checkpoints(root)
    for _, path in (found[:-keep] if keep > 0 else found) if keep is not None else ():
        # Renamed out of the listing first: a kill during rmtree must not leave a checkpoint-N
        # folder whose state file is still there while its weights are gone.
        doomed = root / f"{_DELETING}{path.name}-{os.getpid()}"
        os.replace(path, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
    for prefix in _STRAYS:
        for p in root.glob(f"{prefix}*"):
            shutil.rmtree(p, ignore_errors=True)


def load_state_json(checkpoint: str | os.PathLike) -> dict[str, Any]:
    """The readable state of a checkpoint folder (step, data position, world size)."""
    return json.loads((Path(checkpoint) / STATE_JSON).read_text(encoding="utf-8"))


def load_tensor_state(path: Path, *, mmap: bool = False) -> dict[str, Any]:
    """``trainer_state.pt`` read as tensors and plain values only; anything else is refused in one line
    without being run (``mmap``: storages are mapped, not read, for a check of the file)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        if "Weights only load failed" not in str(e):
            raise
        raise ConfigError(f"resume_from_checkpoint: {path} holds Python objects beyond tensors and plain values "
                          f"({unsafe_globals(path)}), which could run code when loaded; r1zero refuses it: resume from a checkpoint "
                          "this r1zero version wrote, or start a new output_dir") from None


def load_state(checkpoint: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(json state, tensor state or None) of a checkpoint folder."""
    checkpoint = Path(checkpoint)
    state = load_state_json(checkpoint)
    tensor_state = None
    if (checkpoint / STATE_PT).is_file():
        tensor_state = load_tensor_state(checkpoint / STATE_PT)
    return state, tensor_state


def damage(checkpoint: Path) -> str | None:
    """What is wrong with a checkpoint's files (``None``: they read): its state file, every safetensors
    file (header and length: a truncated one is caught) and the trainer state. Cheap: tensors are
    mapped, not read. A trainer state that would run code is refused (ConfigError), not skipped."""
    from safetensors import safe_open

    def where(f: Path) -> str:
        return f"{checkpoint.name}/{f.relative_to(checkpoint)}"

    try:
        state = load_state_json(checkpoint)
        if not isinstance(state, dict) or not isinstance(state.get("step"), int) or "data_position" not in state:
            return f"{where(checkpoint / STATE_JSON)} is not a trainer state (no step and data_position)"
    except (OSError, ValueError) as e:
        return f"{where(checkpoint / STATE_JSON)} does not read ({_first_line(e)})"
    weights = sorted(checkpoint.rglob("*.safetensors"))
    if not weights:
        return f"{checkpoint.name} holds no *.safetensors weights"
    for f in weights:
        try:
            with safe_open(f, "pt"):
                pass
        except Exception as e:
            return f"{where(f)} is damaged or cut short ({_first_line(e)})"
    if (checkpoint / STATE_PT).is_file():
        try:
            load_tensor_state(checkpoint / STATE_PT, mmap=True)
        except ConfigError:
            raise
        except Exception as e:
            return f"{where(checkpoint / STATE_PT)} is damaged or cut short ({_first_line(e)})"
    return None


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def find_resume(resume_from_checkpoint: str | None, output_dir: str | os.PathLike) -> Path | None:
    """The checkpoint a run continues from: none, the newest good one in ``output_dir`` (``auto``: a
    damaged newer one is named in a warning and kept), or the given folder (refused if damaged); a
    fresh run into a folder that already holds checkpoints is refused."""
    if resume_from_checkpoint is None:
        if list_checkpoints(output_dir):
            raise ConfigError(f"output_dir: {output_dir} already holds checkpoints; use resume_from_checkpoint=auto "
                              "to continue or choose another output_dir")
        return None
    if resume_from_checkpoint != "auto":
        path = Path(resume_from_checkpoint)
        if not (path / STATE_JSON).is_file():
            raise ConfigError(f"resume_from_checkpoint: {path} has no {STATE_JSON}; give a checkpoint-N folder "
                              "that r1zero wrote")
        if (problem := damage(path)) is not None:
            raise ConfigError(f"resume_from_checkpoint: {problem}; give another checkpoint")
        return path
    bad = []
    for _, path in reversed(list_checkpoints(output_dir)):
        if (problem := damage(path)) is None:
            if bad:
                log.warning("resume: %s; resuming from %s instead (nothing is deleted: a damaged checkpoint is "
                            "replaced only when the run saves its step again)", "; ".join(bad), path)
            return path
        bad.append(problem)
    if bad:
        raise ConfigError(f"resume_from_checkpoint: no checkpoint in {output_dir} reads ({'; '.join(bad)}); "
                          "move them out of output_dir, or start a new output_dir")
    return None


def check_resume_world_size(path: str | os.PathLike, world_size: int) -> None:
    """A checkpoint resumes under the process count that saved it: the optimizer state is stored per
    layout (one file in one process, every rank's shards under torchrun) and each rank's random
    state is not saved, so another count would not continue the run exactly. Refused before any
    model loads."""
    if not (Path(path) / STATE_JSON).is_file():
        raise ConfigError(f"resume_from_checkpoint: {path} has no {STATE_JSON}; give a checkpoint-N folder "
                          "that r1zero wrote")
    saved = int(load_state_json(path).get("world_size", 1))  # checkpoints without it: one process
    if saved != world_size:
        how = "without torchrun" if saved == 1 else f"under torchrun --nproc_per_node {saved} (or the same total over nodes)"
        raise ConfigError(f"resume_from_checkpoint: {path} was saved by {saved} process(es) and this run has "
                          f"{world_size}; resume it {how}, or start a new output_dir")


def own_checkpoint(output_dir: str | os.PathLike, path: str | os.PathLike | None) -> bool:
    """Whether ``path`` is a checkpoint of the run in ``output_dir`` (not another run's, continued here)."""
    return path is not None and Path(path).resolve().parent == Path(output_dir).resolve()


def run_finished(output_dir: str | os.PathLike, resume_from: Path | None, step: int, max_steps: int, *,
                 final_eval: bool) -> bool:
    """Whether the run in ``output_dir`` holds its last checkpoint (``resume_from``, at ``step``) and,
    with ``final_eval``, its final evaluation: then a rerun has nothing to do. A run killed during its
    final evaluation is not finished: the rerun evaluates (once) and ends."""
    if step < max_steps or not own_checkpoint(output_dir, resume_from):
        return False
    evaluated = any(r.get("step") == step for r in read_jsonl(Path(output_dir) / EVALS, skip_broken=True))
    return evaluated or not final_eval


def rng_state() -> dict[str, Any]:
    """The random generators' states, as tensors and plain types (trainer_state.pt loads weights_only)."""
    return {"python_rng": random.getstate(), "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def restore_rng(tensor_state: dict[str, Any]) -> None:
    """Put back the generators' states that ``rng_state`` saved into ``tensor_state``."""
    random.setstate(tensor_state["python_rng"])
    torch.set_rng_state(tensor_state["torch_rng"])
    if torch.cuda.is_available() and tensor_state.get("cuda_rng") is not None:
        torch.cuda.set_rng_state_all(tensor_state["cuda_rng"])

