"""PPO with a critic (TinyZero's default, veRL semantics) and the critic-free REINFORCE family.

``algorithm`` picks how a step's advantages are made; the policy update is the same clipped
surrogate as GRPO's (r1zero.grpo.policy_loss, reduced by ``loss_type``), applied per token:

* ``ppo``           a critic (the policy's architecture with a scalar value head, a
                    ``*ForTokenClassification`` model with one label, initialised from
                    ``critic_model_name_or_path``, default the policy's model) scores the state
                    before every completion token. Per-token rewards are the outcome reward on the
                    last token minus ``kl_coef`` x k1 KL (logp_old - logp_ref) on every token; GAE
                    with ``gamma``/``lam`` gives advantages (whitened over the batch's tokens) and
                    returns (advantages + values). The critic regresses on the returns with veRL's
                    clipped value loss, 0.5 x max((V - R)^2, (clip(V, V_old +- cliprange_value) -
                    R)^2), token mean, with its own AdamW (``critic_learning_rate``) and schedule;
                    during the first ``critic_warmup_steps`` steps only the critic is updated.
* ``reinforce_pp``  REINFORCE++: the same per-token rewards, summed to the end of each completion
                    (discount ``gamma``) and whitened over the batch's tokens; no critic.
* ``rloo``          leave-one-out: each completion's reward minus kl_coef x its summed k1 KL,
                    minus the mean of the other completions of its prompt (r1zero.advantages).

``entropy_coeff`` subtracts that multiple of the mean token entropy (reduced like the loss) from
the policy loss. PPO epochs and mini-batches are ``num_iterations`` and ``mini_batch_prompts``,
as for GRPO; the critic takes one update per policy update, on the same mini-batch. The
coefficient ``kl_coef`` is fixed, or (``kl_ctl: adaptive``) moved after each step toward the
``kl_target`` per-token KL over ``kl_horizon`` samples (Ziegler et al.; veRL's controller).

The critic, its optimizer and scheduler, and the KL coefficient are part of every checkpoint
(``checkpoint-N/critic/``, ``trainer_state.pt``, ``trainer_state.json``), so a resumed PPO run
equals the uninterrupted one.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import torch

from r1zero.advantages import masked_mean, masked_whiten, reinforce_pp_advantages, rloo_advantages, token_rewards
from r1zero.grpo import _reduce, policy_loss
from r1zero.logprobs import position_ids_from_mask

log = logging.getLogger("r1zero")

__all__ = ["KLController", "gae", "value_loss", "explained_variance", "load_critic", "PPOFamily"]

CRITIC_DIR = "critic"


# ---------------------------------------------------------------------------------------------
# Pure pieces.

class KLController:
    """The reward-KL coefficient: fixed, or adaptive (proportional control toward ``target``)."""

    def __init__(self, kind: str, init: float, target: float = 0.1, horizon: int = 10000):
        self.kind, self.value, self.target, self.horizon = kind, float(init), float(target), int(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        if self.kind != "adaptive":
            return
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon


def gae(token_level_rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
        gamma: float = 1.0, lam: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
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
    return masked_whiten(adv, mask) * mask, returns


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               cliprange_value: float, total_tokens: float | None = None) -> tuple[torch.Tensor, float]:
    """(0.5 x clipped squared error summed over the mask / total_tokens, share of tokens where the clip bites)."""
    mask = mask.to(values.dtype)
    clipped = old_values + (values - old_values).clamp(-cliprange_value, cliprange_value)
    l1 = (values - returns) ** 2
    l2 = (clipped - returns) ** 2
    total = mask.sum().clamp(min=1.0) if total_tokens is None else max(float(total_tokens), 1.0)
    loss = 0.5 * (torch.max(l1, l2) * mask).sum() / total
    clipfrac = float(masked_mean((l2 > l1).to(values.dtype), mask))
    return loss, clipfrac


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var(returns - values) / Var(returns) over the masked tokens (1 = perfect critic)."""
    mask = mask.to(torch.float64)
    v, r = values.double(), returns.double()

    def var(x):
        m = masked_mean(x, mask)
        return masked_mean((x - m) ** 2, mask)

    vr = var(r)
    return float("nan") if vr <= 0 else float(1.0 - var(r - v) / vr)


