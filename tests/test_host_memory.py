"""keep_freed_memory: after it, a large CPU tensor comes from glibc's heap (no mapping of its own,
so freeing it keeps its pages for the next one); without it, glibc maps such a tensor apart."""
import subprocess
import sys

import pytest

CHILD = r"""
import ctypes, sys, torch
from r1zero.training.host_memory import keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "keep":
    assert keep_freed_memory()
before = libc.mallinfo2().hblkhd
x = torch.empty(64 * 2**20, dtype=torch.uint8)  # 64 MB: above glibc's largest mmap threshold
x.fill_(1)
print(libc.mallinfo2().hblkhd - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator: Linux only")
def test_large_tensors_come_from_the_heap_once_freed_memory_is_kept():
    def mapped_apart(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True)
        return int(out.stdout.strip().splitlines()[-1])

    assert mapped_apart("default") >= 64 * 2**20  # glibc's own mapping for the tensor
    assert mapped_apart("keep") == 0
