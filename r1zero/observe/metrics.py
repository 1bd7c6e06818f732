"""The metric vocabulary (TRL's names where TRL has one), defined once: the trainer writes these keys
and the report reads them; no other module of r1zero writes a metric name (tests/test_metric_names.py).
Statistics cross from the algorithms as typed objects (r1zero.algorithms.stats) and get their names
here: ``step_metrics`` (one training step's sample metrics) and ``loss_metrics`` (a micro-batch's loss)."""
from __future__ import annotations

from typing import Any

import torch

REWARD = "reward"
REWARD_STD = "reward_std"
REWARD_PART = "reward/"            # + reward function name
REWARD_ERRORS = "reward_errors/"   # + scorer name
ACCURACY = "accuracy"
FORMAT_RATE = "format_rate"
OUTCOME_BAD_FORMAT = "outcome/bad_format"
OUTCOME_WRONG = "outcome/wrong"
OUTCOME_CORRECT = "outcome/correct"
MEAN_LENGTH = "completions/mean_length"
MAX_LENGTH = "completions/max_length"
MIN_LENGTH = "completions/min_length"
P90_LENGTH = "completions/p90_length"
CLIPPED_RATIO = "completions/clipped_ratio"
ZERO_STD = "frac_reward_zero_std"
LOSS = "loss"
KL = "kl"
ENTROPY = "entropy"
CLIP_RATIO = "clip_ratio"          # prefix of clip_ratio/low_mean, /high_mean, /region_mean
GRAD_NORM = "grad_norm"
LEARNING_RATE = "learning_rate"
EPOCH = "epoch"
TOKENS_PER_SECOND = "tokens_per_second"
TIME_STEP, TIME_GENERATE, TIME_UPDATE = "time/step", "time/generate", "time/update"
SKIPPED_UPDATES = "skipped_updates"  # r1zero.training.guards
ENTROPY_COEF = "entropy_coef"      # use_adaptive_entropy's coefficient for the next update (TRL's name)
# The policy loss's statistics (r1zero.algorithms.stats.LossStats, named by loss_metrics): the
# clipped surrogate's token shares clipped below / above / either, its importance-weight mean,
# cispo's capped share, vespo's sequence weight, the sampler-mismatch correction's weight mean and
# its share outside the bounds (truncate: clipped, mask: masked), the off-policy mask's dropped
# share and the entropy mask's kept share.
CLIP_LOW, CLIP_HIGH, CLIP_REGION = f"{CLIP_RATIO}/low_mean", f"{CLIP_RATIO}/high_mean", f"{CLIP_RATIO}/region_mean"
RATIO_MEAN = "ratio_mean"
CISPO_CLIP_RATIO = "cispo_clip_ratio"
VESPO_PHI = "vespo/phi_seq_mean"
SAMPLER_RATIO_MEAN = "sampling/importance_sampling_ratio/mean"
SAMPLER_CLIPPED = "sampling/importance_sampling_clipped_share"
SAMPLER_MASKED = "sampling/importance_sampling_masked_share"
OFF_POLICY_MASKED = "off_policy_masked_share"
ENTROPY_KEPT = "entropy_kept_share"
# The reward-KL family (r1zero.algorithms.reward_kl) and PPO's critic (r1zero.algorithms.ppo).
KL_COEF, KL_PENALTY = "kl_coef", "kl_penalty"
ADVANTAGES_MEAN, ADVANTAGES_STD = "advantages/mean", "advantages/std"
RETURNS_MEAN, RETURNS_STD = "returns/mean", "returns/std"
CRITIC_VALUES_MEAN, CRITIC_EXPLAINED_VARIANCE = "critic/values_mean", "critic/explained_variance"
CRITIC_VALUE_LOSS, CRITIC_VALUE_CLIP_FRAC = "critic/value_loss", "critic/value_clip_frac"
CRITIC_LEARNING_RATE, CRITIC_GRAD_NORM = "critic/learning_rate", "critic/grad_norm"
# Mean |log-prob of the sampler - log-prob of the trainer| over completion tokens (TRL's name): how
# far off-policy the samples are (bf16 sampling weights against the fp32 policy under autocast).
SAMPLING_LOGP_DIFF = "sampling/sampling_logp_difference/mean"
EVAL_PREFIX = "eval/"
# Dynamic sampling (r1zero.training.sampling_rounds): rounds of prompts drawn in the step, groups
# dropped for equal rewards, groups short of prompts_per_step, groups with a spread left untrained.
DS_ROUNDS, DS_DROPPED = "dynamic_sampling/rounds", "dynamic_sampling/dropped_groups"
DS_SHORTFALL, DS_SURPLUS = "dynamic_sampling/shortfall", "dynamic_sampling/surplus_groups"

