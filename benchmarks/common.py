"""Shared benchmark helpers: peak memory per side in one process, timing, table printing."""
from __future__ import annotations

import ctypes
import gc
import os
import platform
import time

import torch

QWEN_SHAPES = {
    # The published configs of Qwen2.5-0.5B and -3B (random weights: no download needed).
    "qwen2.5-0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                         num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "qwen2.5-3b": dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                       num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
}


def host_description() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), torch {torch.__version__}"


def _release_memory() -> None:
    gc.collect()
    try:  # hand freed heap pages back to the OS so the next side's RSS starts low
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


class PeakMemory:
    """Peak memory of one benchmark side: GPU memory on GPU, else resident set size (RSS).

    RSS: writing "5" to /proc/self/clear_refs resets the kernel's high-water mark (VmHWM) to the
    current RSS, so each side's peak is measured from the same starting point in one process.
    """

    def __init__(self) -> None:
        self.gpu = torch.cuda.is_available()

    def __enter__(self):
        _release_memory()
        if self.gpu:
            torch.cuda.reset_peak_memory_stats()
        else:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        return self

    def __exit__(self, *exc) -> None:
        if self.gpu:
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self.peak = read_vm("VmHWM")

    @property
    def label(self) -> str:
        return "peak GPU memory (GiB)" if self.gpu else "peak RSS (GiB)"


def read_vm(field: str) -> int:
    """A /proc/self/status field (VmHWM, VmRSS) in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class Timer:
    def __enter__(self):
        sync()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        sync()
        self.s = time.perf_counter() - self.t0


def print_table(title: str, header: list[str], rows: list[list]) -> None:
    cells = [header] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n{title}")
    for j, r in enumerate(cells):
        print("| " + " | ".join(c.rjust(w) if j else c.ljust(w) for c, w in zip(r, widths)) + " |")
        if j == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


def _fmt(c) -> str:
    if isinstance(c, float):
        return f"{c:.3g}" if abs(c) < 100 else f"{c:.0f}"
    return str(c)
