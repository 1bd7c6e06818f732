"""The arithmetic of a completion token's log-prob and entropy from the LM head's logits, and two
autograd functions that compute it with less memory than autograd's own formulas.

r1zero.training.logprobs runs the model and cuts the logits into chunks; this module turns a
chunk into (log-prob of each target, entropy) at the sampling temperature (the samples came from the
tempered distribution, so their log-probs must too). ``target_logprobs`` is the reference formula;
``sliced_target_logprobs`` computes the same bits a slice of rows at a time when no entropy gradient
is asked; ``GradInPlace`` hands the tied embedding / LM head weight to the pass so that its
gradients land in ``.grad`` in place. Both exist for memory, which a CPU pays for in time (the
docstrings say how much).
"""
from __future__ import annotations

import torch


def at_least_fp32(logits: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 logits (autocast) up to float32 for the softmax; float64 (a float64 model, as the
    micro-batch tests use) stays float64."""
    return logits if logits.dtype == torch.float64 else logits.float()


def tempered(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """logits / temperature; at 1 the logits themselves (x / 1 is x: a pass over the (tokens, vocab)
    logits, and its backward, saved)."""
    return logits if temperature == 1.0 else logits / temperature


def target_logprobs(logits: torch.Tensor, targets: torch.Tensor, temperature: float,
                    entropy_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-prob of each target, entropy) over the last dimension of float32 (or float64) ``logits``
    at ``temperature``; the entropy carries a gradient only with ``entropy_grad``."""
    logits = tempered(logits, temperature)
    logz = torch.logsumexp(logits, dim=-1)
    logp = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logz
    with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
        entropy = logz - (torch.softmax(logits, dim=-1) * logits).sum(-1)
    return logp, entropy


# Rows of logits the CPU takes at a time in ``sliced_target_logprobs``: about 4 MB of float32 (21 rows of
# SmolLM2's 49,152 columns), so a slice's temporaries are small and every slice reuses their memory.
CPU_SLICE_ELEMENTS = 1 << 20


def _slice_rows(logits: torch.Tensor) -> int:
    """Rows of ``logits`` taken at a time: ``CPU_SLICE_ELEMENTS`` worth on a CPU, all of them elsewhere."""
    n, vocab = logits.shape
    return max(1, CPU_SLICE_ELEMENTS // vocab) if logits.device.type == "cpu" else max(n, 1)


def _slice(logits: torch.Tensor, s: int, step: int, temperature: float) -> torch.Tensor:
    """Rows s .. s + step of ``logits``, at least float32, over the temperature."""
    return tempered(at_least_fp32(logits[s:s + step]), temperature)


def sliced_target_logprobs(logits: torch.Tensor, targets: torch.Tensor,
                           temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``target_logprobs`` without an entropy gradient (the entropies carry none), a slice of rows
    at a time, forward and backward.

    The same formulas in the same order, so the same bits (tests/test_logprob_paths.py): the logits
    in float32 (float64 stays), over the temperature, log-sum-exp, the target's logit less it; the
    entropy from the softmax; the gradient scatter(g) - g * exp(x - lse), over the temperature, cast
    to the logits' dtype. What changes is memory: autograd's formulas make each step a new tensor of
    the whole chunk (tokens x vocabulary: 156 MB in float32 for 793 tokens of SmolLM2), nine to
    eleven of them forward and backward; here a slice's temporaries are a few MB, reused, and the
    backward writes one tensor of the chunk's size. On a CPU, new memory is dear: on the 2-core
    Firecracker VM here a page a process touches for the first time cost 6-33 us (the host backs it
    then), so the first update of the embedded default, which takes the process from about 1.7 to
    4.7 GB, took 13-15 s against about 2 s later. Measured with ``GradInPlace`` on the embedded
    default (seed 1, 2 threads, two runs each, alternated): peak memory after 4 steps 5.2-5.3 GB
    against 5.7, the 27 updates after the first 40.3-43.2 s against 44.0-47.1 s. On CUDA the chunk
    is one slice.

    The entropy is computed after the log-prob's function, apart from it: a checkpointed chunk's
    backward recomputes its forward only up to the last tensor the backward needs, so the entropy
    (about 0.1 s for 793 tokens of SmolLM2 on the 2-core VM) is not computed a second time.
    """
    logp, lse = _SlicedLogprobs.apply(logits, targets, temperature)
    step = _slice_rows(logits)
    entropy = torch.empty_like(lse)
    with torch.no_grad():
        for s in range(0, logits.shape[0], step):
            x = _slice(logits, s, step, temperature)
            entropy[s:s + step] = lse[s:s + step] - (torch.softmax(x, dim=-1) * x).sum(-1)
    return logp, entropy


class _SlicedLogprobs(torch.autograd.Function):
    """(log-prob of each target, log-sum-exp) for ``sliced_target_logprobs``; only the first has a gradient."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, temperature: float):
        n, step = logits.shape[0], _slice_rows(logits)
        lse = logits.new_empty(n, dtype=at_least_fp32(logits[:0]).dtype)
        picked = torch.empty_like(lse)
        for s in range(0, n, step):
            x = _slice(logits, s, step, temperature)
            lse[s:s + step] = torch.logsumexp(x, dim=-1)
            picked[s:s + step] = x.gather(-1, targets[s:s + step].unsqueeze(-1)).squeeze(-1)
        ctx.save_for_backward(logits, targets, lse)
        ctx.temperature, ctx.step = temperature, step
        ctx.mark_non_differentiable(lse)
        return picked - lse, lse

    @staticmethod
    def backward(ctx, grad: torch.Tensor, _lse_grad):
        logits, targets, lse = ctx.saved_tensors
        step, temperature = ctx.step, ctx.temperature
        out = torch.empty_like(logits)
        for s in range(0, logits.shape[0], step):
            g = grad[s:s + step].unsqueeze(-1)
            piece = (_slice(logits, s, step, temperature) - lse[s:s + step].unsqueeze(-1)).exp_().mul_(-g)
            piece.scatter_add_(-1, targets[s:s + step].unsqueeze(-1), g)  # the picked logit's
            out[s:s + step] = piece if temperature == 1.0 else piece.div_(temperature)
        return out, None, None


class GradInPlace(torch.autograd.Function):
    """``weight`` as ``dtype`` (itself, or its cast), whose gradient is added into ``weight.grad`` in place.

    For the tied embedding and LM head (r1zero.training.logprobs.sparse_embedding_grad): autograd
    sums a leaf's incoming gradients out of place (the head's, cast to float32 from autocast's bf16,
    and each lookup's sparse one), then adds the sum into ``.grad``: three to six new vocabulary x hidden tensors a
    micro-batch (113 MB each for SmolLM2 in float32). Here each gradient is added where it ends up,
    in the dtype it comes in (bf16 into float32 converts exactly), so a step makes one such tensor,
    its first ``.grad`` (tests/test_lean_update.py). Only the order of the float32 sums over
    micro-batches changes. ``.grad`` hooks of this weight do not run; nothing of r1zero's sets one
    where this is used (one process, no DDP/FSDP). Why the memory matters: ``sliced_target_logprobs``."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        ctx.weight = weight  # the leaf itself, whose .grad the backward sets (not a saved copy of its values)
        return weight.view_as(weight) if dtype == weight.dtype else weight.to(dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        weight = ctx.weight
        if weight.grad is None:
            weight.grad = torch.zeros_like(weight)
        weight.grad.add_(grad)
        return None, None
