"""The run's training machinery as the algorithms see it (r1zero.algorithms.strategy): the trainer
builds a ``RunStrategy`` and hands it over in the UpdateContext, so an algorithm trains a model of
its own (PPO's critic) the way the policy is trained, without importing r1zero.training.

A model trained through it is wrapped like the policy (DDP or FSDP2 under torchrun), gets AdamW
with the config's settings and schedule (r1zero.training.optim), is clipped and stepped like the
policy, and its optimizer state goes into every checkpoint under its name: ``<name>_scheduler`` (and
in one process ``<name>_optimizer``) in trainer_state.pt, under torchrun every rank's shards in
``<name>_optimizer/`` (``save_sharded``, called by the trainer's save).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from r1zero.training import distributed as dist
from r1zero.training import optim


class OptimizedModel:
    """One model with its optimizer and schedule (r1zero.algorithms.strategy.TrainedModel)."""

    def __init__(self, model: torch.nn.Module, module: torch.nn.Module, optimizer, scheduler, *,
                 env: dist.DistEnv, max_grad_norm: float, name: str):
        self.model, self.module, self.optimizer, self.scheduler = model, module, optimizer, scheduler
        self.env, self.max_grad_norm = env, max_grad_norm
        self.optimizer_key, self.scheduler_key = f"{name}_optimizer", f"{name}_scheduler"

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def grad_sync(self, enabled: bool):
        return dist.grad_sync(self.module, enabled)

    def step(self) -> float:
        return optim.clip_and_step(self.model, self.optimizer, self.max_grad_norm, lambda gn: math.isfinite(float(gn)))

    def learning_rate(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def schedule_step(self) -> None:
        self.scheduler.step()

    def full_state_dict(self) -> dict[str, torch.Tensor] | None:
        return dist.full_state_dict(self.model)

    def tensor_state(self) -> dict[str, Any]:
        tensor_state = {self.scheduler_key: self.scheduler.state_dict()}
        if not self.env.enabled:
            tensor_state[self.optimizer_key] = self.optimizer.state_dict()
        return tensor_state

    def save_sharded(self, folder: Path) -> None:
        """Under torchrun: every rank writes its part of the optimizer state into ``folder``."""
        dist.save_optimizer(self.module, self.optimizer, Path(folder) / self.optimizer_key)

    def restore(self, tensor_state: dict[str, Any] | None, checkpoint: Path, steps_done: int) -> None:
        if tensor_state is not None and self.scheduler_key in tensor_state:
            config = optim.settings(self.optimizer, self.scheduler)
            if self.optimizer_key in tensor_state:
                self.optimizer.load_state_dict(tensor_state[self.optimizer_key])
            elif (Path(checkpoint) / self.optimizer_key).is_dir():
                dist.load_optimizer(self.module, self.optimizer, Path(checkpoint) / self.optimizer_key)
            self.scheduler.load_state_dict(tensor_state[self.scheduler_key])
            optim.apply_settings(self.optimizer, self.scheduler, config)  # a learning rate changed on resume applies
        else:
            for _ in range(steps_done):
                self.scheduler.step()


class RunStrategy:
    """The run's processes (``env``) and its optimizer settings (``cfg``, ``max_steps``), for the
    models an algorithm trains (r1zero.algorithms.strategy.Strategy)."""

    def __init__(self, cfg, env: dist.DistEnv, max_steps: int):
        self.cfg, self.env, self.max_steps = cfg, env, max_steps
        self.world_size = env.world_size
        self.trained: list[OptimizedModel] = []

    @property
    def distributed(self) -> bool:
        return self.env.enabled

    def all_sum(self, values: list) -> list[float]:
        return dist.all_sum(values, self.env)

    def train(self, model: torch.nn.Module, module: torch.nn.Module, learning_rate: float,
              name: str) -> OptimizedModel:
        wrapped = dist.wrap(module, self.cfg.distributed, self.env)
        # After wrapping: FSDP2 has replaced the parameters with their shards.
        optimizer, scheduler = optim.make_optimizer(model, self.cfg, learning_rate, self.max_steps)
        trained = OptimizedModel(model, wrapped, optimizer, scheduler, env=self.env,
                                 max_grad_norm=self.cfg.max_grad_norm, name=name)
        self.trained.append(trained)
        return trained

    def save_sharded(self, folder: Path) -> None:
        """Under torchrun: every rank writes its part of every trained model's optimizer state."""
        for trained in self.trained:
            trained.save_sharded(folder)


__all__ = ["OptimizedModel", "RunStrategy"]
