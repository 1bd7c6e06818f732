"""The metric vocabulary (TRL's names where TRL has one), defined once: the trainer writes these keys
and the report reads them. ``step_metrics`` computes one training step's sample metrics."""
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
# Mean |log-prob of the sampler - log-prob of the trainer| over completion tokens (TRL's name): how
# far off-policy the samples are (bf16 sampling weights against the fp32 policy under autocast).
SAMPLING_LOGP_DIFF = "sampling/sampling_logp_difference/mean"
EVAL_PREFIX = "eval/"
# Dynamic sampling (r1zero.training.sampling_rounds): rounds of prompts drawn in the step, groups
# dropped for equal rewards, groups short of prompts_per_step, groups with a spread left untrained.
DS_ROUNDS, DS_DROPPED = "dynamic_sampling/rounds", "dynamic_sampling/dropped_groups"
DS_SHORTFALL, DS_SURPLUS = "dynamic_sampling/shortfall", "dynamic_sampling/surplus_groups"

OUTCOMES = ((OUTCOME_BAD_FORMAT, "badly formatted", "#d62728"),
            (OUTCOME_WRONG, "formatted but wrong", "#ff7f0e"),
            (OUTCOME_CORRECT, "correct", "#2ca02c"))
LENGTH_KEYS = (MEAN_LENGTH, P90_LENGTH, MAX_LENGTH)


def step_metrics(scores, lengths: torch.Tensor, truncated: torch.Tensor, group: dict[str, float]) -> dict[str, Any]:
    """Reward, verdict, outcome and length metrics of one step's completions (every process's).

    ``scores`` is the step's r1zero.rewards.scoring.BatchScores, ``group`` what
    r1zero.algorithms.grpo.group_stats says of its reward groups."""
    n = len(scores.rewards)
    lengths = lengths.float()
    correct = torch.tensor(scores.correct, dtype=torch.float32)
    formatted = torch.tensor(scores.formatted, dtype=torch.float32)
    m: dict[str, Any] = {
        REWARD: group["reward_mean"], REWARD_STD: group["reward_std"],
        **{f"{REWARD_PART}{k}": sum(v) / n for k, v in scores.parts.items()},
        ACCURACY: float(correct.mean()), FORMAT_RATE: float(formatted.mean()),
        # The three outcomes users plot on Countdown; they sum to 1.
        OUTCOME_BAD_FORMAT: float(((1 - formatted) * (1 - correct)).mean()),
        OUTCOME_WRONG: float((formatted * (1 - correct)).mean()),
        OUTCOME_CORRECT: float(correct.mean()),
        MEAN_LENGTH: float(lengths.mean()), MAX_LENGTH: float(lengths.max()), MIN_LENGTH: float(lengths.min()),
        P90_LENGTH: float(torch.quantile(lengths, 0.9)),
        CLIPPED_RATIO: float(truncated.float().mean()),
        ZERO_STD: group["frac_reward_zero_std"],
    }
    for name, count in scores.errors.items():
        m[f"{REWARD_ERRORS}{name}"] = count
    return m


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
