"""Policy losses: one registered function per objective, one aggregation that owns every normalisation.

The registry has the shape of veRL's ``core_algos.register_policy_loss``: ``register_policy_loss(name,
reduction)`` files an objective under a ``loss_type`` name together with the reduction that turns its
per-token losses into one number. An objective maps the micro-batch's importance weights and
advantages to a (B, T) (or (B, 1), broadcast over the row) per-token loss and its statistics (a ``LossStats``); it never
divides by anything. ``aggregate`` is the only place that normalises: per sequence, per micro-batch
token, by a constant, by the global token count (summed over micro-batches and processes), and the
share of the mini-batch's rows a micro-batch stands for (``Normaliser``, given by the update loop).

Besides the clipped surrogate below (grpo, bnpo, dr_grpo, dapo, luspo), the objectives are cispo,
sapo and vespo (TRL 1.16's definitions; each function's docstring says its formula). Around every
objective, in TRL's order: the sampler-mismatch weights (``sampler_correction``), the off-policy
sequence mask (``off_policy_mask``) and the entropy quantile (``high_entropy_mask``), from
r1zero.algorithms.token_weights, multiply the per-token loss, then the KL term is added (times the importance weight with
``use_bias_correction_kl``), then ``aggregate`` reduces.

The clipped surrogate with ``ratio = exp(logp - logp_old)``:

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
* ``"luspo"``   mean over sequences of the sequence's token-loss sum (each completion weighs by its
  length). ``"sapo"`` reduces as grpo, ``"cispo"`` and ``"vespo"`` as dapo (TRL's pairing).

The known trap: at the first step of each batch the policy equals the policy that sampled
(``logp == logp_old``, so ``ratio == 1``) and the advantages are centred within every group, so
every token's loss is ``-A_i`` and the loss is a weighted sum of centred advantages. For
``loss_type="grpo"`` (any lengths) or equal completion lengths (any loss type) it is then 0 up to
float rounding (plus the KL term, itself 0 while policy == reference). That is expected and not a
bug: the *gradient* is ``-A_i * grad(logp_t)`` per token (times the normaliser), which is not zero.
Watch the gradient norm, the reward and the clip ratios, not the loss value.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Union

import torch

from r1zero.algorithms.stats import LossStats
from r1zero.algorithms.tensors import masked_mean
from r1zero.algorithms.token_weights import SAMPLER_CORRECTION_MODES, high_entropy_mask, off_policy_mask, sampler_correction

__all__ = ["LOSS_TYPES", "IMPORTANCE_SAMPLING_LEVELS", "KL_ESTIMATORS", "REDUCTIONS", "OBJECTIVE_KEYS", "Normaliser",
           "SAMPLER_CORRECTION_MODES", "sampler_correction", "off_policy_mask", "high_entropy_mask", "LossSettings",
           "Surrogate", "LossStats", "PolicyLoss", "register_policy_loss", "get_policy_loss", "kl_divergence", "aggregate",
           "policy_loss"]

IMPORTANCE_SAMPLING_LEVELS = ("token", "sequence")
KL_ESTIMATORS = ("k1", "k2", "k3")
Count = Union[int, float, torch.Tensor, None]


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


# ---- the one aggregation ------------------------------------------------------------------------

@dataclass(frozen=True)
class Normaliser:
    """What a reduction divides by besides the micro-batch itself: the update loop's view of the
    mini-batch the micro-batch belongs to. Left at None, the micro-batch is the whole batch."""

    max_completion_length: int | None = None  # "seq-mean-token-sum-norm"'s constant (default: T)
    total_tokens: Count = None  # the mini-batch's active tokens over every process ("token-sum-global")
    total_rows: int | None = None  # the mini-batch's rows over every process (the row share of a micro-batch)
    # Concatenates a 1-D tensor over every process (top_entropy_quantile's quantile); None: one process.
    all_gather: Callable[[torch.Tensor], torch.Tensor] | None = None


def _seq_mean_token_mean(masked: torch.Tensor, mask: torch.Tensor, norm: Normaliser) -> torch.Tensor:
    return (masked.sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()


def _token_mean(masked: torch.Tensor, mask: torch.Tensor, norm: Normaliser) -> torch.Tensor:
    return masked.sum() / mask.sum().clamp(min=1.0)


def _seq_mean_token_sum_norm(masked: torch.Tensor, mask: torch.Tensor, norm: Normaliser) -> torch.Tensor:
    length = mask.shape[1] if norm.max_completion_length is None else norm.max_completion_length
    return masked.sum() / (masked.shape[0] * length)


def _seq_mean_token_sum(masked: torch.Tensor, mask: torch.Tensor, norm: Normaliser) -> torch.Tensor:
    return masked.sum(-1).mean()


def _token_sum_global(masked: torch.Tensor, mask: torch.Tensor, norm: Normaliser) -> torch.Tensor:
    if norm.total_tokens is None:
        total = mask.sum().clamp(min=1.0)
    else:
        total = torch.as_tensor(norm.total_tokens, dtype=masked.dtype, device=masked.device).clamp(min=1.0)
    return masked.sum() / total


# name -> (this micro-batch's reduction, whether it is a mean over the micro-batch's rows, which the
# mini-batch then weighs by the rows' share). "token-sum-global" already divides by the whole
# mini-batch's token count, so its micro-batch losses simply add up.
REDUCTIONS: dict[str, tuple[Callable[[torch.Tensor, torch.Tensor, Normaliser], torch.Tensor], bool]] = {
    "seq-mean-token-mean": (_seq_mean_token_mean, True),
    "token-mean": (_token_mean, True),
    "seq-mean-token-sum-norm": (_seq_mean_token_sum_norm, True),
    "seq-mean-token-sum": (_seq_mean_token_sum, True),
    "token-sum-global": (_token_sum_global, False),
}


def aggregate(per_token: torch.Tensor, mask: torch.Tensor, reduction: str,
              norm: Normaliser = Normaliser()) -> torch.Tensor:
    """Reduce a (B, T) per-token loss over the mask: the one place that owns the normalisation
    (per sequence, per micro-batch token, constant, global token count, and the row share of a
    micro-batch within its mini-batch over every process)."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; expected one of {tuple(REDUCTIONS)}")
    reduce, per_row = REDUCTIONS[reduction]
    loss = reduce(per_token * mask, mask, norm)
    if per_row and norm.total_rows is not None:
        # The mean over the mini-batch (bnpo: of the micro-batches' token means, its documented rule).
        loss = loss * (per_token.shape[0] / norm.total_rows)
    return loss


