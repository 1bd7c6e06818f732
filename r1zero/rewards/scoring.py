"""Scoring a batch of completions: the task's reward scheme plus the user's own reward functions.

A user's reward is a callable named ``module:function`` (or ``path/to/file.py:function``) in one of
two forms (r1zero.sandbox.calls): r1zero's, called once per completion as
``fn(completion=..., prompt=..., **example_fields)`` and returning a float; or TRL's, a function
naming ``completions``, called once per batch with lists and returning a list (None: not
applicable to that sample). A reward that raises, or returns what is not a number (None, NaN...,
for a TRL-form function: anything but a list of numbers and Nones, one per completion) scores 0
for those samples and is counted in ``reward_errors/<name>``; the run goes on. Each call has a time
limit (``reward_timeout`` per completion): the function runs in a worker process that is killed
when a call overruns (r1zero.sandbox.worker). Its file is imported there, never in the trainer (an
import that hangs or exits would take the run with it), with a memory limit (``reward_memory_limit``)
and its output kept out of the trainer's. A function that names ``completion_length`` or
``truncated`` among its parameters also gets the completion's token count (EOS included) and
whether it hit the length limit.

``correct`` and ``formatted`` (accuracy, format rate, the outcome breakdown) are the task scheme's
verdicts; a run without a scheme (task ``custom``, or ``reward: none``) takes them from the reward
functions its ``Verdicts`` name.

``overlong=(max_completion_length, buffer_len, factor)`` adds DAPO's soft overlong punishment
(r1zero.rewards.overlong.overlong_penalty) as the reward part ``overlong``.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from r1zero.errors import ConfigError
from r1zero.rewards.in_process import InProcessReward
from r1zero.rewards.overlong import overlong_penalty
from r1zero.sandbox.calls import RewardBatch, TrainerState, score_batch, score_sample
from r1zero.sandbox.functions import (RewardError, is_batched, load_reward_func,  # noqa: F401  (RewardError: public here)
                                      reward_name, rollout_args)
from r1zero.sandbox.worker import RewardWorker
from r1zero.tasks import Score, Task

log = logging.getLogger("r1zero")

# The least time a worker gets to start Python and import a reward file (reward_timeout when larger):
# a fresh interpreter alone takes ~0.3 s, more on a busy machine.
MIN_LOAD_TIMEOUT_S = 5.0


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

    @classmethod
    def concat(cls, parts: Sequence["BatchScores"], rows: Sequence[tuple[int, int]]) -> "BatchScores":
        """The scores of ``rows`` ((part, row) pairs) of several batches as one, in that order; a reward
        part that a batch lacks counts 0 for its rows. Failure counts are not per row: ``add_errors``."""
        names = dict.fromkeys(k for p in parts for k in p.parts)

        def per_row(get):
            return [get(parts[r])[j] for r, j in rows]

        return cls(per_row(lambda p: p.rewards), per_row(lambda p: p.correct), per_row(lambda p: p.formatted),
                   {k: [parts[r].parts[k][j] if k in parts[r].parts else 0.0 for r, j in rows] for k in names})

    def add_errors(self, parts: Sequence["BatchScores"]) -> None:
        """Count ``parts``' scorer failures here too, keeping the first reason seen for each scorer."""
        for p in parts:
            for k, v in p.errors.items():
                self.errors[k] = self.errors.get(k, 0) + v
            for k, v in p.error_reasons.items():
                self.error_reasons.setdefault(k, v)


@dataclass(frozen=True)
class Verdicts:
    """For a run without a task scheme: a completion is correct when the reward function named
    ``correct`` gave it at least ``threshold``, formatted when ``formatted``'s gave it more than 0
    (every completion when ``formatted`` is None). A failed or not-applicable value is neither."""

    correct: str | None
    threshold: float = 1.0
    formatted: str | None = None


def _usable(score: Any) -> bool:
    """A Score with a finite reward (None: the task could not judge that sample)."""
    try:
        return isinstance(score, Score) and math.isfinite(score.reward)
    except TypeError:
        return False


