"""Reward callables that cannot run in a worker process, called in the training process under the
same time limit.

A worker (r1zero.sandbox.worker) loads its function by name, so it takes only what can be imported
by name in a fresh process, which is also what pickle can send: a module-level function of an
importable module (``trl.rewards.think_format_reward``, ``mypkg.rewards.accuracy``). A callable
given as an object that is not (defined in a script's ``__main__``, a lambda, a closure, a bound
method) is called here instead, on a helper thread, with the limit the worker would have: each
completion of a per-sample function gets ``timeout`` seconds, a TRL-form call ``timeout`` x its
completions. A call that overruns, raises or returns what is not a number fails its samples, which
score 0 and are counted, as in a worker. Unlike a worker, an overrunning call cannot be killed (a
thread cannot be): it is left to finish on its own thread, whose answers are then ignored, and a
fresh thread takes the samples after it. ``timeout`` 0 waits without limit.
"""
from __future__ import annotations

import queue
import threading
from typing import Any, Callable

from r1zero.sandbox.calls import RewardBatch, score_batch, score_sample
from r1zero.sandbox.functions import is_batched, rollout_args


class InProcessReward:
    """One reward callable, called on a helper thread per batch, under ``timeout`` (0: no limit)."""

    def __init__(self, fn: Callable[..., Any], timeout: float):
        self.fn = fn
        self.timeout = float(timeout)
        self.batched = is_batched(fn)
        self.wants = rollout_args(fn)

    def start(self) -> None:
        """Nothing to start: the callable is loaded already (a RewardWorker's counterpart)."""

    def close(self) -> None:
        """Nothing to stop (a RewardWorker's counterpart)."""

    def _run(self, batch: RewardBatch, answers: queue.Queue) -> None:
        if self.batched:
            answers.put(score_batch(self.fn, batch, self.wants))
            return
        for i in range(len(batch)):
            answers.put(score_sample(self.fn, batch, i, self.wants))

    def _start(self, batch: RewardBatch) -> queue.Queue:
        answers: queue.Queue = queue.Queue()
        threading.Thread(target=self._run, args=(batch, answers), daemon=True, name="r1zero-reward").start()
        return answers

    def score(self, batch: RewardBatch) -> list[tuple[float | None, str | None]]:
        """(value or None, why) per completion, as RewardWorker.score answers."""
        n = len(batch)
        limit = self.timeout or None
        if self.batched:
            try:
                return self._start(batch).get(timeout=limit and limit * n)
            except queue.Empty:
                return [(None, f"timed out after {limit * n:g} s ({n} completions x {limit:g} s)")] * n
        out: list[tuple[float | None, str | None]] = []
        while len(out) < n:
            answers = self._start(batch.tail(len(out)) if out else batch)
            while len(out) < n:
                try:
                    out.append(answers.get(timeout=limit))
                except queue.Empty:  # this sample fails; a fresh thread takes the rest
                    out.append((None, f"timed out after {limit:g} s"))
                    break
        return out


__all__ = ["InProcessReward"]