# ---- the registry -------------------------------------------------------------------------------

@dataclass(frozen=True)
class LossSettings:
    """The objectives' own hyper-parameters (TRL 1.16's key names and defaults)."""

    epsilon: float = 0.2
    epsilon_high: float | None = None  # cispo: the cap of its importance weight (ScaleRL: 5.0)
    sapo_temperature_pos: float = 1.0
    sapo_temperature_neg: float = 1.05
    vespo_k_pos: float = 2.0
    vespo_lambda_pos: float = 3.0
    vespo_k_neg: float = 3.0
    vespo_lambda_neg: float = 2.0
    # The sampler-mismatch correction (TRL's keys; here the sampler is r1zero's engine, not vLLM).
    vllm_importance_sampling_correction: bool = False
    vllm_importance_sampling_mode: str = "sequence_mask"
    vllm_importance_sampling_clip_min: float | None = None
    vllm_importance_sampling_clip_max: float | None = 3.0
    off_policy_mask_threshold: float | None = None  # DeepSeek-V3.2's off-policy sequence mask (None: off)
    top_entropy_quantile: float = 1.0  # the "80/20" paper's rho: the loss keeps this top share of tokens by entropy

    @property
    def eps_high(self) -> float:
        return self.epsilon if self.epsilon_high is None else self.epsilon_high


# The config keys LossSettings takes besides epsilon / epsilon_high (policy_loss's objective_keys).
OBJECTIVE_KEYS = tuple(f for f in dataclasses.fields(LossSettings) if f.name not in ("epsilon", "epsilon_high"))


