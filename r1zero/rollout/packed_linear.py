"""Weights kept in oneDNN's blocked layout for the CPU decode step's products (bf16 and float32).

Why, bf16: a bf16 product on the CPU goes to oneDNN, which rearranges the weight into its blocked
layout on every call. At decode time a product has 1-64 rows, so that rearranging, a pass over the
whole weight, costs as much as the product itself. Measured on the 2-core AVX512-BF16 VM (torch
2.13, 2 threads, SmolLM2-135M's shapes): ``F.linear`` at 1 row read the weight at 24-27 GB/s, the
same product on a weight rearranged once (``torch.ops.mkldnn._reorder_linear_weight``, what
inductor's weight freezing does) at 49-57 GB/s; at 32 and 64 rows 1.6-1.9x faster, at 464 rows (a
prefill) 1.2x. The outputs were bit-identical to ``F.linear``'s at every row count tried (1-464,
with and without bias): the same kernels run, only the rearranging moves out of the loop. So
sampling draws the same tokens either way (tests/test_packed_linear.py checks the identity on this
machine's kernels).

Why, float32: ``F.linear`` in float32 goes to MKL's sgemm, not to oneDNN, and MKL on that AMD EPYC
ran 2.5-5x slower than oneDNN on the same packed shapes (issue 25, benchmarks/RESULTS.md): at 16
rows the 49,152-row head took 14.4 ms against 3.0, the gate|up product 401 us against 133; at 1 row
the head 6.9 ms against 1.3 (MKL read the weight at 16 GB/s). oneDNN's products are float32
arithmetic, not a reduced-precision mode: against float64, its largest error at those shapes was
2-6e-6, MKL's 1-3e-6, bf16's 1-2e-2. They are not MKL's bit for bit (another summation order), so
the float32 lean step's logits equal transformers' to rounding, as its attention already did.

The cost: one rearranged copy of each weight per policy version (0.08-0.14 s for the 135M model's
270 MB of bf16 weights, once per update; the lean decoder's ``refresh`` does it), and the copies
are opaque oneDNN tensors (no views, no ``state_dict``, CPU only). Used only where oneDNN runs the
dtype's products (``torch.ops.mkldnn._is_mkldnn_bf16_supported`` for bf16; oneDNN present for
float32); everywhere else (CUDA, float16, a torch without oneDNN) ``pack`` returns the weight
itself and ``linear`` is ``F.linear``.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F


@functools.cache
def _cpu_bf16_supported() -> bool:
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch built without oneDNN
        return False


@functools.cache
def _cpu_fp32_supported() -> bool:
    try:  # a build whose oneDNN lacks the op, or refuses float32, says so here
        return bool(torch.backends.mkldnn.is_available()
                    and torch.ops.mkldnn._reorder_linear_weight(torch.zeros(8, 8), None).is_mkldnn)
    except (AttributeError, RuntimeError):
        return False


def packs_dtype(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether ``pack`` rearranges 2-d weights of ``dtype`` on ``device``."""
    if device.type != "cpu":
        return False
    return (dtype == torch.bfloat16 and _cpu_bf16_supported()) or (dtype == torch.float32 and _cpu_fp32_supported())


def packs(weight: torch.Tensor) -> bool:
    """Whether ``pack`` rearranges ``weight`` (a 2-d CPU weight of a dtype oneDNN runs, ``packs_dtype``)."""
    return weight.dim() == 2 and packs_dtype(weight.dtype, weight.device)


def pack(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` (out, in) in oneDNN's blocked layout when ``packs`` says so, else ``weight``."""
    if not packs(weight):
        return weight
    # No row-count hint: one layout serves every row count (a hint for 1 row changed the results
    # at 64 rows and more).
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous(), None)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` for a weight from ``pack`` (rearranged or not)."""
    if weight.is_mkldnn:
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    return F.linear(x, weight, bias)
