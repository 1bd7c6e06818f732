"""The typed statistics the algorithms hand to the loop (torchtune's ``GRPOStats`` shape): fields,
not metric names; r1zero.observe.metrics names them where they are logged."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple, Optional

import torch

__all__ = ["GroupStats", "LossStats"]


class GroupStats(NamedTuple):
    """What the reward groups of a step say (python floats; r1zero.algorithms.grpo.group_stats)."""

    reward_mean: float    # mean of all rewards
    reward_std: float     # mean over groups of the group std (Bessel; 0 when a group has one sample)
    frac_reward_zero_std: float  # share of groups whose rewards are all equal (no learning signal)


Stat = Optional[torch.Tensor]


@dataclass
class LossStats:
    """One micro-batch's policy-loss statistics: detached 0-d tensors on the device (the update loop
    reads them after backward, all at once), None where that part of the loss is off. Token means
    over the mask; at the sequence level (GSPO) means over the completions that have tokens."""

    clip_low: Stat = None            # clipped surrogate: share with w < 1 - eps and A < 0
    clip_high: Stat = None           # share with w > 1 + eps_high and A > 0
    clip_region: Stat = None         # either
    ratio_mean: Stat = None          # the importance weight w (clipped surrogate, cispo, sapo)
    cispo_clip_ratio: Stat = None    # cispo: share whose weight was capped (A > 0)
    vespo_phi: Stat = None           # vespo: the sequence weight phi(w), over completions
    sampler_clipped: Stat = None     # sampler-mismatch correction, truncate: share outside the bounds
    sampler_masked: Stat = None      # mask: share outside the bounds
    sampler_ratio_mean: Stat = None  # the correction's weights
    off_policy_masked: Stat = None   # share dropped by the off-policy sequence mask
    entropy_kept: Stat = None        # share kept by the high-entropy token mask
    kl: Stat = None                  # KL(pi || pi_ref), when a reference is given

    def add(self, other: LossStats) -> None:
        """Take every statistic ``other`` has."""
        for f in dataclasses.fields(other):
            if (value := getattr(other, f.name)) is not None:
                setattr(self, f.name, value)
