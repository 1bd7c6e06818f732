"""Tensor pieces every estimator shares: reward vectors and their groups, masked means, whitening.

Masks are 1 for completion tokens and 0 for padding. ``masked_mean`` and ``masked_whiten`` take an
optional ``all_sum`` (a sum over processes, r1zero.training.distributed.all_sum bound to the run's
processes): with it, the statistics are those of the global batch, so a run on N processes whitens
exactly what the one-process run whitens; without it (one process) they are plain tensor reductions.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence, Union

import torch

Rewards = Union[torch.Tensor, Sequence[float]]
AllSum = Optional[Callable[[list], list]]

WHITEN_EPS = 1e-8  # veRL's masked_whiten


def as_reward_tensor(rewards: Rewards) -> torch.Tensor:
    """A 1-D floating tensor: float inputs keep their dtype, anything else becomes float32."""
    t = rewards if isinstance(rewards, torch.Tensor) else torch.as_tensor(rewards)
    t = t.detach()
    if t.dim() != 1:
        raise ValueError(f"rewards must be 1-D (prompts x group_size), got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        t = t.to(torch.float32)
    return t


def grouped(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """Reshape N rewards into (N // group_size, group_size), validating the sizes."""
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size must be a positive integer, got {group_size!r}")
    n = rewards.numel()
    if n == 0 or n % group_size != 0:
        raise ValueError(
            f"number of rewards ({n}) must be a positive multiple of group_size ({group_size}); "
            "rewards are laid out prompt by prompt, group_size completions each"
        )
    return rewards.view(n // group_size, group_size)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim=None, all_sum: AllSum = None) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` is set (over ``dim``, or all of it; 0 where nothing is set).
    With ``all_sum`` (no ``dim``) the mean over every process's tokens, as a 0-d float64 tensor."""
    mask = mask.to(values.dtype)
    if dim is None and all_sum is not None:
        total, count = all_sum([(values * mask).sum(), mask.sum()])
        return torch.tensor(total / max(count, 1.0), dtype=torch.float64)
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp(min=1.0)
    return (values * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, all_sum: AllSum = None) -> torch.Tensor:
    """(values - mean) / sqrt(var + 1e-8) over the masked entries; var with Bessel's correction."""
    mask = mask.to(values.dtype)
    if all_sum is not None:
        total, n = all_sum([(values * mask).sum(), mask.sum()])
        mean = total / max(n, 1.0)
        var = all_sum([(((values - mean) ** 2) * mask).sum()])[0] / max(n, 1.0)
        if n > 1:
            var = var * n / (n - 1)
        return (values - mean) / math.sqrt(var + WHITEN_EPS)
    n = mask.sum()
    mean = (values * mask).sum() / n.clamp(min=1.0)
    var = (((values - mean) ** 2) * mask).sum() / n.clamp(min=1.0)
    if n > 1:
        var = var * n / (n - 1)
    return (values - mean) * torch.rsqrt(var + WHITEN_EPS)


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """(B,) column of each row's last completion token (0 for an empty row)."""
    return (mask.long().sum(-1) - 1).clamp(min=0)
