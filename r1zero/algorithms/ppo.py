"""PPO with a critic (TinyZero's default, veRL semantics).

A critic (the policy's architecture with a scalar value head, a ``*ForTokenClassification`` model
with one label, initialised from ``critic_model_name_or_path``, default the policy's model) values
the state before every completion token. The per-token rewards are the reward-KL family's
(r1zero.algorithms.reward_kl); GAE with ``gamma``/``lam`` gives advantages (whitened over the step's
tokens) and returns (advantages + values). The critic regresses on the returns with veRL's clipped
value loss, 0.5 x max((V - R)^2, (clip(V, V_old +- cliprange_value) - R)^2), token mean over the
mini-batch, with its own AdamW (``critic_learning_rate``) and schedule; it takes one update per
policy update, on the same mini-batch; during the first ``critic_warmup_steps`` steps only the
critic is updated. PPO epochs and mini-batches are ``num_iterations`` and ``mini_batch_prompts``.
The run's strategy (r1zero.algorithms.strategy) wraps the critic like the policy under torchrun
(DDP or FSDP2), makes and steps its optimizer and keeps its state. The critic, its optimizer and
scheduler are part of every checkpoint (``checkpoint-N/critic/``, ``trainer_state.pt``; under
torchrun the optimizer in ``critic_optimizer/``), so a resumed PPO run equals the uninterrupted one.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import torch

from r1zero.algorithms.base import RolloutBatch, register
from r1zero.algorithms.reward_kl import RewardKLAlgorithm
from r1zero.algorithms.tensors import AllSum, masked_mean, masked_whiten
from r1zero.errors import need
from r1zero.models import ModelError, disable_dropout, own_memory, resolve_model_path
from r1zero.observe import metrics as metric_names
from r1zero.rollout.layout import position_ids_from_mask

log = logging.getLogger("r1zero")

__all__ = ["gae", "value_loss", "explained_variance", "load_critic", "CompletionValues", "PPO"]

CRITIC_DIR = "critic"  # also the name of its optimizer state (critic_optimizer, critic_scheduler)


def gae(token_level_rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
        gamma: float = 1.0, lam: float = 1.0, all_sum: AllSum = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over (B, T) tokens: (whitened advantages, returns).

    ``values[:, t]`` is the critic's value of the state before token t. Padding (mask 0) passes
    the next value and the running estimate through unchanged, so it never leaks into a row.
    Returns are the raw advantages plus the values (the critic's targets).
    """
    mask = mask.to(values.dtype)
    B, T = values.shape
    next_value = values.new_zeros(B)
    last = values.new_zeros(B)
    adv = torch.zeros_like(values)
    for t in reversed(range(T)):
        delta = token_level_rewards[:, t] + gamma * next_value - values[:, t]
        new = delta + gamma * lam * last
        next_value = values[:, t] * mask[:, t] + (1 - mask[:, t]) * next_value
        last = new * mask[:, t] + (1 - mask[:, t]) * last
        adv[:, t] = last
    returns = adv + values
    return masked_whiten(adv, mask, all_sum) * mask, returns


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               cliprange_value: float, total_tokens: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(0.5 x clipped squared error summed over the mask / total_tokens, share of tokens where the clip
    bites: a detached 0-d tensor, read after backward)."""
    mask = mask.to(values.dtype)
    clipped = old_values + (values - old_values).clamp(-cliprange_value, cliprange_value)
    l1 = (values - returns) ** 2
    l2 = (clipped - returns) ** 2
    total = mask.sum().clamp(min=1.0) if total_tokens is None else max(float(total_tokens), 1.0)
    loss = 0.5 * (torch.max(l1, l2) * mask).sum() / total
    # Where the clip is active and raises the loss. (veRL counts l2 > l1 alone, which also counts
    # ties broken by rounding: old + (v - old) is not always v in floating point.)
    bites = ((values - old_values).abs() > cliprange_value) & (l2 > l1)
    clipfrac = masked_mean(bites.to(values.dtype), mask).detach()
    return loss, clipfrac


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
                       all_sum: AllSum = None) -> float:
    """1 - Var(returns - values) / Var(returns) over the masked tokens (1 = perfect critic)."""
    mask = mask.to(torch.float64)
    v, r = values.double(), returns.double()

    def var(x):
        m = masked_mean(x, mask, all_sum=all_sum)
        return masked_mean((x - m) ** 2, mask, all_sum=all_sum)

    vr = var(r)
    return float("nan") if vr <= 0 else float(1.0 - var(r - v) / vr)


def load_critic(name_or_path: str, device: torch.device, *, trust_remote_code: bool = False):
    """A causal LM's backbone with a fresh scalar head (``*ForTokenClassification``, 1 label)."""
    from transformers import AutoModelForTokenClassification

    path = resolve_model_path(name_or_path, "critic_model_name_or_path")
    try:
        model = AutoModelForTokenClassification.from_pretrained(path, num_labels=1, dtype=torch.float32,
                                                                trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise ModelError(f"critic_model_name_or_path: could not load {name_or_path} as a critic "
                         f"({str(e).splitlines()[0]}); give a causal LM folder or hub id") from None
    model.to(device)
    own_memory(model)  # as the policy's: aligned (the same last bits after a resume) and writable without faults
    model.train()
    disable_dropout(model)  # deterministic values, as for the policy
    return model


class CompletionValues(torch.nn.Module):
    """The critic's values (B, C) of the states before each completion token (0 on padding), as one
    module's forward, so DDP and FSDP2 wrap it as they wrap the policy's log-prob pass."""

    def __init__(self, critic: torch.nn.Module):
        super().__init__()
        self.model = critic

    def forward(self, input_ids, attention_mask, prompt_width: int, completion_mask):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask,
                         position_ids=position_ids_from_mask(attention_mask), use_cache=False).logits[..., 0].float()
        return out[:, prompt_width - 1:-1] * completion_mask.to(out.device)


