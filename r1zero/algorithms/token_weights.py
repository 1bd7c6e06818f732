"""What is kept of a micro-batch's per-token policy loss, and how much each token weighs.

Each function here gives a multiplier of the per-token loss, computed without gradients, that
r1zero.algorithms.losses.policy_loss applies around every registered objective, in TRL 1.16's order:
the sampler-mismatch weights (r1zero samples with a bf16 copy, other kernels; TRL with vLLM), the
off-policy sequence mask of DeepSeek-V3.2, and the high-entropy token mask of "Beyond the 80/20
rule". Their statistics are 0-d tensors, read after backward with the update's other metrics.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from r1zero.algorithms.stats import LossStats
from r1zero.algorithms.tensors import masked_mean


def _mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    # A 0-d tensor, not a float: reading it here would make the host wait before backward().
    return masked_mean(values, mask).detach()


SAMPLER_CORRECTION_MODES = ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask")


def sampler_correction(old_logprobs: torch.Tensor, sampled_logprobs: torch.Tensor, mask: torch.Tensor, mode: str,
                       clip_min: float | None, clip_max: float | None) -> tuple[torch.Tensor, LossStats]:
    """(weights, stats): the importance weight ``pi_old / pi_sampler`` that corrects the gap between
    the trainer's log-probs and the sampler's (bf16 copy, other kernels), as TRL 1.16 computes it.

    ``mode`` is ``<level>_<action>``: level ``token`` (one ratio per token, (B, T)) or ``sequence``
    (the exp of the completion's summed log-ratio, (B, 1)); action ``truncate`` (clamp into
    [clip_min, clip_max], TIS) or ``mask`` (0 outside it, MIS). A bound of None is no bound. A NaN
    sampler log-prob counts as no gap. The statistics: the share of tokens (token level) or of
    completions with tokens (sequence level) outside the bounds (``sampler_clipped`` or
    ``sampler_masked``) and the weights' mean (``sampler_ratio_mean``, TRL's
    ``sampling/importance_sampling_ratio/mean``).
    """
    if mode not in SAMPLER_CORRECTION_MODES:
        raise ValueError(f"unknown vllm_importance_sampling_mode {mode!r}; expected one of {SAMPLER_CORRECTION_MODES}")
    level, action = mode.split("_")
    mask = mask.to(old_logprobs.dtype)
    with torch.no_grad():
        log_ratio = torch.nan_to_num((old_logprobs - sampled_logprobs.to(old_logprobs.dtype)) * mask, nan=0.0)
        if level == "sequence":
            log_ratio = log_ratio.sum(-1, keepdim=True)
        ratio = torch.exp(log_ratio)
        low = -math.inf if clip_min is None else clip_min
        high = math.inf if clip_max is None else clip_max
        outside = (ratio < low) | (ratio > high)
        weights = torch.clamp(ratio, min=clip_min, max=clip_max) if action == "truncate" else \
            ratio.masked_fill(outside, 0.0)
        where = (mask.sum(-1, keepdim=True) > 0).to(mask.dtype) if level == "sequence" else mask
        share = _mean(outside.to(mask.dtype), where)
        stats = LossStats(sampler_ratio_mean=_mean(weights, where))
        if action == "truncate":
            stats.sampler_clipped = share
        else:
            stats.sampler_masked = share
    return weights, stats


def off_policy_mask(advantages: torch.Tensor, logprobs: torch.Tensor, sampled_logprobs: torch.Tensor,
                    mask: torch.Tensor, threshold: float) -> torch.Tensor:
    """DeepSeek-V3.2's off-policy sequence mask, (B, 1) (or (B, T) with per-token advantages): 0 for
    a completion with a negative advantage whose mean token KL(sampler || current), estimated as
    ``sampled - logprobs``, exceeds ``threshold``; 1 for every other (such completions teach the
    most wrong things, and a positive one is kept whatever its drift)."""
    with torch.no_grad():
        kl = torch.nan_to_num(sampled_logprobs.to(logprobs.dtype) - logprobs.detach(), nan=0.0)
        drift = (kl * mask).sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp(min=1.0)
        return ((advantages >= 0) | (drift <= threshold)).to(mask.dtype)


def high_entropy_mask(entropy: torch.Tensor, mask: torch.Tensor, quantile: float,
                      all_gather: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """(B, T) 1 for the completion tokens whose entropy is at least the ``1 - quantile`` quantile of
    the batch's completion tokens (over every process with ``all_gather``), 0 elsewhere: "Beyond the
    80/20 rule" trains on the forking tokens only (quantile 0.2). Quantile 0 keeps the highest."""
    with torch.no_grad():
        values = entropy.detach()[mask.bool()].float()
        if all_gather is not None:
            values = all_gather(values)
        if values.numel() == 0:
            return torch.zeros_like(mask)
        threshold = torch.quantile(values, 1 - quantile)
        return ((entropy.detach() * mask >= threshold) & mask.bool()).to(mask.dtype)


__all__ = ["SAMPLER_CORRECTION_MODES", "sampler_correction", "off_policy_mask", "high_entropy_mask"]

