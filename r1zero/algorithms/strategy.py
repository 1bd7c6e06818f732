"""What an algorithm may ask of the run's training machinery, handed to it in its UpdateContext (as
oat's learners get a ``strategy``), never imported: r1zero.training.strategy implements these for the
run (one process, or DDP / FSDP2 under torchrun), so no module of r1zero.algorithms imports
r1zero.training. An algorithm that trains a model of its own (PPO's critic) has the strategy wrap
it, make and step its optimizer and keep its optimizer state in every checkpoint.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ContextManager, Protocol

import torch


class TrainedModel(Protocol):
    """A model an algorithm trains besides the policy, with its AdamW and schedule."""

    module: torch.nn.Module  # what forward passes call: wrapped for the run (DDP or FSDP2 under torchrun)

    def zero_grad(self) -> None: ...

    def grad_sync(self, enabled: bool) -> ContextManager[None]:
        """Inside, a backward whose gradients are (``enabled``) or are not yet reduced over processes."""

    def step(self) -> float:
        """Clip the gradients to ``max_grad_norm``, step unless their norm is not finite; the norm."""

    def learning_rate(self) -> float:
        """The learning rate of the update just taken (before ``schedule_step``)."""

    def schedule_step(self) -> None: ...

    def full_state_dict(self) -> dict[str, torch.Tensor] | None:
        """The model's whole weights when they are sharded (every process calls it), else None."""

    def tensor_state(self) -> dict[str, Any]:
        """Its entries of trainer_state.pt: the schedule, and in one process the optimizer."""

    def restore(self, tensor_state: dict[str, Any] | None, checkpoint: Path, steps_done: int) -> None:
        """Put back what ``tensor_state`` and the strategy's sharded save wrote (the schedule alone
        continues when the checkpoint has none)."""


class ForwardPasses(Protocol):
    """The run's forward passes over rows of a RolloutBatch (r1zero.training.logprobs.ForwardPasses)."""

    def values(self, module: torch.nn.Module, batch, rows) -> torch.Tensor: ...

    def frozen_logprobs(self, module: torch.nn.Module, batch) -> torch.Tensor: ...

    def frozen_values(self, module: torch.nn.Module, batch) -> torch.Tensor: ...


class Strategy(Protocol):
    """The run's processes and how a model is trained on them."""

    world_size: int

    @property
    def distributed(self) -> bool:
        """Whether there are several processes."""

    def all_sum(self, values: list) -> list[float]:
        """Element-wise sum over processes (float64)."""

    def train(self, model: torch.nn.Module, module: torch.nn.Module, learning_rate: float,
              name: str) -> TrainedModel:
        """``module`` (a forward over ``model``) wrapped for the run, and AdamW over ``model``'s weights
        with the config's settings and schedule; ``name`` prefixes its checkpoint entries."""


__all__ = ["ForwardPasses", "Strategy", "TrainedModel"]
