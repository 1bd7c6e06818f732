"""Scoring a batch of completions: the task's reward scheme plus the user's own reward functions.

A user's reward is a plain callable named ``module:function`` (or ``path/to/file.py:function``),
called once per completion as ``fn(completion=..., prompt=..., **example_fields)`` and returning a
float, like TRL's reward functions but one sample at a time. A reward that raises, returns None,
NaN or something that is not a number scores 0 for that sample and is counted in
``reward_errors/<name>``; the run goes on. Each call has a time limit (``reward_timeout``): the
function runs in a worker process that is killed when a call overruns (r1zero.reward_worker).
"""
from __future__ import annotations

import importlib
import importlib.util
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from r1zero.tasks import Score, Task


class RewardError(ValueError):
    """A reward function that cannot be found; one line naming it and the fix."""


def load_reward_func(spec: str) -> Callable[..., Any]:
    """``mypkg.rewards:my_fn`` or ``path/to/file.py:my_fn`` -> the function."""
    target, _, name = spec.rpartition(":")
    if not target or not name:
        raise RewardError(f"reward_funcs: '{spec}' must look like 'module:function' or 'file.py:function'")
    try:
        if target.endswith(".py"):
            path = Path(target).expanduser().resolve()
            if not path.is_file():
                raise RewardError(f"reward_funcs: no file {target}; check the path in '{spec}'")
            mod_name = f"r1zero_user_reward_{path.stem}"
            module_spec = importlib.util.spec_from_file_location(mod_name, path)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[mod_name] = module
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except RewardError:
        raise
    except Exception as e:
        raise RewardError(f"reward_funcs: cannot import '{target}' ({type(e).__name__}: {e}); check '{spec}'") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise RewardError(f"reward_funcs: '{target}' has no function '{name}'; check '{spec}'")
    return fn


def reward_name(spec: str) -> str:
    return spec.rpartition(":")[2]


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


class RewardModel:
    """The task's scheme (unless ``reward == 'none'``) plus weighted user functions.

    With ``timeout > 0`` each user function runs in its own worker process (r1zero.reward_worker)
    and gets at most ``timeout`` seconds per completion; with 0 it is called in-process, unbounded.
    """

    def __init__(self, task: Task | None, funcs: Sequence[str] = (), weights: Sequence[float] | None = None,
                 timeout: float = 0.0):
        from r1zero.reward_worker import RewardWorker

        self.task = task
        # Loaded here too, so a bad spec is refused before any model is loaded.
        self.funcs = [(reward_name(s), load_reward_func(s)) for s in funcs]
        self.weights = list(weights) if weights is not None else [1.0] * len(self.funcs)
        self.workers = [RewardWorker(s, timeout) for s in funcs] if timeout > 0 else None

    def close(self) -> None:
        for w in self.workers or ():
            w.close()

    def _user_values(self, j: int, completions, examples, prompts) -> list[tuple[float | None, str | None]]:
        from r1zero.reward_worker import score_one

        prompts = list(prompts) if prompts else [None] * len(completions)
        if self.workers is not None:
            return self.workers[j](completions, examples, prompts)
        fn = self.funcs[j][1]
        return [score_one(fn, c, e, p) for c, e, p in zip(completions, examples, prompts)]

    def _task_score(self, completion: str, example: Mapping[str, Any]) -> tuple[Score, bool]:
        try:
            s = self.task.score(completion, example)
            if not math.isfinite(s.reward):
                raise ValueError("non-finite reward")
            return s, False
        except Exception:
            return Score(0.0, False, False, {}), True

    def __call__(self, completions: Sequence[str], examples: Sequence[Mapping[str, Any]],
                 prompts: Sequence[str] | None = None) -> BatchScores:
        n = len(completions)
        out = BatchScores([0.0] * n, [False] * n, [False] * n, {}, {})
        user = [self._user_values(j, completions, examples, prompts) for j in range(len(self.funcs))]
        for i, (comp, ex) in enumerate(zip(completions, examples)):
            total = 0.0
            if self.task is not None:
                s, failed = self._task_score(comp, ex)
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
            out.rewards[i] = total
        return out