class RewardScorer:
    """The task's scheme (when ``scheme``; default: unless the task's scheme is ``none``) plus weighted
    user functions, with ``verdicts`` for a run without a scheme.

    With ``timeout > 0`` each user function named by file or module runs in its own worker process
    (r1zero.sandbox.worker), started here, so a file that cannot be imported (raises, loops past
    max(``timeout``, MIN_LOAD_TIMEOUT_S) seconds, exits) is refused before any model loads; each
    completion gets at most ``timeout`` seconds, and the worker at most ``memory_limit`` bytes of data
    memory (None: no limit). ``callables`` maps a ``funcs`` entry to the object it names when the
    function was given as one (r1zero.trl) and cannot be imported by name in a worker: it is called
    in-process under the same time limit (r1zero.rewards.in_process). With 0 every function is called
    in-process, unbounded.
    ``task`` also turns rows into the conversations TRL-form functions see (Task.messages).
    """

    def __init__(self, task: Task | None, funcs: Sequence[str] = (), weights: Sequence[float] | None = None,
                 timeout: float = 0.0, overlong: tuple[int, int, float] | None = None, *,
                 scheme: bool | None = None, verdicts: Verdicts | None = None,
                 callables: Mapping[str, Callable[..., Any]] | None = None, memory_limit: int | None = None):
        self.task = task
        self.scheme = (task is not None and task.reward_scheme != "none") if scheme is None else scheme
        self.verdicts = verdicts
        self.overlong = overlong if overlong is not None and overlong[1] > 0 else None
        self.weights = list(weights) if weights is not None else [1.0] * len(funcs)
        callables = callables or {}
        if timeout <= 0:  # in-process, as asked: imported here (a bad spec is refused now)
            self.funcs = [(reward_name(s), callables[s] if s in callables else load_reward_func(s)) for s in funcs]
            self.workers: list[RewardWorker | InProcessReward | None] = [None] * len(funcs)
            return
        # Functions named by file or module live in their workers; objects are called here.
        self.funcs = [(reward_name(s), callables.get(s)) for s in funcs]
        self.workers = [InProcessReward(callables[s], timeout) if s in callables
                        else RewardWorker(s, timeout, load_timeout=max(timeout, MIN_LOAD_TIMEOUT_S),
                                          memory_limit=memory_limit) for s in funcs]
        try:
            for w in self.workers:  # each imports its file now: a bad one is refused before any model loads
                w.start()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for w in self.workers:
            if w is not None:
                w.close()

    def _user_values(self, j: int, batch: RewardBatch) -> list[tuple[float | None, str | None]]:
        if self.workers[j] is not None:
            return self.workers[j].score(batch)
        fn = self.funcs[j][1]
        wants = rollout_args(fn)
        if is_batched(fn):
            return score_batch(fn, batch, wants)
        return [score_sample(fn, batch, i, wants) for i in range(len(batch))]

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

    def _batch(self, completions, examples, prompts, lengths, truncated, completion_ids, trainer_state) -> RewardBatch:
        """What the user functions may be given (r1zero.sandbox.calls.RewardBatch)."""
        n = len(completions)
        if lengths is None:
            if self.overlong is not None:
                raise ValueError("the overlong punishment needs the completions' lengths")
            rollouts = [None] * n
        else:
            cut = list(truncated) if truncated is not None else [False] * n
            rollouts = [{"completion_length": int(L), "truncated": bool(t)} for L, t in zip(lengths, cut)]
        conversations = [self.task.messages(ex) for ex in examples] if self.task is not None and self.funcs else None
        return RewardBatch(list(completions), [dict(e) for e in examples],
                           list(prompts) if prompts else [None] * n, rollouts, conversations,
                           [list(map(int, ids)) for ids in completion_ids] if completion_ids is not None else None,
                           trainer_state)

    def __call__(self, completions: Sequence[str], examples: Sequence[Mapping[str, Any]],
                 prompts: Sequence[str] | None = None, lengths: Sequence[int] | None = None,
                 truncated: Sequence[bool] | None = None, completion_ids: Sequence[Sequence[int]] | None = None,
                 trainer_state: TrainerState | None = None) -> BatchScores:
        """Scores of N completions; ``lengths`` (tokens, EOS included) and ``truncated`` come from the
        rollout and are needed by the overlong punishment and the functions that ask for them;
        ``completion_ids`` and ``trainer_state`` are what TRL-form functions get besides."""
        n = len(completions)
        out = BatchScores([0.0] * n, [False] * n, [False] * n, {}, {})
        batch = self._batch(completions, examples, prompts, lengths, truncated, completion_ids, trainer_state)
        user = [self._user_values(j, batch) for j in range(len(self.funcs))]
        task_scores = self._task_scores(completions, examples) if self.scheme else None
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
            for j, ((name, _), w) in enumerate(zip(self.funcs, self.weights)):
                value, why = user[j][i]
                if value is None and why is not None:  # a failure; (None, None) is "not applicable"
                    out.errors[name] = out.errors.get(name, 0) + 1
                    out.error_reasons.setdefault(name, why)
                value = 0.0 if value is None else value
                out.parts.setdefault(name, [0.0] * n)[i] = value
                total += w * value
            if self.overlong is not None:
                value = overlong_penalty(batch.rollouts[i]["completion_length"], *self.overlong)
                out.parts.setdefault("overlong", [0.0] * n)[i] = value
                total += value
            out.rewards[i] = total
        if not self.scheme and self.verdicts is not None:
            self._judge(out, user)
        return out

    def _judge(self, out: BatchScores, user: list[list[tuple[float | None, str | None]]]) -> None:
        """correct / formatted from the functions the verdicts name (raw values, before weights)."""
        v, names = self.verdicts, [name for name, _ in self.funcs]
        correct = user[names.index(v.correct)] if v.correct is not None else None
        formatted = user[names.index(v.formatted)] if v.formatted is not None else None
        for i in range(len(out.rewards)):
            if correct is not None:
                value = correct[i][0]
                out.correct[i] = value is not None and value >= v.threshold
            value = formatted[i][0] if formatted is not None else None
            out.formatted[i] = formatted is None or (value is not None and value > 0)


