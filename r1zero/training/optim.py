"""The optimizer and its learning-rate schedule, and one clip-and-step for the policy and any critic."""
from __future__ import annotations

import math

import torch


def make_scheduler(optimizer, kind: str, total_steps: int, warmup_steps: int):
    """transformers' schedules (get_linear/cosine/constant_schedule_with_warmup), step for step:
    the factor of update ``step`` (0-based) is step / warmup_steps during warmup, so the first
    update of a warmed-up run has learning rate 0, as in TRL (and veRL); "constant" warms up too."""
    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return step / warmup_steps
        if kind in ("constant", "constant_with_warmup"):
            return 1.0
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        progress = min(max(progress, 0.0), 1.0)
        if kind == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))  # cosine

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def fused_applies(params: list) -> bool:
    """Whether torch's fused AdamW takes ``params``: plain tensors (not the DTensor shards FSDP
    trains) of a floating dtype, on the CPU or CUDA.

    Why fused: it updates each tensor in one kernel that reads the weight, its gradient and both
    moments once and writes them back, where the per-tensor implementation (torch's default on a
    CPU) makes a temporary for the denominator and passes over the moments several times. Measured
    for the 135M embedded model's 272 tensors (2-core CPU, 2 threads, torch 2.13): a step took
    0.074-0.079 s fused against 0.24-0.42 s per tensor and 0.25-0.37 s foreach; the weights after 6
    steps differ from the per-tensor ones by at most 4e-9 (the same formula, operations ordered
    differently). transformers' Trainer defaults to it too (``adamw_torch_fused``)."""
    return bool(params) and all(
        type(p.data) is torch.Tensor and p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)


def _mark_changed(optimizer, args, kwargs) -> None:
    """After a fused step: bump every weight's version counter, as an in-place op would. The fused
    kernel writes the weights without doing so (torch 2.13: ``_version`` unchanged by a step), and
    the sampler's weights are refreshed when those counters change (r1zero.rollout.weights): without
    this the run would sample from its first policy forever, and learn nothing."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            torch.autograd.graph.increment_version(p)


def make_optimizer(model, cfg, lr: float, total_steps: int):
    """AdamW over ``model``'s trainable weights (the config's betas, eps, decay) and its schedule;
    fused where ``fused_applies``."""
    params = [p for p in model.parameters() if p.requires_grad]
    fused = fused_applies(params)
    optimizer = torch.optim.AdamW(
        params, lr=lr, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_epsilon, weight_decay=cfg.weight_decay,
        fused=fused or None)
    if fused:
        optimizer.register_step_post_hook(_mark_changed)
    warmup = math.ceil(cfg.warmup_ratio * total_steps)  # transformers' TrainingArguments.get_warmup_steps
    return optimizer, make_scheduler(optimizer, cfg.lr_scheduler_type, total_steps, warmup)


def settings(optimizer, scheduler) -> tuple[list[dict], list[float]]:
    """The config's hyperparameters in an optimizer and its schedule, and its implementation (fused
    or not): what loading a checkpoint's state_dicts would replace with the values the run had when
    it saved (a checkpoint of the per-tensor AdamW would turn fused off)."""
    keys = ("betas", "eps", "weight_decay", "fused", "foreach")
    return [{k: g[k] for k in keys if k in g} for g in optimizer.param_groups], list(scheduler.base_lrs)


def apply_settings(optimizer, scheduler, saved: tuple[list[dict], list[float]]) -> None:
    """Put ``settings`` back after a checkpoint's states are loaded: the moments and the step count
    continue, the learning rate (at the schedule's current step), betas, eps, decay and fused are the
    config's. With an unchanged config this computes the very numbers the loaded state holds;
    with a change allowed on resume (allow_config_change) the change takes effect."""
    groups, base_lrs = saved
    scheduler.base_lrs = list(base_lrs)
    for g, s, base, factor in zip(optimizer.param_groups, groups, base_lrs, scheduler.lr_lambdas):
        g.update(s)
        g["initial_lr"] = base
        g["lr"] = base * factor(scheduler.last_epoch)  # LambdaLR's own expression
    scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]


def clip_and_step(model, optimizer, max_grad_norm: float, allow) -> float:
    """Clip the gradients to ``max_grad_norm`` (when > 0), step only if ``allow(grad_norm)`` (a
    non-finite update is skipped: r1zero.training.guards), and return the norm before clipping
    (NaN when it was not finite, so a mean over updates says so)."""
    params = [p for p in model.parameters() if p.grad is not None]
    # max_norm=inf clips nothing (the factor is clamped to 1) and still returns the norm; with
    # FSDP the gradients are sharded and the norm comes back sharded too, made whole here.
    gn = torch.nn.utils.clip_grad_norm_(params, max_grad_norm if max_grad_norm > 0 else math.inf)
    if hasattr(gn, "full_tensor"):
        gn = gn.full_tensor()
    if allow(gn):
        optimizer.step()
    gn = float(gn)
    return gn if math.isfinite(gn) else float("nan")
