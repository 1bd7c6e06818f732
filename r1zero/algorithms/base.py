"""What an RL algorithm is to the update loop: one typed batch in, per-token advantages and a loss out.

The training loop (r1zero.training.trainer) hands every algorithm the same ``RolloutBatch``, with the
policy's and the reference model's log-probs filled in when the algorithm asks for them; the
algorithm turns it into advantages; the one update loop (r1zero.training.update) runs passes x
mini-batches x micro-batches and calls the algorithm's ``policy_loss`` for every micro-batch, and
its hooks for anything it trains besides the policy (PPO's critic). An algorithm is registered by
name (``algorithm:`` in the config) and owns its config checks, extra modules and checkpoint state.
A variant is a subclass that overrides what differs.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from r1zero.algorithms.entropy import EntropyCoefficient
from r1zero.algorithms.losses import OBJECTIVE_KEYS, Normaliser, aggregate, get_policy_loss, policy_loss
from r1zero.algorithms.strategy import ForwardPasses, Strategy
from r1zero.algorithms.tensors import masked_mean
from r1zero.config.checks import register_algorithm_checks
from r1zero.errors import ConfigError, need

__all__ = ["RolloutBatch", "Algorithm", "UpdateContext", "register", "get_algorithm", "configured_algorithm",
           "algorithm_names"]


@dataclass
class RolloutBatch:
    """One step's rollouts on this process, everything advantages and the update read.

    Row i belongs to prompt i // group_size; a process always holds whole groups.
    """

    input_ids: torch.Tensor        # (N, P + C) [left-padded prompt | right-padded completion]
    attention_mask: torch.Tensor   # (N, P + C)
    prompt_width: int              # P
    completion_mask: torch.Tensor  # (N, C) 1 for tokens up to and including EOS
    loss_mask: torch.Tensor        # (N, C) float: the tokens the loss counts (see mask_truncated_completions)
    rewards: torch.Tensor          # (N,) float32, this process's rows
    global_rewards: torch.Tensor   # (N_all,) float32, every process's rows in the step's order
    global_rows: torch.Tensor      # (N,) long: where this process's rows sit in global_rewards
    group_size: int                # G
    old_logprobs: torch.Tensor | None = None  # (N, C) under the policy that sampled (when computed)
    ref_logprobs: torch.Tensor | None = None  # (N, C) under the reference model (when there is one)
    sampled_logprobs: torch.Tensor | None = None  # (N, C) the sampler's own (r1zero engine), for the mismatch metric

    def __len__(self) -> int:
        return self.input_ids.shape[0]


@dataclass
class UpdateContext:
    """What an algorithm may use of the run besides the config (given by the trainer)."""

    device: torch.device
    strategy: Strategy             # the processes, and training a model of its own (r1zero.algorithms.strategy)
    passes: ForwardPasses          # forward passes over a batch's rows, on the device
    max_steps: int
    resume_from: Path | None = None  # the checkpoint folder being resumed, or None

    def all_sum(self, values: list) -> list[float]:
        return self.strategy.all_sum(values)

    @property
    def global_sum(self):
        """``all_sum`` when there are several processes, else None (plain local reductions)."""
        return self.all_sum if self.strategy.distributed else None


class Algorithm:
    """GRPO-shaped by default: sequence advantages, the clipped surrogate, nothing else to train."""

    name: ClassVar[str] = ""
    # pi_old needs its own pass even with one update per step (its advantages read it).
    always_old_logprobs: ClassVar[bool] = False
    # Sequence advantages, so GSPO's per-completion ratio applies (importance_sampling_level=sequence).
    sequence_ratio: ClassVar[bool] = False
    # Trains a critic (its keys: critic_model_name_or_path, critic_warmup_steps); others refuse them.
    has_critic: ClassVar[bool] = False

    def __init__(self, cfg, ctx: UpdateContext):
        self.cfg = cfg
        self.ctx = ctx
        self.entropy_coef = EntropyCoefficient(cfg)  # fixed entropy_coeff, or adapted (use_adaptive_entropy)

    # ---- configuration ---------------------------------------------------------------------------
    @classmethod
    def check_config(cls, cfg) -> None:
        """Refuse settings this algorithm cannot run (ConfigError, one line naming the key)."""
        need(cfg.entropy_coeff >= 0, "entropy_coeff", "must be >= 0 (0 = no entropy bonus)")
        need(cfg.importance_sampling_level == "token" or cls.sequence_ratio, "importance_sampling_level",
             f"'sequence' (GSPO) needs algorithm=grpo (one advantage per completion; {cls.name} has one per token)")
        need(cfg.loss_type != "vespo" or cls.sequence_ratio, "loss_type",
             f"vespo weighs each completion by the sign of its advantage: it needs algorithm=grpo ({cls.name} has "
             "one advantage per token)")
        if not cls.has_critic:
            need(cfg.critic_model_name_or_path is None, "critic_model_name_or_path",
                 "needs algorithm=ppo (only ppo has a critic)")
            need(cfg.critic_warmup_steps == 0, "critic_warmup_steps", "needs algorithm=ppo (only ppo has a critic)")

    @classmethod
    def uses_reference(cls, cfg) -> bool:
        """Whether the run needs a frozen reference model (for the KL term)."""
        return cfg.beta > 0

    # ---- one step --------------------------------------------------------------------------------
    def advantages(self, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """(advantages, metrics): (N,) one per completion, or (N, C) one per token."""
        raise NotImplementedError

    def updates_policy(self, steps_done: int) -> bool:
        return True

    def policy_loss(self, logprobs, entropy, old, ref, advantages, mask, norm: Normaliser, sampled=None):
        """(loss, LossStats) of one micro-batch, normalised as ``norm`` says (its share of the
        mini-batch included): the registered ``loss_type`` objective, minus ``entropy_coeff`` x the
        entropy reduced the same way. ``sampled``: the sampler's log-probs of these rows, if any."""
        cfg = self.cfg
        loss, stats = policy_loss(
            logprobs, old, advantages, mask, loss_type=cfg.loss_type, epsilon=cfg.epsilon,
            epsilon_high=cfg.epsilon_high, ref_logprobs=ref if cfg.beta > 0 else None, beta=cfg.beta,
            kl_estimator=cfg.kl_estimator, max_completion_length=norm.max_completion_length,
            total_tokens=norm.total_tokens, total_rows=norm.total_rows,
            importance_sampling_level=cfg.importance_sampling_level, use_bias_correction_kl=cfg.use_bias_correction_kl,
            sampled_logprobs=sampled, entropy=entropy, all_gather=norm.all_gather,
            **{f.name: getattr(cfg, f.name) for f in OBJECTIVE_KEYS})
        coef = self.entropy_coef.applied()
        if self.entropy_coef.adaptive:
            self.entropy_coef.observe((entropy.detach() * mask).sum(), mask.sum())
        if coef > 0:
            loss = loss - coef * aggregate(entropy, mask, get_policy_loss(cfg.loss_type).reduction, norm)
        return loss, stats

    def sequence_advantages(self, advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(N,) one number per completion for samples.jsonl."""
        return advantages if advantages.dim() == 1 else masked_mean(advantages, mask, dim=-1)

    # ---- what else it trains (PPO's critic): called by the update loop ---------------------------
    def start_mini_batch(self) -> None: ...

    def after_micro_batch(self, batch: RolloutBatch, rows: list[int], total_tokens: float, last: bool,
                          metrics) -> None: ...

    def end_mini_batch(self, metrics) -> None: ...

    def end_update(self, metrics) -> dict[str, float]:
        return {}

    # ---- checkpoint state ------------------------------------------------------------------------
    def state(self) -> dict:
        """JSON state (trainer_state.json)."""
        return self.entropy_coef.state()

    def tensor_state(self) -> dict:
        """Tensor state (trainer_state.pt), e.g. a critic's schedule (its optimizer's shards under torchrun:
        the strategy saves those)."""
        return {}

    def restore(self, state: dict, tensor_state: dict | None, steps_done: int) -> None:
        self.entropy_coef.restore(state)

    def extra_models(self) -> dict:
        """name -> model saved as a sub-folder of every checkpoint."""
        return {}


_REGISTRY: dict[str, type[Algorithm]] = {}


def register(cls: type[Algorithm]) -> type[Algorithm]:
    """Make ``cls`` the algorithm of its name, and its keys part of every config's checks."""
    _REGISTRY[cls.name] = cls
    register_algorithm_checks(cls.name, cls.check_config)
    return cls


def algorithm_names() -> list[str]:
    return sorted(_REGISTRY)


def get_algorithm(name: str) -> type[Algorithm]:
    if name not in _REGISTRY:
        raise ConfigError(f"config: 'algorithm' {name!r} is unknown; use one of {', '.join(algorithm_names())}")
    return _REGISTRY[name]


def configured_algorithm(cfg) -> type[Algorithm]:
    """The config's algorithm with its keys checked: a TrainConfig built before this package was
    imported could not check them (r1zero.config.checks.ALGORITHM_CHECKS)."""
    algorithm = get_algorithm(cfg.algorithm)
    algorithm.check_config(cfg)
    return algorithm
