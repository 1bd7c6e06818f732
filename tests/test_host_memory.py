"""keep_freed_memory: after it, a large CPU tensor comes from glibc's heap (no mapping of its own,
so freeing it keeps its pages for the next one); without it, glibc maps such a tensor apart."""
import subprocess
import sys

import pytest

CHILD = r"""
import ctypes, sys, torch
from r1zero.host_memory import keep_freed_memory

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


PROGRAM = r"""
import os, sys
sys.argv = ["r1zero", "train"]
from r1zero import cli
import r1zero.__main__ as command

def report():  # in place of the training run: what the restarted process has
    import torch
    from r1zero.host_memory import keep_freed_memory
    keep_freed_memory()
    x = torch.ones(64 * 2**20, dtype=torch.uint8)
    huge = [l for l in open("/proc/self/smaps_rollup") if l.startswith("AnonHugePages")][0].split()[1]
    print(os.getpid(), os.environ.get("GLIBC_TUNABLES", "-"), huge)
    return 0

cli.main = report
print("started", os.getpid(), flush=True)
sys.exit(command.program())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's tunables: Linux only")
def test_the_train_command_restarts_itself_once_with_huge_pages():
    """Where the kernel hands out huge pages only when asked and glibc can ask: one restart (same
    process id, so a signal or torchrun still reaches it) with the tunable, and the heap's 64 MB tensor
    then sits on huge pages. Elsewhere: no restart."""
    from r1zero.host_memory import _glibc_at_least, _thp_only_where_asked

    out = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "started"
    if _glibc_at_least(2, 35) and _thp_only_where_asked():
        assert out[2] == "started" and out[3] == out[1] == out[4]  # ran twice, one process
        assert out[5] == "glibc.malloc.hugetlb=1" and int(out[6]) >= 2048, out
    else:
        assert len(out) == 5 and out[3] == "-", out


def test_huge_pages_command_keeps_other_tunables_and_a_users_choice(monkeypatch):
    from r1zero import host_memory

    monkeypatch.setattr(host_memory, "_glibc_at_least", lambda *v: True)
    monkeypatch.setattr(host_memory, "_thp_only_where_asked", lambda: True)
    argv = ["python", "-m", "r1zero", "train", "seed=3"]
    assert host_memory.huge_pages_command(argv, {"A": "1"}) == (argv, {"A": "1", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"})
    env = {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}
    assert host_memory.huge_pages_command(argv, env)[1]["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
    assert host_memory.huge_pages_command(argv, {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}) is None  # the user's
    monkeypatch.setattr(host_memory, "_thp_only_where_asked", lambda: False)  # "always" or "never": nothing to ask
    assert host_memory.huge_pages_command(argv, {}) is None
