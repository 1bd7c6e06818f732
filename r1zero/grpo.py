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

The per-token objective is PPO's clipped surrogate with ``ratio = exp(logp - logp_old)``:

    loss_t = -min(ratio_t * A, clamp(ratio_t, 1 - eps, 1 + eps_high) * A) + beta * KL_t

``eps_high > eps`` is DAPO's "clip-higher". ``KL_t`` estimates KL(pi || pi_ref) per token from
samples of pi; the default is Schulman's k3 estimator ``exp(ref - logp) - (ref - logp) - 1``
(non-negative, unbiased, low variance; veRL's "low_var_kl", TRL's formula). ``beta = 0`` (the
default; DAPO and Dr. GRPO drop the term) needs no reference model.

The per-token losses are reduced over the completion mask by ``loss_type``, matching TRL's
``GRPOTrainer._compute_loss``:

* ``"grpo"``    mean over sequences of (sequence's token-loss sum / its token count). Each sequence
  weighs the same, so tokens of long completions weigh less (the length bias Dr. GRPO points out).
* ``"bnpo"``    token-loss sum / active tokens of this batch (every token weighs the same within a
  micro-batch). Under gradient accumulation this is intended to stay *per micro-batch*, as in TRL
  (its per-device batch, divided by the accumulation steps) and veRL (token-mean ``agg_loss`` per
  micro-batch): the trainer weighs each micro-batch m's token mean by its share of the mini-batch's
  rows, so one update's loss is ``sum_m (|m| / n) * sum_{t in m} loss_t / tokens(m)``. That is
  the mini-batch's token mean only when one micro-batch holds the whole mini-batch, and grpo's
  per-sequence mean when every micro-batch is one sequence; so ``per_device_train_batch_size``
  changes a bnpo update (tests/test_microbatch.py checks exactly this rule). Use ``"dapo"`` for a
  token mean that does not depend on the micro-batch size.
* ``"dr_grpo"`` token-loss sum / (B * max_completion_length), a constant normaliser.
* ``"dapo"``    token-loss sum / active tokens of the *global* batch (``total_tokens``, counted by
  the caller across gradient-accumulation micro-batches and processes), so that summing the
  micro-batch losses gives exactly the token-mean loss of the whole batch.

The known trap: at the first step of each batch the policy equals the policy that sampled
(``logp == logp_old``, so ``ratio == 1``) and the advantages are centred within every group, so
every token's loss is ``-A_i`` and the loss is a weighted sum of centred advantages. For
``loss_type="grpo"`` (any lengths) or equal completion lengths (any loss type) it is then 0 up to
float rounding (plus the KL term, itself 0 while policy == reference). That is expected and not a
bug: the *gradient* is ``-A_i * grad(logp_t)`` per token (times the normaliser), which is not zero.
Watch the gradient norm, the reward and the clip ratios, not the loss value.
"""
from __future__ import annotations

from typing import Sequence, Union

import torch

__all__ = [
    "LOSS_TYPES",
    "KL_ESTIMATORS",
    "ADVANTAGE_SCALES",
    "group_advantages",
    "group_stats",
    "kl_divergence",
    "policy_loss",
]

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
KL_ESTIMATORS = ("k1", "k2", "k3")
ADVANTAGE_SCALES = ("group", "batch", "none")
_STD_EPS = 1e-4

Rewards = Union[torch.Tensor, Sequence[float]]


def _as_reward_tensor(rewards: Rewards) -> torch.Tensor:
    """A 1-D floating tensor: float inputs keep their dtype, anything else becomes float32."""
    t = rewards if isinstance(rewards, torch.Tensor) else torch.as_tensor(rewards)
    t = t.detach()
    if t.dim() != 1:
        raise ValueError(f"rewards must be 1-D (prompts x group_size), got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        t = t.to(torch.float32)
    return t


def _grouped(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
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


def _normalise_scale(scale: Union[str, bool, None]) -> str:
    if scale is True:
        return "group"
    if scale is False or scale is None:
        return "none"
    if scale not in ADVANTAGE_SCALES:
        raise ValueError(f"unknown advantage scale {scale!r}; expected one of {ADVANTAGE_SCALES} or a bool")
    return scale


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
    scale = _normalise_scale(scale)
    r = _as_reward_tensor(rewards)
    out_dtype = r.dtype
    work = r if r.dtype in (torch.float32, torch.float64) else r.to(torch.float32)
    grouped = _grouped(work, group_size)
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


def group_stats(rewards: Rewards, group_size: int) -> dict:
    """Metrics about the reward groups (python floats).

    Returns ``reward_mean`` (mean of all rewards), ``reward_std`` (mean over groups of the group
    std, Bessel; 0 when group_size == 1, as TRL logs it) and ``frac_reward_zero_std`` (share of
    groups whose rewards are all equal: they give zero advantage, hence no learning signal).
    """
    r = _as_reward_tensor(rewards).to(torch.float64)
    grouped = _grouped(r, group_size)
    if group_size >= 2:
        stds = grouped.std(dim=1)
    else:
        stds = torch.zeros(grouped.shape[0], dtype=r.dtype)
    all_equal = grouped.amax(dim=1) == grouped.amin(dim=1)
    return {
        "reward_mean": r.mean().item(),
        "reward_std": stds.mean().item(),
        "frac_reward_zero_std": all_equal.to(torch.float64).mean().item(),
    }


def kl_divergence(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k3") -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) from log-probs of tokens sampled from pi.

    With ``d = logprobs - ref_logprobs``:
    ``"k1"``: ``d`` (unbiased, high variance, can be negative);
    ``"k2"``: ``0.5 * d**2`` (biased, low variance);
    ``"k3"``: ``exp(-d) + d - 1`` (Schulman's unbiased, non-negative estimator; veRL "low_var_kl",
    TRL's formula). Gradients flow through both arguments; detach ``ref_logprobs`` yourself if
    needed (``policy_loss`` does).
    """
    if estimator == "k1":
        return logprobs - ref_logprobs
    if estimator == "k2":
        return 0.5 * (logprobs - ref_logprobs) ** 2
    if estimator == "k3":
        log_ratio = ref_logprobs - logprobs
        return torch.exp(log_ratio) - log_ratio - 1
    raise ValueError(f"unknown KL estimator {estimator!r}; expected one of {KL_ESTIMATORS}")


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> float:
    return ((values * mask).sum() / mask.sum().clamp(min=1.0)).item()


def _reduce(per_token: torch.Tensor, mask: torch.Tensor, loss_type: str,
            max_completion_length, total_tokens) -> torch.Tensor:
    """Reduce the (B, T) per-token loss over the mask according to ``loss_type``."""
    masked_sum = per_token * mask
    if loss_type == "grpo":
        return (masked_sum.sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    if loss_type == "bnpo":
        return masked_sum.sum() / mask.sum().clamp(min=1.0)
    if loss_type == "dr_grpo":
        length = per_token.shape[1] if max_completion_length is None else max_completion_length
        return masked_sum.sum() / (per_token.shape[0] * length)
    if loss_type == "dapo":
        if total_tokens is None:
            total = mask.sum().clamp(min=1.0)
        else:
            total = torch.as_tensor(total_tokens, dtype=per_token.dtype, device=per_token.device).clamp(min=1.0)
        return masked_sum.sum() / total
    raise ValueError(f"unknown loss_type {loss_type!r}; expected one of {LOSS_TYPES}")


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    loss_type: str = "grpo",
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
    ref_logprobs: torch.Tensor | None = None,
    beta: float = 0.0,
    kl_estimator: str = "k3",
    max_completion_length: int | None = None,
    total_tokens: Union[int, float, torch.Tensor, None] = None,
) -> tuple[torch.Tensor, dict]:
    """The GRPO clipped-surrogate loss (plus optional KL penalty), reduced by ``loss_type``.

    Args:
        logprobs: (B, T) log-probs of the completion tokens under the current policy (with grad).
        old_logprobs: (B, T) log-probs under the policy that sampled them (constant).
        advantages: (B,) one advantage per sequence, or (B, T) one per token (constant).
        mask: (B, T) 1 for completion tokens, 0 for padding (bool or float).
        loss_type: ``"grpo"``, ``"bnpo"``, ``"dr_grpo"`` or ``"dapo"`` (see the module docstring).
        epsilon: lower clip, ratio >= 1 - epsilon. epsilon_high: upper clip (default ``epsilon``).
        ref_logprobs: (B, T) reference-policy log-probs; required when ``beta > 0``; when given,
            the KL metric is reported even if ``beta == 0``.
        beta: KL penalty coefficient. kl_estimator: ``"k1"``, ``"k2"`` or ``"k3"``.
        max_completion_length: the ``dr_grpo`` normaliser (default T).
        total_tokens: the ``dapo`` normaliser: active tokens of the global batch, summed over
            gradient-accumulation micro-batches (and processes; under DDP gradient averaging pass
            the global count / world size, as TRL does). Default: this batch's mask sum.

    Returns:
        ``(loss, metrics)``: a scalar tensor whose gradient flows to ``logprobs`` only, and python
        floats ``clip_ratio/low_mean``, ``clip_ratio/high_mean``, ``clip_ratio/region_mean``,
        ``ratio_mean`` and (when ``ref_logprobs`` is given) ``kl``, all masked token means.
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"unknown loss_type {loss_type!r}; expected one of {LOSS_TYPES}")
    if kl_estimator not in KL_ESTIMATORS:
        raise ValueError(f"unknown KL estimator {kl_estimator!r}; expected one of {KL_ESTIMATORS}")
    if beta > 0 and ref_logprobs is None:
        raise ValueError("beta > 0 needs ref_logprobs (log-probs of the reference model)")
    if logprobs.dim() != 2 or old_logprobs.shape != logprobs.shape or mask.shape != logprobs.shape:
        raise ValueError(
            f"logprobs, old_logprobs and mask must share one (B, T) shape, got {tuple(logprobs.shape)}, "
            f"{tuple(old_logprobs.shape)}, {tuple(mask.shape)}"
        )
    eps_low = epsilon
    eps_high = epsilon if epsilon_high is None else epsilon_high
    mask = mask.detach().to(logprobs.dtype)
    adv = torch.as_tensor(advantages).detach().to(device=logprobs.device, dtype=logprobs.dtype)
    if not (adv.dim() == 2 and adv.shape == logprobs.shape):  # else per-token already (ppo, reinforce_pp)
        adv = adv.reshape(-1, 1)
        if adv.shape[0] != logprobs.shape[0]:
            raise ValueError(f"advantages must have one value per sequence ({logprobs.shape[0]}), got {adv.shape[0]}")

    ratio = torch.exp(logprobs - old_logprobs.detach())
    clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high)
    per_token = -torch.min(ratio * adv, clipped * adv)
    kl = None
    if ref_logprobs is not None:
        kl = kl_divergence(logprobs, ref_logprobs.detach(), kl_estimator)
        if beta > 0:
            per_token = per_token + beta * kl
    loss = _reduce(per_token, mask, loss_type, max_completion_length, total_tokens)

    with torch.no_grad():
        r = ratio.detach()
        low = ((r < 1 - eps_low) & (adv < 0)).to(mask.dtype)
        high = ((r > 1 + eps_high) & (adv > 0)).to(mask.dtype)
        metrics = {
            "clip_ratio/low_mean": _masked_mean(low, mask),
            "clip_ratio/high_mean": _masked_mean(high, mask),
            "clip_ratio/region_mean": _masked_mean(torch.maximum(low, high), mask),
            "ratio_mean": _masked_mean(r, mask),
        }
        if kl is not None:
            metrics["kl"] = _masked_mean(kl.detach(), mask)
    return loss, metrics
