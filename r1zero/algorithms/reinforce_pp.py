"""REINFORCE++ (Hu, 2025; veRL's ``reinforce_plus_plus``): no critic, no groups.

Per-token rewards (the outcome reward on the last token, minus the KL penalty on every token:
r1zero.algorithms.reward_kl) are summed from each token to the end of its completion with discount
``gamma`` to give returns, and the returns are whitened over all completion tokens of the step
(every process's, under torchrun).
"""
from __future__ import annotations

import torch

from r1zero.algorithms.base import RolloutBatch, register
from r1zero.algorithms.reward_kl import RewardKLAlgorithm
from r1zero.algorithms.tensors import AllSum, masked_whiten

__all__ = ["reinforce_pp_advantages", "ReinforcePP"]


def reinforce_pp_advantages(token_level_rewards: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
                            all_sum: AllSum = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages, returns), both (B, T): discounted reward-to-go, whitened over the mask."""
    mask = mask.to(token_level_rewards.dtype)
    returns = torch.zeros_like(token_level_rewards)
    running = torch.zeros_like(token_level_rewards[:, 0])
    for t in reversed(range(token_level_rewards.shape[1])):
        running = token_level_rewards[:, t] + gamma * running
        returns[:, t] = running
        running = running * mask[:, t]  # nothing flows back across padding
    advantages = masked_whiten(returns, mask, all_sum) * mask
    return advantages, returns


@register
class ReinforcePP(RewardKLAlgorithm):
    name = "reinforce_pp"

    def estimate(self, batch: RolloutBatch, token_level_rewards: torch.Tensor):
        adv, returns = reinforce_pp_advantages(token_level_rewards, batch.loss_mask, self.cfg.gamma,
                                               self.ctx.global_sum)
        return adv, returns, {}
