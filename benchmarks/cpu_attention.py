"""Attention forward + backward on this CPU: r1zero's kernel (r1zero.attention) against
transformers' ``sdpa`` (torch's fused kernel), measured side by side in one run.

Shapes are an update's: a micro-batch of rows x query positions x keys, SmolLM2-135M's heads (9
query, 3 key/value, 64 wide; flags for others), bf16 as under autocast, a boolean causal mask
with left padding (what transformers' sdpa mask gives a padded batch). Prints a table: ms per
call (best of ``--repeats``), the ratio sdpa / r1zero (above 1: r1zero faster), and the fraction of
the floor each reached: the attention's products (scores and values, forward 4 x B x H x Lq x Lk x
D FLOPs, backward twice that) over the rate of one bf16 batched product of the score's shape,
timed here. r1zero's kernel hands calls past PRODUCTS_MAX_KEYS keys to sdpa; this script times
its product path at every length (the limit is lifted), which is how that limit was chosen.

    python benchmarks/cpu_attention.py
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import host_description, print_table  # noqa: E402

from r1zero import attention  # noqa: E402

# (rows, query positions, keys): a shared prompt's pass, a default-recipe completion pass, longer ones.
SHAPES = [(1, 116, 116), (8, 32, 148), (8, 128, 256), (8, 256, 512), (8, 512, 1024), (4, 1024, 1024)]


class _Layer(torch.nn.Module):
    def __init__(self, groups: int):
        super().__init__()
        self.num_key_value_groups, self.is_causal = groups, True


def _inputs(B, H, Hkv, Lq, Lk, D, gen):
    def leaf(*shape):
        return torch.randn(*shape, generator=gen).to(torch.bfloat16).requires_grad_()

    q, k, v = leaf(B, H, Lq, D), leaf(B, Hkv, Lk, D), leaf(B, Hkv, Lk, D)
    seen = torch.ones(Lq, Lk, dtype=torch.bool).tril(Lk - Lq).expand(B, 1, Lq, Lk).clone()
    seen[0, :, :, : Lk // 4] = False  # row 0 left-padded by a quarter
    return q, k, v, seen


def _time(fn, layer, q, k, v, mask, repeats: int) -> float:
    best = float("inf")
    grad = torch.randn(q.shape[0], q.shape[2], q.shape[1], q.shape[3]).to(q.dtype)  # (B, Lq, H, D), as returned
    for _ in range(repeats + 1):  # the first call warms up
        t0 = time.perf_counter()
        out, _ = fn(layer, q, k, v, mask, dropout=0.0, scaling=q.shape[-1] ** -0.5)
        out.backward(grad)
        best = min(best, time.perf_counter() - t0)
    return best


def _product_rate(B, H, Lq, Lk, D, repeats: int) -> float:
    """FLOP/s of one bf16 batched product of the scores' shape (B*H, Lq, D) x (D, Lk)."""
    a, b = torch.randn(B * H, Lq, D).bfloat16(), torch.randn(B * H, D, Lk).bfloat16()
    torch.bmm(a, b)
    best = min(_clock(lambda: torch.bmm(a, b)) for _ in range(repeats))
    return 2 * B * H * Lq * Lk * D / best


def _clock(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--heads", type=int, default=9)
    p.add_argument("--kv-heads", type=int, default=3)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--repeats", type=int, default=10)
    args = p.parse_args(argv)
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    H, Hkv, D = args.heads, args.kv_heads, args.head_dim
    attention.PRODUCTS_MAX_KEYS = 1 << 30  # time the products at every length
    layer, gen = _Layer(H // Hkv), torch.Generator().manual_seed(0)
    rows = []
    for B, Lq, Lk in SHAPES:
        q, k, v, mask = _inputs(B, H, Hkv, Lq, Lk, D, gen)
        fused = _time(sdpa_attention_forward, layer, q, k, v, mask, args.repeats)
        mine = _time(attention.cpu_attention, layer, q, k, v, mask, args.repeats)
        floor = 12 * B * H * Lq * Lk * D / _product_rate(B, H, Lq, Lk, D, args.repeats)
        rows.append([f"{B}x{Lq}x{Lk}", fused * 1e3, mine * 1e3, fused / mine, floor / fused, floor / mine])
    print(f"host: {host_description()}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print_table(f"attention forward + backward, bf16, {H} x {Hkv} heads of {D}",
                ["rows x queries x keys", "sdpa ms", "r1zero ms", "sdpa / r1zero", "sdpa floor frac",
                 "r1zero floor frac"], rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
