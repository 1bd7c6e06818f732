"""RLOO, REINFORCE Leave-One-Out (Ahmadian et al., 2024; TRL's ``RLOOTrainer``, veRL's ``rloo``).

The baseline of a completion is the mean reward of the *other* completions of its prompt, so it
does not depend on the sample itself: ``A_i = r_i - (sum_group - r_i) / (G - 1)``, where ``r_i`` is
the completion's reward minus ``kl_coef`` x its summed k1 KL (r1zero.algorithms.reward_kl); one
scalar per completion, on each of its tokens. ``normalize=True`` then whitens over the batch (mean
0, std 1 with Bessel, + 1e-4), TRL's ``normalize_advantages``.
"""
from __future__ import annotations

import torch

from r1zero.algorithms.base import RolloutBatch, register
from r1zero.algorithms.reward_kl import RewardKLAlgorithm
from r1zero.algorithms.tensors import Rewards, as_reward_tensor, grouped
from r1zero.errors import need

__all__ = ["rloo_advantages", "RLOO"]

_NORM_EPS = 1e-4  # TRL's normalize_advantages


def rloo_advantages(rewards: Rewards, group_size: int, normalize: bool = False) -> torch.Tensor:
    """(N,) leave-one-out advantages of N = prompts x group_size rewards (groups contiguous)."""
    r = as_reward_tensor(rewards)
    if group_size < 2:
        raise ValueError("RLOO needs group_size >= 2 (the baseline is the mean of the other samples)")
    g = grouped(r, group_size)
    baseline = (g.sum(dim=1, keepdim=True) - g) / (group_size - 1)
    adv = (g - baseline).reshape(-1)
    if normalize:
        adv = (adv - adv.mean()) / (adv.std() + _NORM_EPS)
    return adv


@register
class RLOO(RewardKLAlgorithm):
    name = "rloo"

    @classmethod
    def check_config(cls, cfg) -> None:
        super().check_config(cfg)
        need(cfg.num_generations >= 2, "num_generations",
             "must be >= 2 for rloo (the baseline is the other samples' mean)")

    def estimate(self, batch: RolloutBatch, token_level_rewards: torch.Tensor):
        # Groups are whole on every process, so the leave-one-out baseline is local.
        adv = rloo_advantages(token_level_rewards.sum(-1), batch.group_size).unsqueeze(1) * batch.loss_mask
        return adv, None, {}
