"""GRPO: group advantages, the clipped policy loss, and the KL penalty, as pure tensor functions.

Group Relative Policy Optimisation (Shao et al., 2024, DeepSeekMath; used by DeepSeek-R1-Zero)
drops PPO's value network. For every prompt we sample a *group* of ``G`` completions, score each
with a verifiable reward, and use the reward relative to the group as the advantage of every token
of that completion:

    A_i = (r_i - mean(r_group)) / (std(r_group) + 1e-4)        scale="group" (the paper)
    A_i = (r_i - mean(r_group)) / (std(r_all) + 1e-4)          scale="batch" (TRL scale_rewards="batch")
    A_i =  r_i - mean(r_group)                                 scale="none"  (Dr. GRPO)

Standard deviations use Bessel's correction (``torch.std`` default), as TRL does. A group whose
rewards are all equal carries no signal: its advantages are exactly 0 (``group_stats`` reports the
share of such groups as ``frac_reward_zero_std``).

The update is the shared clipped surrogate (r1zero.algorithms.losses) with one advantage on every
token of a completion; ``beta > 0`` adds the KL term and loads the reference model.
"""
from __future__ import annotations

from typing import Union

import torch

from r1zero.algorithms.base import Algorithm, RolloutBatch, register
from r1zero.algorithms.stats import GroupStats
from r1zero.config.fields import ADVANTAGE_SCALES, normalise_scale
from r1zero.errors import ConfigError
from r1zero.algorithms.tensors import Rewards, as_reward_tensor, grouped as group_rows

__all__ = ["ADVANTAGE_SCALES", "normalise_scale", "group_advantages", "group_stats", "GRPO"]

_STD_EPS = 1e-4


def group_advantages(rewards: Rewards, group_size: int, scale: Union[str, bool] = "group") -> torch.Tensor:
    """GRPO advantages: each reward minus its group's mean, optionally divided by a std.

    Args:
        rewards: 1-D tensor or list of N = prompts x group_size rewards, groups contiguous.
        group_size: completions per prompt (G).
        scale: ``"group"`` divide by (group std + 1e-4); ``"batch"`` divide by (std of all N
            rewards + 1e-4); ``"none"`` no division. ``True``/``False`` mean ``"group"``/``"none"``
            (TRL's old boolean ``scale_rewards``). Stds use Bessel's correction.

    Returns:
        (N,) advantages, float32, or the input's dtype if it is a floating tensor (e.g. float64).
    """
    scale = normalise_scale(scale)
    r = as_reward_tensor(rewards)
    out_dtype = r.dtype
    work = r if r.dtype in (torch.float32, torch.float64) else r.to(torch.float32)
    grouped = group_rows(work, group_size)
    if scale == "group" and group_size < 2:
        raise ValueError("scale='group' needs group_size >= 2 (a std of one sample is undefined)")
    if scale == "batch" and work.numel() < 2:
        raise ValueError("scale='batch' needs at least 2 rewards (a std of one sample is undefined)")
    adv = grouped - grouped.mean(dim=1, keepdim=True)
    if scale == "group":
        adv = adv / (grouped.std(dim=1, keepdim=True) + _STD_EPS)
    elif scale == "batch":
        adv = adv / (work.std() + _STD_EPS)
    return adv.reshape(-1).to(out_dtype)


def group_stats(rewards: Rewards, group_size: int) -> GroupStats:
    """What the reward groups say (python floats): ``reward_mean`` (mean of all rewards),
    ``reward_std`` (mean over groups of the group std, Bessel; 0 when group_size == 1, as TRL logs
    it) and ``frac_reward_zero_std`` (share of groups whose rewards are all equal: they give zero
    advantage, hence no learning signal).
    """
    r = as_reward_tensor(rewards).to(torch.float64)
    grouped = group_rows(r, group_size)
    if group_size >= 2:
        stds = grouped.std(dim=1)
    else:
        stds = torch.zeros(grouped.shape[0], dtype=r.dtype)
    all_equal = grouped.amax(dim=1) == grouped.amin(dim=1)
    return GroupStats(reward_mean=r.mean().item(), reward_std=stds.mean().item(),
                      frac_reward_zero_std=all_equal.to(torch.float64).mean().item())


@register
class GRPO(Algorithm):
    """Group-relative advantages; everything else is the base algorithm's (see the module docstring)."""

    name = "grpo"
    sequence_ratio = True

    @classmethod
    def check_config(cls, cfg) -> None:
        super().check_config(cfg)
        if cfg.scale == "group" and cfg.num_generations < 2:
            raise ConfigError("config: 'num_generations' must be >= 2 when scale_rewards is 'group' (one sample has "
                              "no group std); raise it or set scale_rewards=none")
        if cfg.kl_coef:
            raise ConfigError("config: 'kl_coef' is the reward KL of ppo/rloo/reinforce_pp; with algorithm=grpo use "
                              "beta (KL in the loss)")

    def advantages(self, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        # Over the whole step (every process's rewards), so scale="batch" sees the global std.
        adv = group_advantages(batch.global_rewards, batch.group_size, scale=self.cfg.scale)
        return adv[batch.global_rows], {}
