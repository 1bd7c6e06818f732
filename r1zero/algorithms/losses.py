"""Policy losses: the clipped surrogate with an optional KL penalty, and its reductions.

The per-token objective is PPO's clipped surrogate with ``ratio = exp(logp - logp_old)``:

    loss_t = -min(ratio_t * A, clamp(ratio_t, 1 - eps, 1 + eps_high) * A) + beta * KL_t

``eps_high > eps`` is DAPO's "clip-higher". With ``importance_sampling_level="sequence"`` (GSPO,
Zheng et al., 2025; TRL's key and formula) the ratio is one number per completion,
``s_i = exp(mean over its tokens of (logp - logp_old))``, clipped per sequence, and the surrogate
``-min(s_i A_i, clip(s_i) A_i)`` stands on each of the completion's tokens before the reduction (so
``loss_type="grpo"`` gives the per-sequence objective of the paper, the token-sum reductions weigh a
sequence by its length, as in TRL). The gradient flows through every token of the mean. ``KL_t`` estimates KL(pi || pi_ref) per token from
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
  per-sequence mean when every micro-batch is one sequence; so ``micro_batch_size``
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

from typing import Union

import torch

from r1zero.algorithms.tensors import masked_mean

__all__ = ["LOSS_TYPES", "IMPORTANCE_SAMPLING_LEVELS", "KL_ESTIMATORS", "kl_divergence", "aggregate", "policy_loss"]

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
IMPORTANCE_SAMPLING_LEVELS = ("token", "sequence")
KL_ESTIMATORS = ("k1", "k2", "k3")


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


def _mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    # A 0-d tensor, not a float: reading it here would make the host wait before backward().
    return masked_mean(values, mask).detach()


def aggregate(per_token: torch.Tensor, mask: torch.Tensor, loss_type: str,
            max_completion_length, total_tokens) -> torch.Tensor:
    """Reduce a (B, T) per-token loss over the mask by ``loss_type`` (the one place that owns the
    normalisation: per sequence, per micro-batch token, constant, or global token count)."""
    masked_sum = per_token * mask
    if loss_type == "grpo":
        return (masked_sum.sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    if loss_type == "bnpo":
        return masked_sum.sum() / mask.sum().clamp(min=1.0)
    if loss_type == "dr_grpo":
        length = mask.shape[1] if max_completion_length is None else max_completion_length
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
    importance_sampling_level: str = "token",
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
        importance_sampling_level: ``"token"`` (one ratio per token) or ``"sequence"`` (GSPO: one
            ratio per completion, the exp of its masked mean log-ratio; needs (B,) advantages).

    Returns:
        ``(loss, metrics)``: a scalar tensor whose gradient flows to ``logprobs`` only, and 0-d
        tensors (detached, on the device: the update loop reads them after backward, all at once)
        ``clip_ratio/low_mean``, ``clip_ratio/high_mean``, ``clip_ratio/region_mean``,
        ``ratio_mean`` and (when ``ref_logprobs`` is given) ``kl``, all masked token means (at the
        sequence level the clip ratios and ``ratio_mean`` are means over the completions that have
        tokens, TRL's per-sequence reading).
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"unknown loss_type {loss_type!r}; expected one of {LOSS_TYPES}")
    if kl_estimator not in KL_ESTIMATORS:
        raise ValueError(f"unknown KL estimator {kl_estimator!r}; expected one of {KL_ESTIMATORS}")
    if importance_sampling_level not in IMPORTANCE_SAMPLING_LEVELS:
        raise ValueError(f"unknown importance_sampling_level {importance_sampling_level!r}; expected one of "
                         f"{IMPORTANCE_SAMPLING_LEVELS}")
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

    log_ratio = logprobs - old_logprobs.detach()
    sequence = importance_sampling_level == "sequence"
    if sequence:
        if adv.shape[1] != 1:
            raise ValueError("importance_sampling_level='sequence' needs one advantage per sequence, got one per token")
        log_ratio = ((log_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).unsqueeze(-1)  # (B, 1)
    ratio = torch.exp(log_ratio)
    clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high)
    per_token = -torch.min(ratio * adv, clipped * adv).expand(mask.shape)  # (B, 1) -> every token of the row
    kl = None
    if ref_logprobs is not None:
        kl = kl_divergence(logprobs, ref_logprobs.detach(), kl_estimator)
        if beta > 0:
            per_token = per_token + beta * kl
    loss = aggregate(per_token, mask, loss_type, max_completion_length, total_tokens)

    with torch.no_grad():
        r = ratio.detach()
        low = ((r < 1 - eps_low) & (adv < 0)).to(mask.dtype)
        high = ((r > 1 + eps_high) & (adv > 0)).to(mask.dtype)
        # Token means, or at the sequence level means over the completions that have tokens.
        where = (mask.sum(-1, keepdim=True) > 0).to(mask.dtype) if sequence else mask
        metrics = {
            "clip_ratio/low_mean": _mean(low, where),
            "clip_ratio/high_mean": _mean(high, where),
            "clip_ratio/region_mean": _mean(torch.maximum(low, high), where),
            "ratio_mean": _mean(r, where),
        }
        if kl is not None:
            metrics["kl"] = _mean(kl.detach(), mask)
    return loss, metrics
