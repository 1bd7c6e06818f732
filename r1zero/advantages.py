"""Advantage estimators besides GRPO's (which stays in r1zero.grpo.group_advantages).

* ``rloo_advantages``: REINFORCE Leave-One-Out (Ahmadian et al., 2024; TRL's ``RLOOTrainer``,
  veRL's ``rloo``). The baseline of a completion is the mean reward of the *other* completions of
  its prompt, so it is an unbiased baseline (it does not depend on the sample itself):
  ``A_i = r_i - (sum_group - r_i) / (G - 1)``. ``normalize=True`` then whitens over the batch
  (mean 0, std 1 with Bessel, + 1e-4), TRL's ``normalize_advantages``.
* ``reinforce_pp_advantages``: REINFORCE++ (Hu, 2025; veRL's ``reinforce_plus_plus``). Per-token
  rewards (the outcome reward on the last token, minus the KL penalty on every token) are summed
  from each token to the end of its completion (discount ``gamma``) to give returns, and the
  returns are whitened over all completion tokens of the batch. No critic, no groups.
* ``token_rewards``: the per-token reward both REINFORCE++ and PPO use: the sequence reward on the
  last completion token, minus ``kl_coef`` times the k1 KL (``logp_old - logp_ref``) on every
  token (veRL's ``apply_kl_penalty``).
* ``masked_whiten``: veRL's ``masked_whiten`` (mean and unbiased variance over the mask).

All functions are pure tensor functions; masks are 1 for completion tokens and 0 for padding.
"""
from __future__ import annotations

import torch

from r1zero.grpo import Rewards, _as_reward_tensor, _grouped

__all__ = ["rloo_advantages", "reinforce_pp_advantages", "token_rewards", "masked_mean", "masked_whiten",
           "last_token_index"]

_WHITEN_EPS = 1e-8   # veRL's masked_whiten
_NORM_EPS = 1e-4     # TRL's normalize_advantages


def rloo_advantages(rewards: Rewards, group_size: int, normalize: bool = False) -> torch.Tensor:
    """(N,) leave-one-out advantages of N = prompts x group_size rewards (groups contiguous)."""
    r = _as_reward_tensor(rewards)
    if group_size < 2:
        raise ValueError("RLOO needs group_size >= 2 (the baseline is the mean of the other samples)")
    g = _grouped(r, group_size)
    baseline = (g.sum(dim=1, keepdim=True) - g) / (group_size - 1)
    adv = (g - baseline).reshape(-1)
    if normalize:
        adv = (adv - adv.mean()) / (adv.std() + _NORM_EPS)
    return adv


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim=None) -> torch.Tensor:
    mask = mask.to(values.dtype)
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp(min=1.0)
    return (values * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


def masked_whiten(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(values - mean) / sqrt(var + 1e-8) over the masked entries; var with Bessel's correction."""
    mask = mask.to(values.dtype)
    n = mask.sum()
    mean = (values * mask).sum() / n.clamp(min=1.0)
    var = (((values - mean) ** 2) * mask).sum() / n.clamp(min=1.0)
    if n > 1:
        var = var * n / (n - 1)
    return (values - mean) * torch.rsqrt(var + _WHITEN_EPS)


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """(B,) column of each row's last completion token (0 for an empty row)."""
    return (mask.long().sum(-1) - 1).clamp(min=0)


def token_rewards(rewards: torch.Tensor, completion_mask: torch.Tensor, old_logprobs: torch.Tensor | None = None,
                  ref_logprobs: torch.Tensor | None = None, kl_coef: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-token rewards (B, T), per-token k1 KL (B, T), 0 when no reference is given).

    The sequence reward sits on the last completion token (the one that ends the answer); the
    k1 KL ``logp_old - logp_ref`` of every completion token is subtracted with ``kl_coef``.
    """
    mask = completion_mask.to(torch.float32)
    scores = torch.zeros_like(mask)
    scores.scatter_(1, last_token_index(completion_mask).unsqueeze(1), torch.as_tensor(rewards, dtype=mask.dtype).unsqueeze(1))
    scores = scores * mask
    if ref_logprobs is None or old_logprobs is None:
        return scores, torch.zeros_like(scores)
    kl = (old_logprobs.float() - ref_logprobs.float()) * mask
    return scores - kl_coef * kl, kl


def reinforce_pp_advantages(token_level_rewards: torch.Tensor, mask: torch.Tensor,
                            gamma: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages, returns), both (B, T): discounted reward-to-go, whitened over the mask."""
    mask = mask.to(token_level_rewards.dtype)
    returns = torch.zeros_like(token_level_rewards)
    running = torch.zeros_like(token_level_rewards[:, 0])
    for t in reversed(range(token_level_rewards.shape[1])):
        running = token_level_rewards[:, t] + gamma * running
        returns[:, t] = running
        running = running * mask[:, t]  # nothing flows back across padding
    advantages = masked_whiten(returns, mask) * mask
    return advantages, returns