@register
class PPO(RewardKLAlgorithm):
    name = "ppo"
    has_critic = True

    @classmethod
    def check_config(cls, cfg) -> None:
        super().check_config(cfg)
        need(0 <= cfg.lam <= 1, "lam", "must be in [0, 1] (TinyZero PPO: 1.0)")
        need(cfg.critic_learning_rate > 0 and math.isfinite(cfg.critic_learning_rate), "critic_learning_rate",
             "must be a positive number, e.g. 1e-5")
        need(cfg.critic_warmup_steps >= 0, "critic_warmup_steps", "must be >= 0")
        need(cfg.cliprange_value > 0, "cliprange_value", "must be > 0, e.g. 0.5")

    def __init__(self, cfg, ctx):
        super().__init__(cfg, ctx)
        resume = Path(ctx.resume_from) if ctx.resume_from is not None else None
        self.resumed_critic = resume is not None and (resume / CRITIC_DIR).is_dir()
        src = str(resume / CRITIC_DIR) if self.resumed_critic else (cfg.critic_model_name_or_path or cfg.model_name_or_path)
        torch.manual_seed(cfg.seed + 1)  # the value head's initialisation
        self.critic = load_critic(src, ctx.device, trust_remote_code=cfg.trust_remote_code)
        if cfg.gradient_checkpointing:
            self.critic.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        # Wrapped, optimised and checkpointed as the policy is (r1zero.algorithms.strategy).
        self.trained = ctx.strategy.train(self.critic, CompletionValues(self.critic), cfg.critic_learning_rate,
                                          CRITIC_DIR)
        self.module = self.trained.module
        self.values = self.returns = None  # this step's (N, C) rollout values and GAE returns
        self.norms: list[float] = []

    def updates_policy(self, steps_done: int) -> bool:
        return steps_done >= self.cfg.critic_warmup_steps

    def estimate(self, batch: RolloutBatch, token_level_rewards: torch.Tensor):
        self.values = self.ctx.passes.frozen_values(self.module, batch)
        adv, self.returns = gae(token_level_rewards, self.values, batch.loss_mask, self.cfg.gamma, self.cfg.lam,
                                self.ctx.global_sum)
        mask = batch.loss_mask
        return adv, self.returns, {
            metric_names.CRITIC_VALUES_MEAN: float(self.mean(self.values, mask)),
            metric_names.CRITIC_EXPLAINED_VARIANCE: explained_variance(self.values, self.returns, mask, self.ctx.global_sum)}

    # ---- the critic's update, inside the policy's loop -----------------------------------------------
    def start_mini_batch(self) -> None:
        self.trained.zero_grad()

    def after_micro_batch(self, batch, rows, total_tokens, last, metrics) -> None:
        W = self.ctx.strategy.world_size
        with self.trained.grad_sync(last):
            v = self.ctx.passes.values(self.module, batch, rows)
            mask = batch.loss_mask[rows].to(v.device)
            vl, clipfrac = value_loss(v, self.values[rows].to(v.device), self.returns[rows].to(v.device), mask,
                                      self.cfg.cliprange_value, total_tokens=total_tokens)
            (vl * W).backward()  # this process's share of the mini-batch's token mean (see the update loop)
        metrics.add(metric_names.CRITIC_VALUE_LOSS, vl.detach())  # read after the update (r1zero.training.update.MetricSums)
        metrics.add_weighted(metric_names.CRITIC_VALUE_CLIP_FRAC, clipfrac, float(batch.loss_mask[rows].sum()))

    def end_mini_batch(self, metrics) -> None:
        self.norms.append(self.trained.step())

    def end_update(self, metrics) -> dict[str, float]:
        self.trained.zero_grad()
        out = {metric_names.CRITIC_LEARNING_RATE: self.trained.learning_rate()}
        self.trained.schedule_step()
        out[metric_names.CRITIC_VALUE_LOSS] = metrics.total(metric_names.CRITIC_VALUE_LOSS) / len(self.norms)
        out[metric_names.CRITIC_GRAD_NORM] = sum(self.norms) / len(self.norms)
        self.norms = []
        return out

    # ---- checkpoint state (the optimizer's shards under torchrun: the strategy saves them) ------------
    def tensor_state(self) -> dict:
        return self.trained.tensor_state()

    def extra_models(self) -> dict:
        return {CRITIC_DIR: (self.critic, self.trained.full_state_dict())}

    def restore(self, state: dict, tensor_state: dict | None, steps_done: int) -> None:
        super().restore(state, tensor_state, steps_done)
        path = Path(self.ctx.resume_from)
        if not self.resumed_critic:
            log.warning("checkpoint %s has no critic: the critic restarts from %s", path,
                        self.cfg.critic_model_name_or_path or self.cfg.model_name_or_path)
        self.trained.restore(tensor_state, path, steps_done)
