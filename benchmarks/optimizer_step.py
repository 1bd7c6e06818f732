"""One AdamW step over a model's weights on this machine: torch's per-tensor implementation (its
default on a CPU, and r1zero's before fused), foreach and fused (what r1zero.training.optim uses
where ``fused_applies``), measured side by side in one run, each three times, alternated.

The weights are the shapes of the model (default: the embedded SmolLM2-135M-Instruct's config,
random float32 values, no weights loaded), with random gradients. Prints seconds per step (the
median of ``--steps`` after a first step that makes the moments), the ratio per-tensor / each, and
the fraction of the memory floor each reached (last line: the fused step's range of both). Fused
AdamW reads the weight, its gradient and both moments and writes the weight and both moments back
in place: 28 bytes a float32 weight, at the fastest rate this script sees for the same kind of pass
(one 256 MB tensor added in place to another, measured in every round: two read, one written back
where it was read; a copy into a third tensor would also read the destination before writing it,
and understate the rate by up to a third).

    python benchmarks/optimizer_step.py
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import host_description, print_table  # noqa: E402

BYTES_PER_WEIGHT = 28  # fused AdamW, float32: reads weight, gradient, 2 moments (16), writes 3 (12)
KINDS = {"per-tensor": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def weight_shapes(model: str) -> list[tuple[int, ...]]:
    """The shapes of a causal LM's trainable weights, from its config alone (no weights loaded)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from r1zero.models import resolve_model_path

    cfg = AutoConfig.from_pretrained(resolve_model_path(model))
    with torch.device("meta"):
        net = AutoModelForCausalLM.from_config(cfg)
    return [tuple(p.shape) for p in net.parameters()]


def in_place_rate(repeats: int) -> float:
    """Bytes read + written per second adding one 256 MB float32 tensor to another in place (the
    best of ``repeats``): 8 bytes read and 4 written back per element."""
    a, b = torch.zeros(64 << 20), torch.zeros(64 << 20)
    a.add_(b)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a.add_(b)
        best = min(best, time.perf_counter() - t0)
    return 3 * a.numel() * 4 / best


def step_seconds(shapes, kind: str, steps: int, seed: int) -> float:
    """Median seconds of an AdamW step of ``kind`` over ``shapes`` (after the first, which makes the moments)."""
    gen = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(s, generator=gen) * 0.02) for s in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen) * 1e-3
    opt = torch.optim.AdamW(params, lr=1e-5, betas=(0.9, 0.99), weight_decay=0.1, **KINDS[kind])
    opt.step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        opt.step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="embedded", help="a causal LM's name or path (its config is read)")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3, help="each kind timed this many times, alternated")
    args = p.parse_args(argv)
    from r1zero.host_memory import keep_freed_memory

    keep_freed_memory()  # as a training run: freed moments and temporaries reuse their pages
    shapes = weight_shapes(args.model)
    n = sum(torch.Size(s).numel() for s in shapes)
    rates, runs = [], {k: [] for k in KINDS}
    for r in range(args.rounds):
        rates.append(in_place_rate(5))  # measured in every round: it moved between rounds here (66-117 GB/s)
        for kind in KINDS:
            runs[kind].append(step_seconds(shapes, kind, args.steps, seed=r))
    rate = max(rates)  # the fastest the machine was seen to stream: the floor is a bound
    floor = n * BYTES_PER_WEIGHT / rate
    base = runs["per-tensor"]
    rows = [[kind, " / ".join(f"{t:.3f}" for t in ts),
             " / ".join(f"{b / t:.2f}" for b, t in zip(base, ts)),
             " / ".join(f"{floor / t:.2f}" for t in ts)] for kind, ts in runs.items()]
    print(f"host: {host_description()}, threads {torch.get_num_threads()}")
    print(f"{len(shapes)} weight tensors, {n / 1e6:.1f}M float32 weights; in-place rate by round "
          f"{' / '.join(f'{r / 1e9:.1f}' for r in rates)} GB/s (read + write; the best sets the floor), "
          f"memory floor of a fused step {floor:.3f} s")
    print_table("AdamW step, float32 weights, each round in order", ["kind", "s / step", "per-tensor / this",
                                                                     "floor fraction"], rows)
    ratios = [b / t for b, t in zip(base, runs["fused"])]
    fractions = [floor / t for t in runs["fused"]]
    print(f"fused_speedup={min(ratios):.2f}-{max(ratios):.2f} fused_floor_fraction={min(fractions):.2f}-{max(fractions):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
