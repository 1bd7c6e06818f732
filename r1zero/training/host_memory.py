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
"""
from __future__ import annotations

import ctypes
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
