"""Freed CPU memory kept in the process, so a large tensor reuses pages instead of faulting new ones in.

glibc hands every allocation above its mmap threshold (at most 32 MB) its own mapping and unmaps it
on free, so the next tensor of that size is faulted in again, page by page. A CPU training step
makes several such tensors a micro-batch: the 135M embedded model's embedding gradient alone is 113
MB (49,152 x 576 float32), as are AdamW's temporaries for it. Measured on the 2-core VM here
(torch 2.13, 2 threads): a fresh 113 MB ``sqrt`` took 38 ms and 7.8 ms with memory kept; an
embedding forward and backward of that table 47 ms and 15 ms; the embedded default's update phase
over 5 steps 38-43 s and 34 s. ``keep_freed_memory`` turns glibc's mmap off (every block from the
heap) and its heap trimming (freed heap stays mapped): the process keeps its high-water mark
instead of returning memory between steps, which a training process reaches again every step.
It is what setting MALLOC_MMAP_MAX_=0 and MALLOC_TRIM_THRESHOLD_ does, from inside the process.
Elsewhere (no glibc: macOS, musl) nothing changes.

``huge_pages_command`` is the other half, for the ``r1zero train`` command only: the same command with
glibc's ``glibc.malloc.hugetlb=1`` tunable, which has malloc ask the kernel for transparent huge
pages (2 MB) on the heap. Most Linux systems hand them out only where asked (``madvise`` in
/sys/kernel/mm/transparent_hugepage/enabled), and a tunable is read when a process starts, so the
command runs itself again with it set (as ``torch.backends.xeon.run_cpu`` relaunches with its
allocator settings). Why: a training step streams through gigabytes of weights, gradients and
activations, and with 4 KB pages each page is a TLB entry and, the first time, a page fault. Measured
with the embedded default (seed 0, 2 threads, the 2-core VM, glibc 2.36, same trajectory each side,
alternated): 1.9M page faults against 0.26M, and the run took 195-203 s with the tunable against
214-217 s without. Not done when GLIBC_TUNABLES already names the tunable (set
``glibc.malloc.hugetlb=0`` to keep 4 KB pages), when the kernel's setting is ``always`` (nothing to
ask) or ``never``, or without glibc 2.35 or later.
"""
from __future__ import annotations

import ctypes
import os
import sys

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
_M_MMAP_MAX = -4
_done = False


def keep_freed_memory() -> bool:
    """Ask glibc to serve every block from the heap and keep freed heap mapped; True if it did."""
    global _done
    if _done or not sys.platform.startswith("linux"):
        return _done
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    _done = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    return _done


HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb=1"
_THP_SETTING = "/sys/kernel/mm/transparent_hugepage/enabled"


def _glibc_at_least(major: int, minor: int) -> bool:
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()  # "glibc 2.36"
        return name == "glibc" and tuple(int(x) for x in version.split(".")[:2]) >= (major, minor)
    except (AttributeError, OSError, ValueError):  # not glibc
        return False


def _thp_only_where_asked() -> bool:
    try:
        with open(_THP_SETTING) as f:
            return "[madvise]" in f.read()
    except OSError:
        return False


def huge_pages_command(argv: list[str], env: dict[str, str]) -> tuple[list[str], dict[str, str]] | None:
    """(argv, environment) that run this command again with ``HUGE_PAGES_TUNABLE`` set, or None when
    that would change nothing (the module docstring says when). ``argv``: the interpreter's own
    command line (``sys.orig_argv``)."""
    tunables = env.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.hugetlb" in tunables or not _glibc_at_least(2, 35) or not _thp_only_where_asked():
        return None
    return argv, {**env, "GLIBC_TUNABLES": ":".join(filter(None, [tunables, HUGE_PAGES_TUNABLE]))}