@dataclass(frozen=True)
class Surrogate:
    """What an objective reads of one micro-batch; only ``logprobs`` (and what is derived from it)
    carries the gradient."""

    logprobs: torch.Tensor    # (B, T) under the current policy
    log_ratio: torch.Tensor   # (B, T) logprobs - old_logprobs, per token
    log_weight: torch.Tensor  # the importance log-weight at importance_sampling_level: (B, T), or (B, 1) for GSPO
    advantages: torch.Tensor  # (B, 1) one per sequence, or (B, T) one per token
    mask: torch.Tensor        # (B, T) float
    sequence: bool            # importance_sampling_level == "sequence"
    sampler_weight: torch.Tensor | None = None  # the sampler-mismatch correction's weights, (B, T) or (B, 1)


Objective = Callable[[Surrogate, LossSettings], tuple[torch.Tensor, LossStats]]


@dataclass(frozen=True)
class PolicyLoss:
    """A registered ``loss_type``: its objective and the reduction ``aggregate`` applies to it."""

    name: str
    objective: Objective
    reduction: str
    # The objective applies the sampler-mismatch weights itself (vespo, inside its sequence weight);
    # otherwise policy_loss multiplies its per-token loss by them.
    folds_sampler_weight: bool = False


POLICY_LOSSES: dict[str, PolicyLoss] = {}


