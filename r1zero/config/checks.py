"""Checks of a configuration before anything loads: each raw value against its field's type, then the
cross-field rules. Each failure names the key and the fix."""
from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from pathlib import Path
from typing import Any, Callable, Literal, Union

from r1zero.errors import ConfigError, need


# ---------------------------------------------------------------------------------------------
# Type checking of raw values (YAML and command line) before the dataclass is built.

def type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def coerce(value: Any, tp: Any) -> tuple[bool, Any]:
    """(ok, value) where value is converted when the conversion is lossless (int -> float)."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return (value in typing.get_args(tp) and type(value) in {type(a) for a in typing.get_args(tp)}), value
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            ok, v = coerce(value, arg)
            if ok:
                return True, v
        return False, value
    if tp is type(None):
        return value is None, value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        if isinstance(value, bool):
            return False, value
        if isinstance(value, (int, float)):
            return True, float(value)
        return False, value
    if tp is str:
        return isinstance(value, str), value
    if tp is list or origin is list:
        if isinstance(value, str):  # `report_to=wandb` on the command line
            return True, [value]
        return isinstance(value, list), value
    if tp is dict or origin is dict:
        return isinstance(value, dict), value
    return True, value


def check_types(raw: dict, where: str, hints: dict[str, Any]) -> dict:
    """``raw`` with each value checked against (and losslessly converted to) the type ``hints`` gives it."""
    unknown = [k for k in raw if k not in hints]
    if len(unknown) == 1:
        close = closest(unknown[0], list(hints))
        hint = f"; did you mean '{close}'?" if close else "; see `r1zero train --help-config` for the keys"
        raise ConfigError(f"{where}: unknown key '{unknown[0]}'{hint}")
    if unknown:  # all of them at once, not one per try
        said = [f"'{k}'" + (f" (did you mean '{c}'?)" if (c := closest(k, list(hints))) else "") for k in unknown]
        raise ConfigError(f"{where}: unknown keys {', '.join(said)}; see `r1zero train --help-config` for the keys")
    out = {}
    for key, value in raw.items():
        ok, v = coerce(value, hints[key])
        if not ok:
            raise ConfigError(
                f"{where}: '{key}' must be {type_name(hints[key])}, got {value!r} ({type(value).__name__})"
            )
        out[key] = v
    return out


def closest(key: str, keys: list[str]) -> str | None:
    import difflib

    m = difflib.get_close_matches(key, keys, n=1, cutoff=0.75)
    return m[0] if m else None


# ---------------------------------------------------------------------------------------------
# Value checks that need more than a type.

@functools.lru_cache(maxsize=None)
def type_hints(cls: type) -> dict[str, Any]:
    """The resolved field types of a config class (computed once per class)."""
    return typing.get_type_hints(cls)


def validate(c) -> None:
    """Cross-field checks; each failure names the key and the fix."""
    # Types first (the dataclass may also be built from Python code).
    check_types({f.name: getattr(c, f.name) for f in dataclasses.fields(c)}, "config", type_hints(type(c)))
    _validate_values(c)
    need(not c.dynamic_sampling or c.num_generations >= 2, "dynamic_sampling",
         "needs num_generations >= 2 (a group of one completion never has a spread)")
    need(c.max_sampling_rounds >= 1, "max_sampling_rounds", "must be >= 1 (1 = one round, no extra prompts)")
    need(c.sampling_rounds_per_batch >= 1, "sampling_rounds_per_batch", "must be >= 1 (1 = one round at a time)")
    need(0 <= c.overlong_buffer_len < c.max_completion_length, "overlong_buffer_len",
         f"must be 0 (off) or a token count below max_completion_length ({c.max_completion_length})")
    need(c.overlong_penalty_factor > 0 and math.isfinite(c.overlong_penalty_factor), "overlong_penalty_factor",
         "must be a positive number, e.g. 1.0")
    _validate_lora(c)
    _validate_loss(c)
    _validate_algorithm(c)
    if c.mini_batch_prompts is not None:
        need(c.mini_batch_prompts >= 1 and c.prompts_per_step % c.mini_batch_prompts == 0, "mini_batch_prompts",
              f"must divide prompts_per_step ({c.prompts_per_step})")
    _validate_rewards(c)
    for r in c.report_to:
        need(r in ("tensorboard", "wandb", "swanlab", "none", "jsonl"), "report_to",
              f"entry {r!r} is not one of tensorboard, wandb, swanlab, none")
    need(c.device == "auto" or c.device == "cpu" or c.device.startswith("cuda"), "device", "must be auto, cpu, cuda or cuda:N")
    names = {f.name for f in dataclasses.fields(c)}
    for key in c.allow_config_change:
        need(key in names, "allow_config_change", f"entry {key!r} is not a config key (r1zero train --help-config lists them)")
    if c.resume_from_checkpoint not in (None, "auto") and not Path(c.resume_from_checkpoint).is_dir():
        raise ConfigError(f"config: 'resume_from_checkpoint' folder {c.resume_from_checkpoint} does not exist; "
                          "give a checkpoint-N folder, 'auto' or null")


def _validate_values(c) -> None:
    """Each key on its own: counts, step intervals, rates, limits and list lengths within their range."""
    for key in ("prompts_per_step", "num_generations", "max_prompt_length", "max_completion_length",
                "num_iterations", "micro_batch_size", "logprob_chunk_size", "logging_steps"):
        need(getattr(c, key) >= 1, key, "must be at least 1")
    for key in ("eval_steps", "save_steps"):
        need(getattr(c, key) >= 0, key, "must be 0 (off) or a positive number of steps")
    need(c.learning_rate > 0 and math.isfinite(c.learning_rate), "learning_rate", "must be a positive number, e.g. 1e-6")
    need(c.temperature > 0, "temperature", "must be > 0 (log-probs divide logits by it)")
    need(0 < c.top_p <= 1, "top_p", "must be in (0, 1]")
    need(c.top_k >= 0, "top_k", "must be >= 0 (0 = off)")
    need(c.epsilon > 0, "epsilon", "must be > 0, e.g. 0.2")
    need(c.epsilon_high is None or c.epsilon_high > 0, "epsilon_high", "must be > 0, e.g. 0.28")
    need(c.beta >= 0, "beta", "must be >= 0 (0 disables the KL term)")
    need(0 <= c.warmup_ratio < 1, "warmup_ratio", "must be in [0, 1)")
    need(c.weight_decay >= 0, "weight_decay", "must be >= 0")
    need(0 <= c.adam_beta1 < 1 and 0 <= c.adam_beta2 < 1, "adam_beta1/adam_beta2", "must be in [0, 1)")
    need(c.max_grad_norm >= 0, "max_grad_norm", "must be >= 0 (0 = no clipping)")
    need(c.max_skipped_updates >= 1, "max_skipped_updates", "must be >= 1, e.g. 5")
    need(c.max_failed_reward_steps >= 1, "max_failed_reward_steps", "must be >= 1, e.g. 5")
    need(0 <= c.reward_timeout < math.inf, "reward_timeout", "must be a number of seconds >= 0 (0 = no limit), e.g. 10")
    need(c.reward_memory_limit == 0 or 1 / 16 <= c.reward_memory_limit < math.inf, "reward_memory_limit",
         "must be 0 (no limit) or a number of GiB >= 0.0625 (Python alone takes ~30 MB), e.g. 4")
    need(c.max_steps == -1 or c.max_steps >= 1, "max_steps", "must be -1 (use num_train_epochs) or >= 1")
    need(c.num_train_epochs > 0, "num_train_epochs", "must be > 0")
    need(0 <= c.log_completions_rate <= 1, "log_completions_rate", "must be in [0, 1]")
    need(c.report_steps >= 0, "report_steps", "must be 0 (report only at the end) or a positive number of steps")
    need(c.collapse_steps >= 0, "collapse_steps", "must be 0 (never warn) or a number of steps, e.g. 3")
    need(0 < c.reflection_threshold <= 1, "reflection_threshold", "must be in (0, 1], e.g. 0.1")
    if c.reflection_words is not None:
        need(len(c.reflection_words) > 0 and all(isinstance(w, str) and w.strip() for w in c.reflection_words),
              "reflection_words", "must be a non-empty list of non-empty phrases, or null for the built-in list")
    need(c.save_total_limit is None or c.save_total_limit >= 1, "save_total_limit", "must be >= 1 or null (keep all)")
    need(c.eval_limit is None or c.eval_limit >= 1, "eval_limit", "must be >= 1 or null (all test rows)")
    need(c.train_size is None or c.train_size >= 1, "train_size", "must be >= 1 or null (all rows)")
    need(c.data_max_rows is None or c.data_max_rows >= 1, "data_max_rows", "must be >= 1 or null")
    need(c.test_size is None or (c.test_size > 0 and (c.test_size < 1 or float(c.test_size).is_integer())),
          "test_size", "must be a row count (>= 1) or a fraction in (0, 1)")


def _validate_rewards(c) -> None:
    """The reward functions and what names them: weights, module:function entries, the names of the
    correct/format rewards and the threshold that counts an answer correct."""
    if c.reward_weights is not None:
        need(len(c.reward_weights) == len(c.reward_funcs), "reward_weights",
              f"must have one weight per reward_funcs entry ({len(c.reward_funcs)})")
    for fn in c.reward_funcs:
        need(isinstance(fn, str) and ":" in fn, "reward_funcs", f"entry {fn!r} must look like 'module:function'")
    need(c.task != "custom" or bool(c.reward_funcs), "reward_funcs",
         "is needed by task custom, which has no reward of its own: give your functions, e.g. [rewards.py:accuracy]")
    names = [fn.rpartition(":")[2] for fn in c.reward_funcs]
    for key in ("correct_reward", "format_reward"):
        need(getattr(c, key) is None or getattr(c, key) in names, key,
             f"must be the name of a reward_funcs function ({', '.join(names) or 'none given'})")
    need(math.isfinite(c.correct_threshold), "correct_threshold", "must be a finite number, e.g. 1.0")


def _validate_lora(c) -> None:
    """The LoRA keys (TRL's ModelConfig names); the ones that need the model's module names are checked
    by r1zero.training.lora before the weights load. Without use_peft they are ignored, as in TRL."""
    if not c.use_peft:
        return
    need(c.lora_r >= 1, "lora_r", "must be at least 1, e.g. 16")
    need(c.lora_alpha > 0, "lora_alpha", "must be > 0, e.g. 32 (twice lora_r)")
    need(0 <= c.lora_dropout < 1, "lora_dropout", "must be in [0, 1), e.g. 0")
    for key in ("lora_target_modules", "lora_modules_to_save"):
        names = getattr(c, key)
        if names is not None:
            need(len(names) > 0 and all(isinstance(n, str) and n.strip() for n in names), key,
                 "must be a non-empty list of module names, or null for the default")
    targets = c.lora_target_modules or []
    need("all-linear" not in targets or len(targets) == 1, "lora_target_modules",
         "'all-linear' stands alone: give [all-linear] or a list of module names")
    need(not c.ref_model_offload, "ref_model_offload",
         "has nothing to offload with use_peft (the reference is the base weights with the adapter disabled); remove it")


def _validate_loss(c) -> None:
    """The policy objectives' own keys (TRL's names): in range, and set only with their loss_type."""
    cap = c.epsilon if c.epsilon_high is None else c.epsilon_high
    need(c.loss_type != "cispo" or cap >= 1, "epsilon_high",
         f"is the cap of cispo's importance ratio (unset: epsilon) and is {cap}, which scales every token down: "
         "give one >= 1 (ScaleRL: 5.0)")
    defaults = type(c).__dataclass_fields__
    for key in ("sapo_temperature_pos", "sapo_temperature_neg", "vespo_k_pos", "vespo_lambda_pos", "vespo_k_neg",
                "vespo_lambda_neg"):
        value, owner = getattr(c, key), key.split("_")[0]
        if "_k_" in key:  # vespo's power may be 0 (no down-weighting of small ratios)
            need(0 <= value < math.inf, key, "must be a finite number >= 0")
        else:
            need(0 < value < math.inf, key, "must be a finite number > 0")
        need(c.loss_type == owner or value == defaults[key].default, key,
             f"applies to loss_type={owner} only (loss_type is {c.loss_type}); remove it or set loss_type: {owner}")
    need(c.loss_type != "vespo" or c.importance_sampling_level == "token", "importance_sampling_level",
         "must be token with loss_type=vespo (it forms its own sequence weight from the token ratios)")
    lo, hi = c.vllm_importance_sampling_clip_min, c.vllm_importance_sampling_clip_max
    need(lo is None or 0 <= lo < math.inf, "vllm_importance_sampling_clip_min", "must be a ratio >= 0, or null")
    need(hi is None or 0 < hi < math.inf, "vllm_importance_sampling_clip_max", "must be a ratio > 0, or null")
    need(lo is None or hi is None or lo < hi, "vllm_importance_sampling_clip_min",
         f"must be below vllm_importance_sampling_clip_max ({hi})")
    if c.vllm_importance_sampling_correction:
        need(not c.vllm_importance_sampling_mode.endswith("truncate") or lo is not None or hi is not None,
             "vllm_importance_sampling_clip_max", "must be set with a *_truncate mode (TRL: 3.0), or set clip_min")
        need(c.loss_type != "vespo" or c.vllm_importance_sampling_mode.startswith("token"),
             "vllm_importance_sampling_mode", "must be token_truncate or token_mask with loss_type=vespo (TRL's rule)")
    else:
        for key in ("vllm_importance_sampling_mode", "vllm_importance_sampling_clip_min",
                    "vllm_importance_sampling_clip_max"):
            need(getattr(c, key) == defaults[key].default, key,
                 "has no effect without vllm_importance_sampling_correction: true; set that too, or remove it")
    t = c.off_policy_mask_threshold
    need(t is None or 0 <= t < math.inf, "off_policy_mask_threshold", "must be a KL >= 0 (e.g. 0.5), or null (off)")
    need(0 <= c.top_entropy_quantile <= 1, "top_entropy_quantile", "must be in [0, 1] (the paper: 0.2; 1 = all tokens)")
    for key in ("entropy_target", "entropy_coef_delta", "entropy_coef_min", "entropy_coef_max"):
        if c.use_adaptive_entropy:
            need(0 <= getattr(c, key) < math.inf, key, "must be a finite number >= 0")
        else:
            need(getattr(c, key) == defaults[key].default, key,
                 "has no effect without use_adaptive_entropy: true; set that too, or remove it")
    if c.use_adaptive_entropy:
        need(c.entropy_coef_delta > 0, "entropy_coef_delta", "must be > 0 (TRL: 0.005)")
        need(c.entropy_coef_min <= c.entropy_coef_max, "entropy_coef_min",
             f"must be at most entropy_coef_max ({c.entropy_coef_max})")


# The algorithms' own keys and rules, which they own: r1zero.algorithms registers each algorithm's
# check here as it is imported (config sits below the algorithms and never imports them). Whatever
# builds a config for a run imports the algorithms first (the cli, r1zero.trl, r1zero.observe's
# evaluation settings, the trainer's module); the trainer checks a config built before that again
# (r1zero.algorithms.base.configured_algorithm), still before any model loads.
ALGORITHM_CHECKS: dict[str, Callable[[Any], None]] = {}


def register_algorithm_checks(name: str, check: Callable[[Any], None]) -> None:
    ALGORITHM_CHECKS[name] = check


def _validate_algorithm(c) -> None:
    check = ALGORITHM_CHECKS.get(c.algorithm)
    if check is not None:
        check(c)
