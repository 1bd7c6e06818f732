"""The refusals every layer shares: a bad config value, said in one line naming the key and the fix,
and a full disk, said in one line naming the folder and its free space."""
from __future__ import annotations

import errno
import os
import shutil


class ConfigError(ValueError):
    """A config value that cannot run; the message names the key and the fix."""


def need(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"config: '{key}' {msg}")


class DiskFull(RuntimeError):
    """A write that found no room; the message names the folder, its free space and what is intact."""


# How a full disk reaches Python from the writers r1zero uses: the OS error, torch.save's zip writer
# (which reports only its position), safetensors' Rust writer (the OS error number in its text).
_FULL_TEXT = ("No space left on device", "os error 28", "unexpected pos", "PytorchStreamWriter failed writing")


def is_disk_full(e: BaseException) -> bool:
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return any(t in str(e) for t in _FULL_TEXT)


def free_bytes(path: str | os.PathLike) -> int:
    """Free bytes on the disk of ``path`` (of its nearest existing parent)."""
    p = os.path.abspath(path)
    while not os.path.exists(p) and os.path.dirname(p) != p:
        p = os.path.dirname(p)
    return shutil.disk_usage(p).free


def size_text(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def disk_full(output_dir: str | os.PathLike, what: str, fix: str = "free space or choose another output_dir") -> DiskFull:
    """The one-line error of a full disk while writing ``what`` into ``output_dir``."""
    return DiskFull(f"output_dir: the disk of {output_dir} is full ({size_text(free_bytes(output_dir))} free) "
                    f"while writing {what}; {fix}")