def register_policy_loss(name: str, reduction: str, folds_sampler_weight: bool = False
                         ) -> Callable[[Objective], Objective]:
    """File ``objective`` as ``loss_type: name``, reduced by ``reduction`` (a key of REDUCTIONS)."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; expected one of {tuple(REDUCTIONS)}")

    def wrap(objective: Objective) -> Objective:
        POLICY_LOSSES[name] = PolicyLoss(name, objective, reduction, folds_sampler_weight)
        return objective
    return wrap


def get_policy_loss(name: str) -> PolicyLoss:
    if name not in POLICY_LOSSES:
        raise ValueError(f"unknown loss_type {name!r}; expected one of {tuple(POLICY_LOSSES)}")
    return POLICY_LOSSES[name]


def _share(values: torch.Tensor, x: Surrogate) -> torch.Tensor:
    """The values' (or a flag's) mean: over tokens, or at the sequence level over the completions
    that have tokens (TRL's per-sequence reading)."""
    where = (x.mask.sum(-1, keepdim=True) > 0).to(x.mask.dtype) if x.sequence else x.mask
    return _mean(values.to(x.mask.dtype), where)


def _by_sign(cond: torch.Tensor, yes: float, no: float, like: torch.Tensor) -> torch.Tensor:
    """``yes`` where ``cond`` holds, else ``no``, in ``like``'s dtype (a bare float would be float32)."""
    def const(v: float) -> torch.Tensor:
        return torch.tensor(v, dtype=like.dtype, device=like.device)
    return torch.where(cond, const(yes), const(no))


# ---- the objectives ------------------------------------------------------------------------------

@register_policy_loss("luspo", "seq-mean-token-sum")
@register_policy_loss("dapo", "token-sum-global")
@register_policy_loss("dr_grpo", "seq-mean-token-sum-norm")
@register_policy_loss("bnpo", "token-mean")
@register_policy_loss("grpo", "seq-mean-token-mean")
def clipped_surrogate(x: Surrogate, s: LossSettings) -> tuple[torch.Tensor, LossStats]:
    """PPO's clipped surrogate ``-min(w A, clip(w, 1 - eps, 1 + eps_high) A)``; the five loss types
    that share it differ only in their reduction (luspo, LUSPO 2026: GSPO's objective with each
    completion's loss summed over its tokens, i.e. scaled by its length, then averaged over
    completions; meant for importance_sampling_level=sequence)."""
    ratio = torch.exp(x.log_weight)
    clipped = torch.clamp(ratio, 1 - s.epsilon, 1 + s.eps_high)
    adv = x.advantages
    per_token = -torch.min(ratio * adv, clipped * adv)
    with torch.no_grad():
        r = ratio.detach()
        low = (r < 1 - s.epsilon) & (adv < 0)
        high = (r > 1 + s.eps_high) & (adv > 0)
        stats = LossStats(clip_low=_share(low, x), clip_high=_share(high, x), clip_region=_share(low | high, x),
                          ratio_mean=_share(r, x))
    return per_token, stats


@register_policy_loss("cispo", "token-sum-global")
def cispo(x: Surrogate, s: LossSettings) -> tuple[torch.Tensor, LossStats]:
    """MiniMax-M1's CISPO: REINFORCE on every token, ``-sg(min(w, epsilon_high)) A logp``. The
    importance weight is truncated from above and held constant, so no token's gradient is ever
    clipped away (the surrogate above drops tokens outside its range)."""
    w = torch.exp(x.log_weight).detach()
    per_token = -torch.clamp(w, max=s.eps_high) * x.advantages * x.logprobs
    with torch.no_grad():
        stats = LossStats(cispo_clip_ratio=_share((w > s.eps_high) & (x.advantages > 0), x), ratio_mean=_share(w, x))
    return per_token, stats


@register_policy_loss("sapo", "seq-mean-token-mean")
def sapo(x: Surrogate, s: LossSettings) -> tuple[torch.Tensor, LossStats]:
    """Soft Adaptive Policy Optimization (Qwen, 2025): the hard clip replaced by a smooth gate,
    ``-(4 / tau) sigmoid(tau (w - 1)) A``, whose gradient ``sigmoid'`` fades as w leaves 1 instead of
    dropping to 0 at a clip edge; tau is ``sapo_temperature_pos`` for A > 0 and ``_neg`` otherwise
    (a slightly faster fade for negative advantages, the paper's choice)."""
    ratio = torch.exp(x.log_weight)
    adv = x.advantages
    tau = _by_sign(adv > 0, s.sapo_temperature_pos, s.sapo_temperature_neg, adv)
    per_token = -torch.sigmoid(tau * (ratio - 1)) * (4 / tau) * adv
    with torch.no_grad():
        stats = LossStats(ratio_mean=_share(ratio.detach(), x))
    return per_token, stats


_LOG_TINY = math.log(1e-8)  # VESPO's floor of a log importance weight


@register_policy_loss("vespo", "token-sum-global", folds_sampler_weight=True)
def vespo(x: Surrogate, s: LossSettings) -> tuple[torch.Tensor, LossStats]:
    """VESPO (2026): REINFORCE with each completion weighted by a Gamma-shaped function of its
    sequence importance weight ``w = exp(sum of its token log-ratios)``, ``phi(w) = e^lam w^k e^(-lam w)``
    (1 at w = 1, falling towards 0 as w moves away from it on either side): ``-sg(phi(w)) A logp``.
    ``k``/``lam`` are ``vespo_k_pos``/``vespo_lambda_pos`` for A >= 0 and the ``_neg`` pair otherwise.
    The sum (not GSPO's mean) and the clamps of the log-weights to [log 1e-8, 20] are the paper's.
    The sampler-mismatch weights (token modes) join w as the sum of their logs, so that w is the
    current policy's ratio to the sampler's."""
    with torch.no_grad():
        adv = x.advantages
        log_w = (torch.clamp(x.log_ratio, -20.0, 20.0) * x.mask).sum(-1, keepdim=True)
        if x.sampler_weight is not None:
            log_w = log_w + torch.clamp(torch.log(x.sampler_weight), _LOG_TINY, 20.0).sum(-1, keepdim=True)
        log_w = torch.clamp(log_w, _LOG_TINY, 20.0)
        nonneg = adv >= 0
        k = _by_sign(nonneg, s.vespo_k_pos, s.vespo_k_neg, adv)
        lam = _by_sign(nonneg, s.vespo_lambda_pos, s.vespo_lambda_neg, adv).clamp(min=1e-4)
        phi = torch.exp(lam + k * log_w - lam * torch.exp(log_w)).nan_to_num(nan=0.0, posinf=0.0, neginf=0.0)
        stats = LossStats(vespo_phi=_share(phi, dataclasses.replace(x, sequence=True)))
    return -phi * adv * x.logprobs, stats


LOSS_TYPES = tuple(POLICY_LOSSES)


# ---- around the objective -------------------------------------------------------------------------

def _checked(loss_type: str, kl_estimator: str, importance_sampling_level: str, beta: float, ref_logprobs,
             logprobs: torch.Tensor, old_logprobs: torch.Tensor, mask: torch.Tensor) -> PolicyLoss:
    """The registered ``loss_type``, once every setting and shape policy_loss was given is known good."""
    loss_fn = get_policy_loss(loss_type)
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
    return loss_fn


def _advantage_columns(advantages, logprobs: torch.Tensor) -> torch.Tensor:
    """The advantages as (B, 1), one per sequence, or (B, T) as given, one per token (ppo, reinforce_pp)."""
    adv = torch.as_tensor(advantages).detach().to(device=logprobs.device, dtype=logprobs.dtype)
    if not (adv.dim() == 2 and adv.shape == logprobs.shape):
        adv = adv.reshape(-1, 1)
        if adv.shape[0] != logprobs.shape[0]:
            raise ValueError(f"advantages must have one value per sequence ({logprobs.shape[0]}), got {adv.shape[0]}")
    return adv


def _sequence_log_weight(log_ratio: torch.Tensor, mask: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
    """GSPO's (B, 1) importance log-weight: each completion's masked mean token log-ratio."""
    if adv.shape[1] != 1:
        raise ValueError("importance_sampling_level='sequence' needs one advantage per sequence, got one per token")
    return ((log_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).unsqueeze(-1)


def _sampler_weights(s: LossSettings, old_logprobs: torch.Tensor, sampled_logprobs: torch.Tensor | None,
                     mask: torch.Tensor) -> tuple[torch.Tensor | None, LossStats]:
    """The sampler-mismatch correction's weights and statistics (None and none when it is off)."""
    if not s.vllm_importance_sampling_correction:
        return None, LossStats()
    if sampled_logprobs is None:
        raise ValueError("vllm_importance_sampling_correction needs sampled_logprobs (the sampler's log-probs)")
    return sampler_correction(old_logprobs.detach(), sampled_logprobs.detach(), mask, s.vllm_importance_sampling_mode,
                              s.vllm_importance_sampling_clip_min, s.vllm_importance_sampling_clip_max)


def _masked(per_token: torch.Tensor, stats: LossStats, s: LossSettings, adv: torch.Tensor, logprobs: torch.Tensor,
            behaviour_logprobs: torch.Tensor, mask: torch.Tensor, entropy: torch.Tensor | None,
            all_gather: Callable[[torch.Tensor], torch.Tensor] | None) -> torch.Tensor:
    """The per-token loss times the off-policy sequence mask and the high-entropy token mask (each
    when on; against ``behaviour_logprobs``, the sampler's or pi_old's), their shares into ``stats``."""
    if s.off_policy_mask_threshold is not None:
        keep = off_policy_mask(adv, logprobs, behaviour_logprobs, mask, s.off_policy_mask_threshold)
        per_token = per_token * keep
        stats.off_policy_masked = _mean(1 - keep, (mask.sum(-1, keepdim=True) > 0).to(mask.dtype)
                                        if keep.shape[1] == 1 else mask)
    if s.top_entropy_quantile < 1:
        if entropy is None:
            raise ValueError("top_entropy_quantile < 1 needs entropy (the policy's token entropies)")
        keep = high_entropy_mask(entropy, mask, s.top_entropy_quantile, all_gather)
        per_token = per_token * keep
        stats.entropy_kept = _mean(keep, mask)
    return per_token


def _kl_term(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str,
             log_weight: torch.Tensor | None) -> torch.Tensor:
    """The per-token KL to the reference, times the importance weight ``exp(log_weight)`` when given
    (use_bias_correction_kl)."""
    kl = kl_divergence(logprobs, ref_logprobs.detach(), estimator)
    return kl if log_weight is None else kl * torch.exp(log_weight)


def policy_loss(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, *,
    loss_type: str = "grpo", epsilon: float = 0.2, epsilon_high: float | None = None,
    ref_logprobs: torch.Tensor | None = None, beta: float = 0.0, kl_estimator: str = "k3",
    max_completion_length: int | None = None, total_tokens: Count = None, total_rows: int | None = None,
    importance_sampling_level: str = "token", use_bias_correction_kl: bool = False,
    sampled_logprobs: torch.Tensor | None = None, entropy: torch.Tensor | None = None,
    all_gather: Callable[[torch.Tensor], torch.Tensor] | None = None, **objective_keys,
) -> tuple[torch.Tensor, LossStats]:
    """The registered objective ``loss_type`` (plus optional KL penalty), reduced by its reduction.

    Args:
        logprobs: (B, T) log-probs of the completion tokens under the current policy (with grad).
        old_logprobs: (B, T) log-probs under the policy that sampled them (constant).
        advantages: (B,) one advantage per sequence, or (B, T) one per token (constant).
        mask: (B, T) 1 for completion tokens, 0 for padding (bool or float). loss_type: a key of POLICY_LOSSES.
        epsilon: lower clip, ratio >= 1 - epsilon. epsilon_high: upper clip (default ``epsilon``).
        ref_logprobs: (B, T) reference-policy log-probs; required when ``beta > 0``; when given,
            the KL statistic is reported even if ``beta == 0``.
        beta: KL penalty coefficient. kl_estimator: ``"k1"``, ``"k2"`` or ``"k3"``.
        max_completion_length, total_tokens, total_rows: the ``Normaliser``'s (defaults: T, this
            batch's mask sum, B); under DDP pass the global token count / world size, as TRL does.
        importance_sampling_level: ``"token"`` (one ratio per token) or ``"sequence"`` (GSPO: one
            ratio per completion, the exp of its masked mean log-ratio; needs (B,) advantages).
        use_bias_correction_kl: the KL term times the importance weight ``w`` (with its gradient): the
            unbiased reverse-KL gradient off-policy (DeepSeek-V3.2; TRL 1.16's key, True by default there).
        sampled_logprobs: (B, T) the sampler's own log-probs: the sampler-mismatch correction and the
            off-policy mask compare with them (the mask with ``old_logprobs`` when None, as TRL without vLLM).
        entropy: (B, T) the current policy's token entropies (top_entropy_quantile < 1).
        all_gather: concatenates a 1-D tensor over every process (the entropy quantile); None: one process.
        objective_keys: the other keys of ``LossSettings`` (TRL's names): the objectives' own, the
            sampler-mismatch correction's (its weights multiply the per-token loss; vespo folds them
            into its sequence weight) and the two masks', applied before the KL term, in TRL's order.

    Returns ``(loss, stats)``: a scalar tensor whose gradient flows to ``logprobs`` only, and the
    ``LossStats`` of the parts that are on (``kl`` when ``ref_logprobs`` is given).
    """
    loss_fn = _checked(loss_type, kl_estimator, importance_sampling_level, beta, ref_logprobs, logprobs, old_logprobs, mask)
    mask = mask.detach().to(logprobs.dtype)
    adv = _advantage_columns(advantages, logprobs)
    log_ratio = logprobs - old_logprobs.detach()
    sequence = importance_sampling_level == "sequence"
    log_weight = _sequence_log_weight(log_ratio, mask, adv) if sequence else log_ratio
    s = LossSettings(epsilon=epsilon, epsilon_high=epsilon_high, **objective_keys)
    weights, correction = _sampler_weights(s, old_logprobs, sampled_logprobs, mask)
    per_token, stats = loss_fn.objective(Surrogate(logprobs, log_ratio, log_weight, adv, mask, sequence, weights), s)
    stats.add(correction)
    per_token = _masked(per_token, stats, s, adv, logprobs, old_logprobs if sampled_logprobs is None else sampled_logprobs,
                        mask, entropy, all_gather)
    if weights is not None and not loss_fn.folds_sampler_weight:
        per_token = per_token * weights
    per_token = per_token.expand(mask.shape)  # (B, 1) -> every token of the row
    kl = None if ref_logprobs is None else _kl_term(logprobs, ref_logprobs, kl_estimator,
                                                     log_weight if use_bias_correction_kl else None)
    if beta > 0:
        per_token = per_token + beta * kl
    loss = aggregate(per_token, mask, loss_fn.reduction, Normaliser(max_completion_length, total_tokens, total_rows))
    if kl is not None:
        stats.kl = _mean(kl.detach(), mask)
    return loss, stats
