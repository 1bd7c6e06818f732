"""Scoring a batch of completions: the task's reward scheme plus the user's own reward functions.

A user's reward is a plain callable named ``module:function`` (or ``path/to/file.py:function``),
called once per completion as ``fn(completion=..., prompt=..., **example_fields)`` and returning a
float, like TRL's reward functions but one sample at a time. A reward that raises, returns None,
NaN or something that is not a number scores 0 for that sample and is counted in
``reward_errors/<name>``; the run goes on. Each call has a time limit (``reward_timeout``): the
function runs in a worker process that is killed when a call overruns (r1zero.rewards.worker).
A function that names ``completion_length`` or ``truncated`` among its parameters also gets the
completion's token count (EOS included) and whether it hit the length limit.

``overlong=(max_completion_length, buffer_len, factor)`` adds DAPO's soft overlong punishment
(r1zero.rewards.functions.overlong_penalty) as the reward part ``overlong``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from r1zero.rewards.functions import (RewardError, load_reward_func, overlong_penalty,  # noqa: F401  (RewardError: public here)
                                      reward_name, rollout_args)
from r1zero.rewards.worker import RewardWorker, score_one
from r1zero.tasks import Score, Task


@dataclass
class BatchScores:
    """Rewards of N completions, with the parts and verdicts the metrics need."""

    rewards: list[float]
    correct: list[bool]
    formatted: list[bool]
    parts: dict[str, list[float]]
    errors: dict[str, int] = field(default_factory=dict)
    # One example of why each failing scorer failed (for the message when a run stops on it).
    error_reasons: dict[str, str] = field(default_factory=dict)


def _usable(score: Any) -> bool:
    """A Score with a finite reward (None: the task could not judge that sample)."""
    try:
        return isinstance(score, Score) and math.isfinite(score.reward)
    except TypeError:
        return False


class RewardModel:
    """The task's scheme (unless ``reward == 'none'``) plus weighted user functions.

    With ``timeout > 0`` each user function runs in its own worker process (r1zero.rewards.worker)
    and gets at most ``timeout`` seconds per completion; with 0 it is called in-process, unbounded.
    """

    def __init__(self, task: Task | None, funcs: Sequence[str] = (), weights: Sequence[float] | None = None,
                 timeout: float = 0.0, overlong: tuple[int, int, float] | None = None):
        self.task = task
        self.overlong = overlong if overlong is not None and overlong[1] > 0 else None
        # Loaded here too, so a bad spec is refused before any model is loaded.
        self.funcs = [(reward_name(s), load_reward_func(s)) for s in funcs]
        self.weights = list(weights) if weights is not None else [1.0] * len(self.funcs)
        self.workers = [RewardWorker(s, timeout) for s in funcs] if timeout > 0 else None

    def close(self) -> None:
        for w in self.workers or ():
            w.close()

    def _user_values(self, j: int, completions, examples, prompts, rollouts) -> list[tuple[float | None, str | None]]:
        prompts = list(prompts) if prompts else [None] * len(completions)
        if self.workers is not None:
            return self.workers[j](completions, examples, prompts, rollouts)
        fn = self.funcs[j][1]
        wants = rollout_args(fn)
        return [score_one(fn, c, e, p, r, wants) for c, e, p, r in zip(completions, examples, prompts, rollouts)]

    def _task_score(self, completion: str, example: Mapping[str, Any]) -> tuple[Score, bool]:
        try:
            s = self.task.score(completion, example)
            if not math.isfinite(s.reward):
                raise ValueError("non-finite reward")
            return s, False
        except Exception:
            return Score(0.0, False, False, {}), True

    def _task_scores(self, completions, examples) -> list[tuple[Score, bool]]:
        """(score, failed) per completion from one ``score_batch`` call (a task's worker round trip);
        a sample it could not judge (None) or a non-finite one failed; a call that raises is retried
        one sample at a time, so one bad sample fails alone."""
        try:
            scores = list(self.task.score_batch(completions, examples))
            if len(scores) != len(completions):
                raise ValueError("score_batch returned the wrong number of scores")
        except Exception:
            return [self._task_score(c, e) for c, e in zip(completions, examples)]
        return [(s, False) if _usable(s) else (Score(0.0, False, False, {}), True) for s in scores]

    def __call__(self, completions: Sequence[str], examples: Sequence[Mapping[str, Any]],
                 prompts: Sequence[str] | None = None, lengths: Sequence[int] | None = None,
                 truncated: Sequence[bool] | None = None) -> BatchScores:
        """Scores of N completions; ``lengths`` (tokens, EOS included) and ``truncated`` come from the
        rollout and are needed by the overlong punishment and the functions that ask for them."""
        n = len(completions)
        out = BatchScores([0.0] * n, [False] * n, [False] * n, {}, {})
        if lengths is None:
            if self.overlong is not None:
                raise ValueError("the overlong punishment needs the completions' lengths")
            rollouts = [None] * n
        else:
            cut = list(truncated) if truncated is not None else [False] * n
            rollouts = [{"completion_length": int(L), "truncated": bool(t)} for L, t in zip(lengths, cut)]
        user = [self._user_values(j, completions, examples, prompts, rollouts) for j in range(len(self.funcs))]
        task_scores = self._task_scores(completions, examples) if self.task is not None else None
        for i in range(n):
            total = 0.0
            if task_scores is not None:
                s, failed = task_scores[i]
                if failed:
                    out.errors[self.task.name] = out.errors.get(self.task.name, 0) + 1
                total += s.reward
                out.correct[i], out.formatted[i] = bool(s.correct), bool(s.formatted)
                for k, v in s.parts.items():
                    out.parts.setdefault(k, [0.0] * n)[i] = float(v)
            for j, ((name, fn), w) in enumerate(zip(self.funcs, self.weights)):
                value, why = user[j][i]
                if value is None:
                    out.errors[name] = out.errors.get(name, 0) + 1
                    out.error_reasons.setdefault(name, why or "failed")
                    value = 0.0
                out.parts.setdefault(name, [0.0] * n)[i] = value
                total += w * value
            if self.overlong is not None:
                value = overlong_penalty(rollouts[i]["completion_length"], *self.overlong)
                out.parts.setdefault("overlong", [0.0] * n)[i] = value
                total += value
            out.rewards[i] = total
        return out
