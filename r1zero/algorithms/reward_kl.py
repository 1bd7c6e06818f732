"""The reward-KL family (TinyZero's PPO, REINFORCE++, RLOO): what ppo, reinforce_pp and rloo share.

Unlike GRPO, whose KL term (``beta``) sits in the loss, these put the KL in the reward, as veRL does:
per-token rewards are the outcome reward on the last completion token minus ``kl_coef`` x the k1
KL (``logp_old - logp_ref``) on every token (veRL's ``apply_kl_penalty``). The coefficient is fixed,
or (``kl_ctl: adaptive``) moved after each step toward the ``kl_target`` per-token KL over
``kl_horizon`` samples (Ziegler et al.; veRL's controller). pi_old always takes its own forward
pass, since the reward KL needs it before the update. The coefficient is part of every checkpoint.
Each member says how per-token rewards become advantages (``estimate``).
"""
from __future__ import annotations

import torch

from r1zero.algorithms.base import Algorithm, RolloutBatch
from r1zero.algorithms.tensors import last_token_index, masked_mean
from r1zero.errors import need
from r1zero.observe import metrics as metric_names

__all__ = ["KLController", "token_rewards", "RewardKLAlgorithm"]


class KLController:
    """The reward-KL coefficient: fixed, or adaptive (proportional control toward ``target``)."""

    def __init__(self, kind: str, init: float, target: float = 0.1, horizon: int = 10000):
        self.kind, self.value, self.target, self.horizon = kind, float(init), float(target), int(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        if self.kind != "adaptive":
            return
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon


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


class RewardKLAlgorithm(Algorithm):
    always_old_logprobs = True

    def __init__(self, cfg, ctx):
        super().__init__(cfg, ctx)
        self.kl_ctl = KLController(cfg.kl_ctl, cfg.kl_coef, cfg.kl_target, cfg.kl_horizon)

    @classmethod
    def check_config(cls, cfg) -> None:
        super().check_config(cfg)
        need(0 <= cfg.gamma <= 1, "gamma", "must be in [0, 1] (TinyZero PPO: 1.0)")
        need(cfg.kl_coef >= 0, "kl_coef", "must be >= 0 (0 = no KL penalty in the reward)")
        need(cfg.kl_target > 0, "kl_target", "must be > 0, e.g. 0.1")
        need(cfg.kl_horizon >= 1, "kl_horizon", "must be >= 1, e.g. 10000")

    @classmethod
    def uses_reference(cls, cfg) -> bool:
        return cfg.beta > 0 or cfg.kl_coef > 0

    def estimate(self, batch: RolloutBatch, token_level_rewards: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, float]]:
        """(advantages (N, C), returns (N, C) or None, metrics) from the per-token rewards."""
        raise NotImplementedError

    def advantages(self, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        cmask = batch.completion_mask.float()
        coef = self.kl_ctl.value
        tok_r, kl = token_rewards(batch.rewards, cmask, batch.old_logprobs, batch.ref_logprobs, coef)
        adv, returns, extra = self.estimate(batch, tok_r)
        mean = self.mean
        mask = batch.loss_mask
        m: dict[str, float] = {metric_names.KL_COEF: coef}
        if batch.ref_logprobs is not None:
            seq_kl = masked_mean(kl, cmask, dim=-1)
            total, n = self.ctx.all_sum([seq_kl.sum(), seq_kl.numel()]) if self.ctx.strategy.distributed else (None, None)
            kl_mean = float(seq_kl.mean()) if total is None else total / n
            m[metric_names.KL_PENALTY] = kl_mean
            self.kl_ctl.update(kl_mean, batch.rewards.numel() if n is None else int(n))
        adv_mean = mean(adv, mask)
        m[metric_names.ADVANTAGES_MEAN] = float(adv_mean)
        m[metric_names.ADVANTAGES_STD] = float(mean((adv - adv_mean) ** 2, mask).sqrt())
        if returns is not None:
            rm = mean(returns, mask)
            m[metric_names.RETURNS_MEAN] = float(rm)
            m[metric_names.RETURNS_STD] = float(mean((returns - rm) ** 2, mask).sqrt())
        m.update(extra)
        return adv, m

    def mean(self, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """A masked mean over the whole step (every process's tokens)."""
        return masked_mean(values, mask, all_sum=self.ctx.global_sum)

    def state(self) -> dict:
        return {**super().state(), "kl_coef": self.kl_ctl.value}

    def restore(self, state: dict, tensor_state: dict | None, steps_done: int) -> None:
        super().restore(state, tensor_state, steps_done)
        if "kl_coef" in state:
            self.kl_ctl.value = float(state["kl_coef"])