# An evaluation's summary (r1zero.observe.evaluate, logged under EVAL_PREFIX): rows, ACCURACY and
# FORMAT_RATE (the training names), mean reward, mean length, share truncated, and with k samples
# per prompt mean@k and pass@k (prefixes: + k).
EVAL_ROWS, EVAL_MEAN_REWARD, EVAL_MEAN_LENGTH, EVAL_TRUNCATED = "n", "mean_reward", "mean_length", "truncated_rate"
EVAL_MEAN_AT, EVAL_PASS_AT = "mean@", "pass@"
# The same evaluation asked again with the thinking taken away (r1zero.tasks.Task.no_think_prefill:
# the think part closed empty, the answer opened), for tasks whose template has a think part:
# "does the thinking matter?" is ACCURACY minus ACCURACY_NO_THINK.
ACCURACY_NO_THINK, FORMAT_RATE_NO_THINK = "accuracy_no_think", "format_rate_no_think"
# The think part's length in tokens over a step's completions (r1zero.tasks.Task.think_text), for
# tasks whose template has one.
THINK_MEAN_LENGTH, THINK_P90_LENGTH = "think/mean_length", "think/p90_length"

# Every name above, for the test that no other module writes one (a prefix counts as a name).
NAMES = frozenset(v for k, v in dict(globals()).items() if k.isupper() and isinstance(v, str))

# LossStats field -> metric name, in the order the loss reports them.
_LOSS_NAMES = (("clip_low", CLIP_LOW), ("clip_high", CLIP_HIGH), ("clip_region", CLIP_REGION),
               ("ratio_mean", RATIO_MEAN), ("cispo_clip_ratio", CISPO_CLIP_RATIO), ("vespo_phi", VESPO_PHI),
               ("sampler_clipped", SAMPLER_CLIPPED), ("sampler_masked", SAMPLER_MASKED),
               ("sampler_ratio_mean", SAMPLER_RATIO_MEAN), ("off_policy_masked", OFF_POLICY_MASKED),
               ("entropy_kept", ENTROPY_KEPT), ("kl", KL))

OUTCOMES = ((OUTCOME_BAD_FORMAT, "badly formatted", "#d62728"),
            (OUTCOME_WRONG, "formatted but wrong", "#ff7f0e"),
            (OUTCOME_CORRECT, "correct", "#2ca02c"))
LENGTH_KEYS = (MEAN_LENGTH, P90_LENGTH, MAX_LENGTH)
THINK_KEYS = (THINK_MEAN_LENGTH, THINK_P90_LENGTH)


def loss_metrics(stats) -> dict[str, Any]:
    """A micro-batch's r1zero.algorithms.stats.LossStats by metric name: the statistics it has (the
    others are None: their part of the loss is off), as they are (0-d tensors on the device)."""
    return {name: value for field, name in _LOSS_NAMES if (value := getattr(stats, field)) is not None}


