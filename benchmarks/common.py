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


def matmul_shapes(cfg) -> list[tuple[int, int, int]]:
    """(in, out, count) of every weight matrix a token is multiplied by in a decoder-only transformers
    model (attention projections, MLP, the LM head), from its config: 2 x in x out FLOPs each per token.
    Attention's score and value products are left out (they depend on the context length)."""
    h = cfg.hidden_size
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or h // heads
    kv = getattr(cfg, "num_key_value_heads", None) or heads
    layers = cfg.num_hidden_layers
    return [(h, heads * head_dim, layers), (h, kv * head_dim, 2 * layers), (heads * head_dim, h, layers),
            (h, cfg.intermediate_size, 2 * layers), (cfg.intermediate_size, h, layers), (h, cfg.vocab_size, 1)]


def flops_per_token(cfg) -> int:
    """Matrix-product FLOPs of one token's forward pass (2 x the weights it is multiplied by)."""
    return sum(2 * i * o * n for i, o, n in matmul_shapes(cfg))


def matmul_rate(cfg, rows: int, dtype: torch.dtype, repeats: int = 3, inner: int = 4) -> float:
    """FLOP/s of the model's own matrix products at ``rows`` rows in ``dtype`` on this machine: each
    distinct shape is timed (the best of ``repeats``, ``inner`` products each) and counted as often as
    the model has it, so no layer's weights need to exist."""
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    gen = torch.Generator(device="cpu").manual_seed(0)
    seconds = 0.0
    for i, o, n in matmul_shapes(cfg):
        x = torch.randn(rows, i, generator=gen).to(dev, dtype)
        w = torch.randn(i, o, generator=gen).to(dev, dtype)
        with Timer() as first:
            x @ w  # warm-up
        best = first.s
        # A slow product (bf16 without native support: 100x fp32 on an AVX2 CPU) is timed once.
        for _ in range(repeats if first.s < 0.05 else 0):
            with Timer() as t:
                for _ in range(inner):
                    x @ w
            best = min(best, t.s / inner)
        seconds += best * n
    return rows * flops_per_token(cfg) / seconds


def product_seconds(cfg, rows: int, dtype: torch.dtype, repeats: int = 3, inner: int = 4) -> float:
    """Seconds the model's matrix products take for one forward step of ``rows`` token rows in ``dtype``."""
    return rows * flops_per_token(cfg) / matmul_rate(cfg, rows, dtype, repeats, inner)


def floor_rates(cfg, rows: int) -> dict:
    """{"fp32": FLOP/s, "bf16": FLOP/s} of the model's matrix products at ``rows`` rows, and "best"."""
    rates = {"fp32": matmul_rate(cfg, rows, torch.float32), "bf16": matmul_rate(cfg, rows, torch.bfloat16)}
    rates["best"] = max(rates.values())
    return rates


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