def correct_function(cfg) -> str | None:
    """The reward function that says a completion is right: ``correct_reward``, else the one
    reward_funcs function named ``accuracy*`` or ``correct*`` (TRL's ``accuracy_reward``, the GSM8K
    course's ``correctness_reward_func``) when there is exactly one; else None."""
    if cfg.correct_reward is not None:
        return cfg.correct_reward
    named = [n for n in map(reward_name, cfg.reward_funcs) if n.lower().startswith(("accuracy", "correct"))]
    return named[0] if len(named) == 1 else None


def training_scorer(cfg, task: Task, callables: Mapping[str, Callable[..., Any]] | None = None) -> RewardScorer:
    """The RewardScorer a config (r1zero.config.TrainConfig) trains with: the task's scheme (unless
    ``reward: none`` or the task has none) plus ``reward_funcs`` and the overlong punishment."""
    scheme, verdicts = _judging(cfg, task)
    if verdicts is not None and verdicts.correct is None and cfg.reward_funcs:
        log.warning("correct_reward: not set and no reward function is named accuracy* or correct*: accuracy "
                    "and outcome/correct stay 0; set correct_reward to the function that says an answer is right")
    overlong = (cfg.max_completion_length, cfg.overlong_buffer_len, cfg.overlong_penalty_factor)
    return _scorer(cfg, task, cfg.reward_funcs, overlong, scheme, verdicts, callables)


def evaluation_scorer(cfg, task: Task, callables: Mapping[str, Callable[..., Any]] | None = None) -> RewardScorer:
    """The RewardScorer a config's run is evaluated with: what the task's scheme says, as it always has;
    a run without a scheme is evaluated with its ``reward_funcs`` (no overlong punishment: that is a
    training signal, not a verdict)."""
    scheme, verdicts = _judging(cfg, task)
    return _scorer(cfg, task, () if scheme else cfg.reward_funcs, None, scheme, verdicts, callables)


def _judging(cfg, task: Task) -> tuple[bool, Verdicts | None]:
    """(whether the task's scheme judges, the Verdicts of a run without one). correct_reward and
    format_reward beside a scheme are refused: the scheme gives the verdicts."""
    scheme = cfg.reward != "none" and task.reward_scheme != "none"
    if scheme and (cfg.correct_reward or cfg.format_reward):
        key = "correct_reward" if cfg.correct_reward else "format_reward"
        raise ConfigError(f"config: '{key}' is for a run without a reward scheme; task '{task.name}' judges with "
                          f"its scheme '{task.reward_scheme}': remove {key}, or set reward: none")
    if scheme:
        return True, None
    return False, Verdicts(correct_function(cfg), cfg.correct_threshold, cfg.format_reward)


def _scorer(cfg, task: Task, funcs, overlong, scheme: bool, verdicts: Verdicts | None, callables) -> RewardScorer:
    return RewardScorer(task, funcs, cfg.reward_weights if funcs else None, timeout=cfg.reward_timeout,
                       overlong=overlong, scheme=scheme, verdicts=verdicts, callables=callables,
                       memory_limit=int(cfg.reward_memory_limit * 2 ** 30))