def step_metrics(scores, lengths: torch.Tensor, truncated: torch.Tensor, group) -> dict[str, Any]:
    """Reward, verdict, outcome and length metrics of one step's completions (every process's).

    ``scores`` is the step's r1zero.rewards.scoring.BatchScores, ``group`` the
    r1zero.algorithms.stats.GroupStats of its reward groups (r1zero.algorithms.grpo.group_stats)."""
    n = len(scores.rewards)
    lengths = lengths.float()
    correct = torch.tensor(scores.correct, dtype=torch.float32)
    formatted = torch.tensor(scores.formatted, dtype=torch.float32)
    m: dict[str, Any] = {
        REWARD: group.reward_mean, REWARD_STD: group.reward_std,
        **{f"{REWARD_PART}{k}": sum(v) / n for k, v in scores.parts.items()},
        ACCURACY: float(correct.mean()), FORMAT_RATE: float(formatted.mean()),
        # The three outcomes users plot on Countdown; they sum to 1.
        OUTCOME_BAD_FORMAT: float(((1 - formatted) * (1 - correct)).mean()),
        OUTCOME_WRONG: float((formatted * (1 - correct)).mean()),
        OUTCOME_CORRECT: float(correct.mean()),
        MEAN_LENGTH: float(lengths.mean()), MAX_LENGTH: float(lengths.max()), MIN_LENGTH: float(lengths.min()),
        P90_LENGTH: float(torch.quantile(lengths, 0.9)),
        CLIPPED_RATIO: float(truncated.float().mean()),
        ZERO_STD: group.frac_reward_zero_std,
    }
    for name, count in scores.errors.items():
        m[f"{REWARD_ERRORS}{name}"] = count
    return m


def think_metrics(task, tokenizer, completions: list[str]) -> dict[str, float]:
    """The think part's length in tokens over a step's completions (every process's: the trainer passes
    the gathered texts), {} for a task whose template has no think part.

    The count is of ``task.think_text`` (a part never closed runs to the end of the completion)
    tokenized again with the run's tokenizer, no special tokens: the sampled token ids are only this
    process's and do not say where a think part ends, while the texts are every process's already and
    think_text is the one definition of the part. A re-tokenization can split a tag's neighbourhood
    differently from what was sampled (a token at the boundary); at the scale of a think part that is
    noise, and it costs one batched call of a fast tokenizer per step."""
    if task.think_style() is None or not completions:
        return {}
    texts = [task.think_text(c) or "" for c in completions]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    lengths = torch.tensor([len(i) for i in ids], dtype=torch.float32)
    return {THINK_MEAN_LENGTH: float(lengths.mean()), THINK_P90_LENGTH: float(torch.quantile(lengths, 0.9))}


def collapse_message(rows: list[dict[str, Any]]) -> str:
    """One line for a stretch of training steps (their metric rows) in which every group had equal
    rewards, naming the likely cause from what the rewards were."""
    reward = sum(r.get(REWARD, 0.0) for r in rows) / len(rows)
    accuracy = sum(r.get(ACCURACY, 0.0) for r in rows) / len(rows)
    steps = f"at steps {rows[0]['step']}-{rows[-1]['step']} ({len(rows)} steps in a row)"
    if accuracy == 1.0:
        # Not a failure: the model solves everything it is shown, so the rewards have no spread.
        return (f"task solved: every completion was correct {steps}, so there is no learning signal left; "
                "make the task harder (task_args) or stop here")
    if reward == 0.0:
        cause = ("every completion scored 0: the task is too hard for the model or its answer format is never "
                 "produced; try an easier task, another template, more num_generations or max_completion_length")
    else:
        cause = (f"every completion of a prompt scored the same (mean reward {reward:.3f}): the completions "
                 "collapsed onto one answer, often the prompt's own example; raise num_generations or temperature, "
                 "lower learning_rate, or change the template")
    return f"reward collapse: every group had equal rewards {steps}, so there was no learning signal; likely cause: {cause}"


def collapses(rows: list[dict[str, Any]], steps: int) -> list[str]:
    """A collapse_message for each stretch of at least ``steps`` consecutive training rows (with a
    ``step``) whose groups all had equal rewards (``frac_reward_zero_std`` 1)."""
    out, stretch = [], []
    for r in [*rows, None]:
        if r is not None and r.get(ZERO_STD) == 1.0:
            stretch.append(r)
            continue
        if steps and len(stretch) >= steps:
            out.append(collapse_message(stretch))
        stretch = []
    return out


class CollapseWatch:
    """Says a collapse once, on the step its stretch reaches ``steps`` steps (0: never)."""

    def __init__(self, steps: int):
        self.steps = steps
        self.stretch: list[dict[str, Any]] = []

    def add(self, step: int, metrics: dict[str, Any]) -> str | None:
        if metrics.get(ZERO_STD) != 1.0:
            self.stretch = []
            return None
        self.stretch.append({"step": step, **metrics})
        return collapse_message(self.stretch) if self.steps and len(self.stretch) == self.steps else None
