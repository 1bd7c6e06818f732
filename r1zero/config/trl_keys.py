"""TRL's keys that r1zero has no field for, said once for YAML recipes and the Python entry
(r1zero.trl): the ones that only choose an engine or a speed/memory knob are accepted, each with
one logged line saying what r1zero does instead; the ones that would change what is trained, and
that r1zero cannot do, are refused in one line naming them.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any

from r1zero.config.fields import TrainConfig
from r1zero.errors import ConfigError

log = logging.getLogger("r1zero")

_VLLM = "r1zero samples with its own decoder in the training process (no vLLM); the objective is the same"
_STRATEGY = "r1zero {what} every {key} steps ({zero}) and at the end, whatever the strategy"

# key -> what r1zero does instead. Keys starting with an entry of ACCEPTED_PREFIXES count too.
ACCEPTED: dict[str, str] = {
    "model_revision": "r1zero loads the model folder or hub id as it is (the default revision)",
    "torch_dtype": "r1zero keeps fp32 master weights and computes in bf16 under autocast when bf16 is on",
    "dtype": "r1zero keeps fp32 master weights and computes in bf16 under autocast when bf16 is on",
    "attn_implementation": "r1zero chooses the attention kernel itself (sdpa)",
    "model_init_kwargs": "r1zero loads the model itself (fp32 weights, its own attention kernel)",
    "gradient_checkpointing_kwargs": "r1zero's gradient_checkpointing is always non-reentrant (use_reentrant false)",
    "tf32": "r1zero leaves TF32 matmuls as torch sets them",
    "use_vllm": _VLLM,
    "vllm_mode": _VLLM,
    "save_strategy": _STRATEGY.format(what="saves", key="save_steps", zero="0: only"),
    "logging_strategy": "r1zero writes metrics every logging_steps steps and at the last one, whatever the strategy",
    "eval_strategy": _STRATEGY.format(what="evaluates", key="eval_steps", zero="0: never periodically"),
    "push_to_hub": "r1zero does not upload: the model is in output_dir/checkpoint-N (push it with huggingface-cli)",
    "hub_strategy": "r1zero does not upload: the model is in output_dir/checkpoint-N",
    "hub_model_id": "r1zero does not upload: the model is in output_dir/checkpoint-N",
    "optim": "r1zero trains with torch's AdamW",
    "use_liger_kernel": "r1zero computes log-probs in chunks of logprob_chunk_size tokens instead",
    "log_completions": "r1zero writes log_completions_rate of each step's completions to samples.jsonl",
    "ds3_gather_for_generation": "r1zero gathers FSDP shards for generation (distributed: fsdp)",
    "cache_implementation": "r1zero chooses its own KV cache",
    "per_device_eval_batch_size": "r1zero evaluates greedily in batches of sampling_batch_size (default 64)",
    "logging_dir": "r1zero writes TensorBoard logs into output_dir",
    "remove_unused_columns": "r1zero passes every column to the reward functions (TRL's GRPO default)",
}
ACCEPTED_PREFIXES = {"vllm_": _VLLM, "dataloader_": "r1zero draws prompts itself (no DataLoader workers)"}
# vLLM keys that only mean something with a vLLM server r1zero would have to talk to.
_SERVER = "r1zero has no vLLM server to talk to: it samples in the training process; remove it"

# key -> (TRL's default, why r1zero refuses another value).
REFUSED: dict[str, tuple[Any, str]] = {
    "vllm_server_base_url": (None, _SERVER),
    "deepspeed": (None, "DeepSpeed is not supported; run under torchrun with distributed: fsdp (or ddp)"),
    "fsdp": (None, "TRL's fsdp options are not read; run under torchrun with r1zero's distributed: fsdp"),
    "load_in_4bit": (False, "quantized bases are not supported; train the full-precision model (use_peft for memory)"),
    "load_in_8bit": (False, "quantized bases are not supported; train the full-precision model (use_peft for memory)"),
    "use_dora": (False, "DoRA is not supported; use plain LoRA (use_peft)"),
    "sync_ref_model": (False, "TR-DPO's reference syncing is not supported; the reference stays the starting model"),
    "generation_kwargs": (None, "extra generate() arguments are not supported; use temperature, top_p, top_k"),
    "min_p": (None, "min_p sampling is not supported; use top_p or top_k"),
    "repetition_penalty": (1.0, "a repetition penalty is not supported (it changes what is sampled)"),
    "delta": (None, "two-sided clipping (delta) is not supported; use epsilon and epsilon_high"),
    "multi_objective_aggregation": ("sum_then_normalize", "only TRL's default (sum_then_normalize) is supported"),
    "disable_dropout": (False, "r1zero keeps the model's dropout as it is; set it in the model's config"),
    "max_tool_calling_iterations": (None, "tool calling is not supported"),
    "num_generations_eval": (None, "r1zero evaluates one greedy completion per prompt"),
    "warmup_steps": (0, "give warmup_ratio instead (a share of max_steps)"),
    "fp16": (False, "fp16 is not supported; use bf16 (or fp32)"),
    "auto_find_batch_size": (False, "TRL refuses it too for GRPO; set the batch keys yourself"),
    "gradient_checkpointing_use_reentrant": (None, "r1zero's gradient checkpointing is always non-reentrant"),
}
for _k in ("vllm_server_host", "vllm_server_port", "vllm_server_timeout", "vllm_group_port"):
    REFUSED[_k] = ("", _SERVER)


_OWN_KEYS = frozenset(f.name for f in dataclasses.fields(TrainConfig))

# TRL's name (or philschmid's mini-R1 script's) -> r1zero's key of the same meaning.
ALIASES = {"entropy_coef": "entropy_coeff", "dataset_id_or_path": "dataset_name", "dataset_splits": "dataset_train_split"}


def accepted_note(key: str) -> str | None:
    """What r1zero does instead of ``key`` (an accepted TRL engine key), or None. A key r1zero has a
    field for is its own (the sampler correction's ``vllm_importance_sampling_*`` keep TRL's names)."""
    if key in ACCEPTED:
        return ACCEPTED[key]
    if key in REFUSED or key in _OWN_KEYS:
        return None
    return next((why for p, why in ACCEPTED_PREFIXES.items() if key.startswith(p)), None)


def refusal(key: str, value: Any) -> str | None:
    """Why ``key`` set to ``value`` is refused (one clause), or None when r1zero can run it.
    A refused key at TRL's default value changes nothing, so it passes (a dumped TRL config)."""
    if key not in REFUSED:
        return None
    default, why = REFUSED[key]
    if key in ("vllm_server_host", "vllm_server_port", "vllm_server_timeout", "vllm_group_port"):
        return why  # given at all: the script talks to a server
    if key == "warmup_steps" and isinstance(value, float) and 0 < value < 1:
        return None  # transformers 5: a float below 1 is a ratio (read as warmup_ratio)
    return None if value == default else why


