"""A step's batch in either of two vocabularies, resolved to r1zero's when the config is built.

r1zero's own: ``prompts_per_step`` prompts per step (one generation), ``mini_batch_prompts`` of
them per optimizer update, ``micro_batch_size`` sequences per forward/backward pass.

TRL 1.16's (GRPOConfig.__post_init__ and GRPOTrainer's sampler), with W processes:
``per_device_train_batch_size`` (B) completions per process per micro-step,
``gradient_accumulation_steps`` (A) micro-steps per optimizer step, ``steps_per_generation`` (S,
default A) micro-steps per generation, or ``generation_batch_size`` (default B x W x S) completions
per generation; ``num_iterations`` passes over each generation. So a generation holds
``generation_batch_size / num_generations`` prompts, an optimizer step B x A x W completions, and a
generation S x num_iterations / A optimizer steps; TRL's ``max_steps`` counts optimizer steps.

A config that sets TRL's keys is rewritten to r1zero's (the TRL keys then read null), so a run's
config.yaml means the same when it is loaded again; setting both kinds is refused. The one TRL
layout r1zero cannot run is an optimizer step that straddles two generations or two passes (TRL
accumulates such steps across them): ``steps_per_generation`` must be a multiple of
``gradient_accumulation_steps``.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass

from r1zero.errors import ConfigError

log = logging.getLogger("r1zero")

TRL_KEYS = ("per_device_train_batch_size", "gradient_accumulation_steps", "steps_per_generation",
            "generation_batch_size")
R1ZERO_KEYS = ("prompts_per_step", "mini_batch_prompts", "micro_batch_size")
PROMPTS_PER_STEP, MICRO_BATCH_SIZE = 16, 8  # r1zero's defaults when neither kind is set


def env_world_size() -> int:
    """The number of processes torchrun started (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


@dataclass(frozen=True)
class TrlBatch:
    """What TRL 1.16 makes of its batch keys: the counts a test compares with TRL's own trainer."""

    prompts_per_generation: int
    completions_per_update: int  # completions per optimizer step, over every process
    updates_per_generation: int  # optimizer steps per generation (all passes)
    micro_batch_size: int  # completions per forward/backward pass on one process


def trl_batch(num_generations: int, num_iterations: int, world_size: int, per_device_train_batch_size: int | None = None,
              gradient_accumulation_steps: int | None = None, steps_per_generation: int | None = None,
              generation_batch_size: int | None = None) -> TrlBatch:
    """TRL 1.16's arithmetic (its defaults for the keys not given), each refusal naming the key."""
    B = 8 if per_device_train_batch_size is None else per_device_train_batch_size
    A = 1 if gradient_accumulation_steps is None else gradient_accumulation_steps
    G, W = num_generations, world_size
    for key, value in (("per_device_train_batch_size", B), ("gradient_accumulation_steps", A),
                       ("steps_per_generation", steps_per_generation), ("generation_batch_size", generation_batch_size)):
        if value is not None and value < 1:
            raise ConfigError(f"config: '{key}' must be at least 1")
    if steps_per_generation is not None and generation_batch_size is not None:
        raise ConfigError("config: 'generation_batch_size' and 'steps_per_generation' cannot both be set (TRL refuses "
                          "it too); keep one")
    if generation_batch_size is None:
        S = A if steps_per_generation is None else steps_per_generation
        generation_batch_size = B * W * S
    else:
        if generation_batch_size % (B * W):
            raise ConfigError(f"config: 'generation_batch_size' ({generation_batch_size}) must be divisible by "
                              f"per_device_train_batch_size x processes ({B} x {W})")
        S = generation_batch_size // (B * W)
    if generation_batch_size % G:
        raise ConfigError(f"config: the generation batch per_device_train_batch_size x processes x steps_per_generation "
                          f"({B} x {W} x {S} = {generation_batch_size} completions) must be divisible by "
                          f"num_generations ({G}); TRL refuses it too")
    if S % A:
        raise ConfigError(f"config: 'steps_per_generation' ({S}) must be a multiple of gradient_accumulation_steps "
                          f"({A}): r1zero's optimizer steps do not straddle generations or passes")
    return TrlBatch(generation_batch_size // G, B * A * W, S // A * num_iterations, B)


def resolve(values: dict, world_size: int) -> dict:
    """``values`` (a config's fields) with the batch in r1zero's keys: TRL's converted (and set to
    None), or r1zero's defaults filled in."""
    trl = [k for k in TRL_KEYS if values.get(k) is not None]
    if not trl:
        return {**values, "prompts_per_step": values.get("prompts_per_step") or PROMPTS_PER_STEP,
                "micro_batch_size": values.get("micro_batch_size") or MICRO_BATCH_SIZE}
    mine = [k for k in R1ZERO_KEYS if values.get(k) is not None]
    if mine:
        raise ConfigError(f"config: {', '.join(repr(k) for k in mine)} (r1zero's batch keys) and "
                          f"{', '.join(repr(k) for k in trl)} (TRL's) cannot be mixed; keep one kind")
    G, iters = values["num_generations"], values["num_iterations"]
    b = trl_batch(G, iters, world_size, **{k: values.get(k) for k in TRL_KEYS})
    P, per_update = b.prompts_per_generation, b.completions_per_update // G
    if b.completions_per_update % G:
        raise ConfigError(f"config: an optimizer step's completions (per_device_train_batch_size x "
                          f"gradient_accumulation_steps x processes = {b.completions_per_update}) must be whole groups "
                          f"of num_generations ({G}): r1zero's updates hold every completion of their prompts")
    out = {**values, **{k: None for k in TRL_KEYS}, "prompts_per_step": P, "micro_batch_size": b.micro_batch_size,
           "mini_batch_prompts": per_update if per_update < P else None}
    if values.get("max_steps", -1) > 0:  # TRL counts optimizer steps, r1zero generations
        out["max_steps"] = math.ceil(values["max_steps"] / b.updates_per_generation)
    log.info("TRL batch keys (%s, %d process%s): %d prompts x %d completions per generation, %d completions per "
             "optimizer step, %d optimizer step%s per generation -> prompts_per_step %d, mini_batch_prompts %s, "
             "micro_batch_size %d, max_steps %s", ", ".join(f"{k} {values[k]}" for k in trl), world_size,
             "" if world_size == 1 else "es", P, G, b.completions_per_update, b.updates_per_generation,
             "" if b.updates_per_generation == 1 else "s", P, out["mini_batch_prompts"], b.micro_batch_size,
             out.get("max_steps"))
    return out
