"""Metrics and samples: ``metrics.jsonl`` always, tensorboard / wandb / swanlab when asked.

Plain JSON lines are the source of truth (one object per logged step, ``{"step": N, ...}``), so a
run can be plotted with nothing installed; the trackers get the same numbers. On resume, lines of
steps after the resumed checkpoint are dropped so the files read as one uninterrupted run.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
from pathlib import Path
from typing import Any, Callable

from r1zero.errors import disk_full, is_disk_full
from r1zero.observe.metrics import EVAL_PREFIX

METRICS = "metrics.jsonl"
SAMPLES = "samples.jsonl"
EVALS = "eval_results.jsonl"


class TrackerError(ValueError):
    pass


def check_trackers(report_to: list[str]) -> list[str]:
    """Trackers to start; refuses (before any work) one that is asked for but not installed."""
    wanted = [r for r in report_to if r not in ("none", "jsonl")]
    modules = {"tensorboard": "tensorboard", "wandb": "wandb", "swanlab": "swanlab"}
    for r in wanted:
        if importlib.util.find_spec(modules[r]) is None:
            raise TrackerError(f"report_to: '{r}' is not installed; run `pip install {modules[r]}` or remove it from report_to")
    return wanted


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def jsonl_line(row: dict) -> bytes:
    """``row`` as one JSON line (non-finite floats as null), UTF-8."""
    return (json.dumps({k: _clean(v) for k, v in row.items()}, ensure_ascii=False) + "\n").encode("utf-8")


def append_jsonl(path: Path, row: dict) -> None:
    """Append one JSON line, whole or not at all (``append_line``)."""
    append_line(path, jsonl_line(row))


def append_line(path: Path, data: bytes) -> None:
    """Append ``data``, whole or not at all: a write that fails (a full disk) is cut back to where it
    started, and a full disk is one line (r1zero.errors.DiskFull). A kill can still cut a write
    short; on resume the cut line is dropped (truncate_jsonl)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        start = os.lseek(fd, 0, os.SEEK_END)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        except OSError as e:
            os.ftruncate(fd, start)
            if is_disk_full(e):
                raise disk_full(Path(path).parent, Path(path).name) from None
            raise
    finally:
        os.close(fd)


def read_jsonl(path: str | os.PathLike, skip_broken: bool = False) -> list[dict]:
    """The rows of a JSONL file ([] if absent); ``skip_broken`` drops lines that do not parse (a line
    cut short by a crash) instead of raising."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                if not skip_broken:
                    raise
    return rows


def truncate_jsonl(path: Path, max_step: int) -> None:
    """Keep rows with step <= max_step (a resumed run rewrites what came after its checkpoint)."""
    if not path.is_file():
        return
    # A line cut short by a crash is dropped: the resumed run writes it again.
    rows = [r for r in read_jsonl(path, skip_broken=True) if isinstance(r, dict) and r.get("step", 0) <= max_step]
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


class Tracker:
    """``on_log(step, path, line)`` is called before each metrics line is appended (the loop's
    callbacks, r1zero.training.callbacks)."""

    def __init__(self, output_dir: str | os.PathLike, report_to: list[str], run_name: str, config: dict,
                 resume_step: int = 0, on_log: Callable[[int, Path, bytes], None] | None = None):
        self.dir = Path(output_dir)
        self.on_log = on_log
        self.dir.mkdir(parents=True, exist_ok=True)
        for name in (METRICS, SAMPLES, EVALS):
            if resume_step > 0:
                truncate_jsonl(self.dir / name, resume_step)
            elif (self.dir / name).exists():
                (self.dir / name).unlink()
        self._tb = self._wandb = self._swan = None
        wanted = check_trackers(report_to)
        if "tensorboard" in wanted:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(self.dir / "tensorboard"), purge_step=resume_step + 1 if resume_step else None)
        if "wandb" in wanted:
            import wandb

            self._wandb = wandb.init(project=os.environ.get("WANDB_PROJECT", "r1zero"), name=run_name,
                                     config=config, dir=str(self.dir), resume="allow")
        if "swanlab" in wanted:
            import swanlab

            self._swan = swanlab.init(project=os.environ.get("SWANLAB_PROJECT", "r1zero"),
                                      experiment_name=run_name, config=config, logdir=str(self.dir / "swanlab"))

    def log(self, metrics: dict[str, Any], step: int) -> None:
        path, line = self.dir / METRICS, jsonl_line({"step": step, **metrics})
        if self.on_log is not None:
            self.on_log(step, path, line)
        append_line(path, line)
        scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(k, v, step)
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(scalars, step=step)
        if self._swan is not None:
            self._swan.log(scalars, step=step)

    def log_samples(self, rows: list[dict]) -> None:
        for r in rows:
            append_jsonl(self.dir / SAMPLES, r)

    def log_eval(self, results: dict[str, Any], step: int) -> None:
        append_jsonl(self.dir / EVALS, {"step": step, **results})
        self.log({f"{EVAL_PREFIX}{k}": v for k, v in results.items() if isinstance(v, (int, float))}, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
        if self._swan is not None:
            self._swan.finish()


class NullTracker:
    """What processes other than rank 0 log under torchrun: nothing (rank 0 logs the gathered step)."""

    def log(self, *a, **k): pass
    def log_eval(self, *a, **k): pass
    def log_samples(self, *a, **k): pass
    def close(self): pass