def take_trl_keys(raw: dict, where: str) -> dict:
    """``raw`` without TRL's engine keys (each logged once with what r1zero does instead), and with
    the refused ones refused, all in one line. A warmup_steps ratio becomes warmup_ratio, use_cpu device: cpu."""
    refused = [f"'{k}' ({why})" for k, v in raw.items() if (why := refusal(k, v)) is not None]
    if refused:
        raise ConfigError(f"{where}: TRL option{'s' if len(refused) > 1 else ''} not supported: {'; '.join(refused)}")
    out = {}
    for key, value in raw.items():
        if key in ALIASES:
            if ALIASES[key] in raw:
                raise ConfigError(f"{where}: '{key}' and '{ALIASES[key]}' say the same thing; keep one")
            log.info("%s: '%s' is read as r1zero's '%s'", where, key, ALIASES[key])
            out[ALIASES[key]] = value
            continue
        if key == "use_cpu":  # transformers' device switch: r1zero's device key
            if value:
                if raw.get("device", "cpu") != "cpu":
                    raise ConfigError(f"{where}: 'use_cpu' and 'device' {raw['device']!r} disagree; keep one")
                out["device"] = "cpu"
            continue
        if key == "warmup_steps":
            if value:
                out["warmup_ratio"] = float(value)
            continue
        if key in REFUSED:
            continue  # at TRL's default
        note = accepted_note(key)
        if note is None:
            out[key] = value
            continue
        log.info("%s: '%s' (%s) is TRL's: %s", where, key, _short(value), note)
    return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
