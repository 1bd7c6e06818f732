"""Where r1zero's defaults differ from TRL 1.16's ``GRPOConfig`` for a key of the same name, so a TRL
user knows what changes when their YAML carries over (a section of docs/CONFIG.md;
tests/test_trl_defaults.py compares this table with TRL's own dataclass, field by field)."""
from __future__ import annotations

# key -> (TRL's default, why r1zero's differs). r1zero's default is read from TrainConfig.
DIFFERENT_DEFAULTS: dict[str, tuple[object, str]] = {
    "bf16": (True, "TRL's `None` becomes `not fp16`, i.e. bf16 on; r1zero's `None` turns it on only for a GPU "
                   "that supports it (off on a CPU)"),
    "gradient_checkpointing": (True, "off: the embedded CPU default is small; the GPU recipes turn it on"),
    "per_device_train_batch_size": (8, "null: the batch is r1zero's (`prompts_per_step`, ...) unless a TRL batch key is "
                                       "set; then the TRL keys not given take TRL's defaults (8 here)"),
    "gradient_accumulation_steps": (1, "null, as `per_device_train_batch_size` (TRL's 1 once a TRL batch key is set)"),
    "max_completion_length": (512, "256 fits the CPU default; the recipes set their own"),
    "loss_type": ("dapo", "`grpo`, the DeepSeekMath objective the reproduced systems train with"),
    "lr_scheduler_type": ("linear", "`constant`, as veRL (TinyZero) trains; the TRL recipes set `cosine`"),
    "num_train_epochs": (3.0, "1 pass over the train rows when `max_steps` is -1"),
    "eval_steps": (None, "0: the same (no periodic evaluation); r1zero evaluates at the end (`eval_on_end`)"),
    "output_dir": (None, "TRL writes to `trainer_output`; r1zero to `runs/r1zero`"),
    "logging_steps": (10, "every step: runs are short and the report plots every step"),
    "report_to": ("none", "TensorBoard besides metrics.jsonl (always written)"),
    "save_steps": (500, "0: a checkpoint at the end only, unless asked"),
    "save_total_limit": (None, "2 kept: full checkpoints with optimizer state are large"),
    "resume_from_checkpoint": (None, "`auto`: a run started again in the same folder resumes"),
    "use_bias_correction_kl": (True, "off: the classic KL term (veRL, TRL before 1.x) r1zero's recipes were tuned with; "
                                     "set it to true to train TRL 1.16's objective"),
    "vllm_importance_sampling_correction": (True, "off: the embedded default's 10-run table was measured without "
                                                  "it; TRL applies it only with vLLM, r1zero to its own sampler"),
    "disable_tqdm": (None, "`False`: the same in effect (TRL shows the bar unless the log level hides it)"),
}

# TRL behaviour with another key, or on by default without one in r1zero.
OTHER_DIFFERENCES = (
    "TRL's batch keys (`per_device_train_batch_size`, `gradient_accumulation_steps`, `steps_per_generation`, "
    "`generation_batch_size`, `num_iterations`) mean what they mean in TRL 1.16 and are converted to r1zero's "
    "(`prompts_per_step`, `mini_batch_prompts`, `micro_batch_size`), with `max_steps` counted in optimizer steps as "
    "TRL counts it; r1zero's own recipes set r1zero's keys. Both kinds in one config are refused. An optimizer step "
    "that would straddle two generations (`steps_per_generation` not a multiple of `gradient_accumulation_steps`) is refused.",
    "TRL's `entropy_coef` is r1zero's `entropy_coeff` (veRL's name).",
    "The sampler-mismatch correction keeps TRL's `vllm_importance_sampling_*` names (correction, mode, clip_min, "
    "clip_max), so a TRL config carries over unchanged; here they correct r1zero's own sampler, which returns its "
    "log-probs as vLLM does, and `off_policy_mask_threshold` measures the drift from those log-probs (TRL: from vLLM's, "
    "else from pi_old's).",
    "TRL's entropy bonus is a token mean whatever the `loss_type` and, with `top_entropy_quantile` < 1, over the kept "
    "tokens only; r1zero's is reduced like the loss over every completion token, and `use_adaptive_entropy` measures "
    "the entropy over every completion token.",
    "LoRA keys are TRL's `ModelConfig` names (`use_peft`, `lora_r`, `lora_alpha`, `lora_dropout`, `lora_target_modules`, "
    "`lora_modules_to_save`, `lora_task_type`, `use_rslora`) with its defaults, except `lora_dropout`: 0, not 0.05 "
    "(every other pass runs without dropout). `use_dora`, `lora_target_parameters` and quantized bases "
    "(`load_in_4bit`, ...) are not supported (refused as unknown keys).",
)


def section(r1zero_defaults: dict[str, object]) -> list[str]:
    """The Markdown lines of the docs/CONFIG.md section."""
    lines = ["", "## Defaults that differ from TRL's GRPOConfig", "",
             "Keys that TRL 1.16's `GRPOConfig` also has, with another default:", "",
             "| key | r1zero | TRL | why |", "| --- | --- | --- | --- |"]
    for key, (trl, why) in DIFFERENT_DEFAULTS.items():
        lines.append(f"| `{key}` | `{r1zero_defaults[key]!r}` | `{trl!r}` | {why} |")
    lines += ["", *(f"- {text}" for text in OTHER_DIFFERENCES)]
    return lines