def load_critic(name_or_path: str, device: torch.device, *, trust_remote_code: bool = False):
    """A causal LM's backbone with a fresh scalar head (``*ForTokenClassification``, 1 label)."""
    from transformers import AutoModelForTokenClassification

    from r1zero.models import ModelError, disable_dropout, resolve_model_path

    path = resolve_model_path(name_or_path)
    try:
        model = AutoModelForTokenClassification.from_pretrained(path, num_labels=1, dtype=torch.float32,
                                                                trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise ModelError(f"critic_model_name_or_path: could not load {name_or_path} as a critic "
                         f"({str(e).splitlines()[0]}); give a causal LM folder or hub id") from None
    model.to(device)
    model.train()
    disable_dropout(model)  # deterministic values, as for the policy
    return model


# ---------------------------------------------------------------------------------------------
# The step: advantages from the rollout, then the PPO epochs for policy (and critic).

class PPOFamily:
    """Owns the critic (ppo), its optimizer and schedule, and the KL controller of a Trainer."""

    def __init__(self, trainer):
        from r1zero.trainer import make_optimizer

        self.tr = trainer
        cfg = trainer.cfg
        self.cfg = cfg
        self.kl_ctl = KLController(cfg.kl_ctl, cfg.kl_coef, cfg.kl_target, cfg.kl_horizon)
        self.critic = self.critic_optimizer = self.critic_scheduler = None
        if cfg.algorithm == "ppo":
            resumed = trainer.resume_from is not None and (Path(trainer.resume_from) / CRITIC_DIR).is_dir()
            src = str(Path(trainer.resume_from) / CRITIC_DIR) if resumed else (
                cfg.critic_model_name_or_path or cfg.model_name_or_path)
            torch.manual_seed(cfg.seed + 1)  # the value head's initialisation
            self.critic = load_critic(src, trainer.device, trust_remote_code=cfg.trust_remote_code)
            if cfg.gradient_checkpointing:
                self.critic.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            self.critic_optimizer, self.critic_scheduler = make_optimizer(
                self.critic, cfg, cfg.critic_learning_rate, trainer.max_steps)

    # ---- checkpoint state ------------------------------------------------------------------------
    def light_state(self) -> dict:
        return {"kl_coef": self.kl_ctl.value}

    def heavy_state(self) -> dict:
        if self.critic is None:
            return {}
        return {"critic_optimizer": self.critic_optimizer.state_dict(),
                "critic_scheduler": self.critic_scheduler.state_dict()}

    def extra_models(self) -> dict:
        return {CRITIC_DIR: self.critic} if self.critic is not None else {}

    def restore(self, state: dict, heavy: dict | None, step: int) -> None:
        if "algorithm" in state:
            self.kl_ctl.value = float(state["algorithm"]["kl_coef"])
        if self.critic is None:
            return
        if not (Path(self.tr.resume_from) / CRITIC_DIR).is_dir():
            log.warning("checkpoint %s has no critic: the critic restarts from %s", self.tr.resume_from,
                        self.cfg.critic_model_name_or_path or self.cfg.model_name_or_path)
        if heavy is not None and "critic_optimizer" in heavy:
            self.critic_optimizer.load_state_dict(heavy["critic_optimizer"])
            self.critic_scheduler.load_state_dict(heavy["critic_scheduler"])
        else:
            for _ in range(step):
                self.critic_scheduler.step()

    # ---- forward passes --------------------------------------------------------------------------
    def _values(self, ids, am, cm, P) -> torch.Tensor:
        """(B, C) values of the states before each completion token (0 on padding)."""
        from r1zero.trainer import _trim

        tr = self.tr
        ids_t, am_t, cm_t, pw = _trim(ids, am, cm, P)
        ids_t, am_t = ids_t.to(tr.device), am_t.to(tr.device)
        with tr._autocast():
            out = self.critic(input_ids=ids_t, attention_mask=am_t, position_ids=position_ids_from_mask(am_t),
                              use_cache=False).logits[..., 0].float()
        v = out[:, pw - 1:-1] * cm_t.to(out.device)
        return torch.nn.functional.pad(v, (0, cm.shape[1] - v.shape[1]))

    @torch.no_grad()
    def _frozen_values(self, roll) -> torch.Tensor:
        mb = self.cfg.per_device_train_batch_size
        ids, am, cm, P = roll.input_ids, roll.attention_mask, roll.completion_mask, roll.prompt_ids.shape[1]
        return torch.cat([self._values(ids[s:s + mb], am[s:s + mb], cm[s:s + mb], P).cpu()
                          for s in range(0, ids.shape[0], mb)])

    def _policy(self, ids, am, cm, P):
        """Log-probs and entropies; the entropies keep their gradient when entropy_coeff > 0."""
        return self.tr._logprobs(self.tr.policy, ids, am, cm, P, entropy_grad=self.cfg.entropy_coeff > 0)

    # ---- advantages --------------------------------------------------------------------------------
    def advantages(self, roll, rewards: torch.Tensor, loss_mask: torch.Tensor, old: torch.Tensor,
                   ref: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, dict]:
        """(advantages (N, C), returns or None, old values or None, metrics)."""
        cfg = self.cfg
        cmask = roll.completion_mask.float()
        coef = self.kl_ctl.value
        tok_r, kl = token_rewards(rewards, cmask, old, ref, coef)
        returns = values = None
        if cfg.algorithm == "ppo":
            values = self._frozen_values(roll)
            adv, returns = gae(tok_r, values, loss_mask, cfg.gamma, cfg.lam)
        elif cfg.algorithm == "reinforce_pp":
            adv, returns = reinforce_pp_advantages(tok_r, loss_mask, cfg.gamma)
        else:  # rloo: one scalar per completion, on each of its tokens
            adv = rloo_advantages(tok_r.sum(-1), cfg.num_generations).unsqueeze(1) * loss_mask
        m: dict[str, float] = {"kl_coef": coef}
        if ref is not None:
            seq_kl = masked_mean(kl, cmask, dim=-1)
            m["kl_penalty"] = float(seq_kl.mean())
            self.kl_ctl.update(float(seq_kl.mean()), rewards.numel())
        m["advantages/mean"] = float(masked_mean(adv, loss_mask))
        m["advantages/std"] = float(masked_mean((adv - masked_mean(adv, loss_mask)) ** 2, loss_mask).sqrt())
        if returns is not None:
            rm = masked_mean(returns, loss_mask)
            m["returns/mean"] = float(rm)
            m["returns/std"] = float(masked_mean((returns - rm) ** 2, loss_mask).sqrt())
        if values is not None:
            m["critic/values_mean"] = float(masked_mean(values, loss_mask))
            m["critic/explained_variance"] = explained_variance(values, returns, loss_mask)
        return adv, returns, values, m

    # ---- the update ----------------------------------------------------------------------------------
    def update(self, roll, rewards: torch.Tensor, loss_mask: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Run one step's epochs; returns (one advantage per completion for the samples log, metrics)."""
        from r1zero.trainer import clip_and_step  # the trainer imports this module

        tr, cfg = self.tr, self.cfg
        old_all = tr._frozen_logprobs(tr.policy, roll)  # pi_old for the ratio and the reward KL
        ref_all = tr._ref_logprobs(roll) if tr.ref_model is not None else None
        adv_all, returns_all, values_all, metrics = self.advantages(roll, rewards, loss_mask, old_all, ref_all)
        update_policy = tr.step >= cfg.critic_warmup_steps
        G = cfg.num_generations
        n = roll.completion_ids.shape[0]
        mini_rows = (cfg.mini_batch_prompts or cfg.prompts_per_step) * G
        ids_all, am_all, cm_all, P = roll.input_ids, roll.attention_mask, roll.completion_mask, roll.prompt_ids.shape[1]
        mb = cfg.per_device_train_batch_size
        sums: dict[str, float] = {}
        counts: dict[str, float] = {}
        acc = {"loss": 0.0, "critic/value_loss": 0.0, "ent": 0.0, "tok": 0.0}
        grad_norms, critic_norms = [], []
        updates = 0
        for _ in range(cfg.num_iterations):
            for m0 in range(0, n, mini_rows):
                rows = list(range(m0, min(n, m0 + mini_rows)))
                mini_tokens = float(loss_mask[rows].sum())
                tr.optimizer.zero_grad(set_to_none=True)
                if self.critic is not None:
                    self.critic_optimizer.zero_grad(set_to_none=True)
                for s in range(0, len(rows), mb):
                    r = rows[s:s + mb]
                    mask = loss_mask[r]
                    tok = float(mask.sum())
                    if update_policy:
                        lp, ent = self._policy(ids_all[r], am_all[r], cm_all[r], P)
                        dm = mask.to(lp.device)
                        ref = ref_all[r].to(lp.device) if ref_all is not None and cfg.beta > 0 else None
                        loss, pm = policy_loss(
                            lp, old_all[r].to(lp.device), adv_all[r].to(lp.device), dm, loss_type=cfg.loss_type,
                            epsilon=cfg.epsilon, epsilon_high=cfg.epsilon_high, ref_logprobs=ref, beta=cfg.beta,
                            kl_estimator=cfg.kl_estimator, max_completion_length=cfg.max_completion_length,
                            total_tokens=mini_tokens)
                        if cfg.entropy_coeff > 0:
                            loss = loss - cfg.entropy_coeff * _reduce(ent, dm, cfg.loss_type, cfg.max_completion_length,
                                                                      mini_tokens)
                        if cfg.loss_type != "dapo":
                            loss = loss * (len(r) / len(rows))  # mean over the mini-batch, not the micro-batch
                        loss.backward()
                        tr.health.note_loss(loss.detach())
                        acc["loss"] += float(loss.detach())
                        acc["ent"] += float((ent.detach() * dm).sum())
                        acc["tok"] += tok
                        for k, v in pm.items():
                            sums[k] = sums.get(k, 0.0) + v * tok
                            counts[k] = counts.get(k, 0.0) + tok
                    if self.critic is not None:
                        v = self._values(ids_all[r], am_all[r], cm_all[r], P)
                        dm = mask.to(v.device)
                        vl, clipfrac = value_loss(v, values_all[r].to(v.device), returns_all[r].to(v.device), dm,
                                                  cfg.cliprange_value, total_tokens=mini_tokens)
                        vl.backward()
                        acc["critic/value_loss"] += float(vl.detach())
                        sums["critic/value_clip_frac"] = sums.get("critic/value_clip_frac", 0.0) + clipfrac * tok
                        counts["critic/value_clip_frac"] = counts.get("critic/value_clip_frac", 0.0) + tok
                if update_policy:
                    # A non-finite loss or gradient skips the update (r1zero.guards), as in GRPO.
                    grad_norms.append(_nan_if_inf(clip_and_step(
                        tr.model, tr.optimizer, cfg.max_grad_norm, lambda gn: tr.health.update_ok(gn, tr.step + 1))))
                if self.critic is not None:
                    critic_norms.append(_nan_if_inf(clip_and_step(
                        self.critic, self.critic_optimizer, cfg.max_grad_norm, lambda gn: math.isfinite(float(gn)))))
                updates += 1
        tr.optimizer.zero_grad(set_to_none=True)
        if self.critic is not None:
            self.critic_optimizer.zero_grad(set_to_none=True)
            metrics["critic/learning_rate"] = self.critic_scheduler.get_last_lr()[0]
            self.critic_scheduler.step()
            metrics["critic/value_loss"] = acc["critic/value_loss"] / updates
            metrics["critic/grad_norm"] = sum(critic_norms) / len(critic_norms)
        if update_policy:
            metrics["loss"] = acc["loss"] / updates
            metrics["grad_norm"] = sum(grad_norms) / len(grad_norms)
            metrics["entropy"] = acc["ent"] / max(acc["tok"], 1.0)
        for k, v in sums.items():
            metrics[k] = v / max(counts[k], 1.0)
        # One number per completion for samples.jsonl: its mean token advantage.
        seq_adv = masked_mean(adv_all, loss_mask, dim=-1)
        return seq_adv, metrics


def _nan_if_inf(grad_norm: float) -> float:
    return grad_norm if math.isfinite(grad_norm) else float("nan")
