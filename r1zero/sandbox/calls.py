"""One call of a user's reward function, in either of its two forms, with every failure turned into a
counted ``(None, why)``; the same code runs in the reward worker process and in the trainer.

- r1zero's form, per sample: ``fn(completion=..., prompt=..., **example_fields)`` returns one number
  (``prompt`` is the rendered prompt text; None is a failure, as any other non-number).
- TRL's form, per batch (a function naming ``completions``): called once with lists, exactly as
  TRL's GRPOTrainer calls it (``_calculate_rewards``): ``prompts``, ``completions``,
  ``completion_ids`` (the sampled token ids, EOS included) and every dataset column but ``prompt``
  as keyword lists, plus ``trainer_state``. When the prompt is a conversation, ``prompts`` are the
  message lists and each completion is ``[{"role": "assistant", "content": text}]``; otherwise both
  are text. It returns one value per completion: a number, or None for "not applicable to this
  sample" (0 in the total, not a failure, as TRL's NaN-sum makes it). A raise, a wrong length or any
  other value fails the whole call: each of its samples scores 0 and is counted.

Both forms also get ``completion_length`` / ``truncated`` (one value, or lists in TRL's form) when
they name them as parameters. Either form may be ``async`` (as TRL allows): its result is awaited
(in a fresh event loop: these calls run in a worker process or on a helper thread, never in a
thread whose loop is running).
"""
from __future__ import annotations

import asyncio
import inspect
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from r1zero.sandbox.functions import rollout_args

# The value of a sample a TRL-form function called not applicable (it returned None): scores 0,
# is no failure. Every other ``(None, why)`` is a failure.
NOT_APPLICABLE: tuple[None, None] = (None, None)


@dataclass(frozen=True)
class TrainerState:
    """What TRL passes as ``trainer_state`` that r1zero has, under TRL's (transformers') field names:
    optimizer steps done before this step's samples were scored, and the run's total. None in evaluation."""

    global_step: int
    max_steps: int


@dataclass
class RewardBatch:
    """Everything a reward function may be given about N completions (sent to a worker in one message)."""

    completions: list[str]                          # text, special tokens dropped
    examples: list[dict]                            # the dataset rows
    prompts: list[str | None]                       # the rendered prompt text the model saw
    rollouts: list[dict | None]                     # completion_length and truncated, or None
    conversations: list[list[dict] | None] | None = None  # the prompt as messages when it is a conversation
    completion_ids: list[list[int]] | None = None   # the sampled token ids, EOS included (TRL's)
    trainer_state: TrainerState | None = None

    def __len__(self) -> int:
        return len(self.completions)

    def tail(self, start: int) -> "RewardBatch":
        """The samples from ``start`` on (a fresh worker takes them after one was killed)."""
        def cut(v):
            return None if v is None else v[start:]

        return RewardBatch(self.completions[start:], self.examples[start:], self.prompts[start:],
                           self.rollouts[start:], cut(self.conversations), cut(self.completion_ids),
                           self.trainer_state)


def call(fn: Callable[..., Any], /, **kwargs: Any) -> Any:
    """``fn(**kwargs)``, awaited when it is a coroutine function's."""
    raw = fn(**kwargs)
    if inspect.isawaitable(raw):
        async def wait():
            return await raw

        raw = asyncio.run(wait())
    return raw


def _reason(e: Exception) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200]


def as_number(raw: Any) -> tuple[float | None, str | None]:
    """(value, None) when ``raw`` is one finite number, else (None, why)."""
    if raw is None:
        return None, "returned None"
    if isinstance(raw, (list, tuple, dict, str, bytes)):
        return None, f"returned a {type(raw).__name__}, not one number"
    try:
        value = float(raw)
    except Exception:
        return None, f"returned {type(raw).__name__}, not a number"
    if not math.isfinite(value):
        return None, f"returned {value}"
    return value, None


def score_one(fn: Callable[..., Any], completion: str, example: Mapping[str, Any],
              prompt: str | None, rollout: Mapping[str, Any] | None = None,
              wants: tuple[str, ...] | None = None) -> tuple[float | None, str | None]:
    """(value, None) or (None, why): one call of a per-sample reward.

    ``rollout`` holds the completion's ``completion_length`` and ``truncated``; the function gets
    those it names as parameters (``wants``: r1zero.sandbox.functions.rollout_args(fn), computed
    here when not given). A failure is an exception, or a return value that is not one finite
    number (None, NaN, inf, a list or tuple of values, a string...).
    """
    try:
        wants = rollout_args(fn) if wants is None else wants
        kwargs = {k: v for k, v in example.items() if k not in ("completion", "prompt")}
        if rollout is not None:  # over an example field of the same name
            kwargs.update({k: rollout[k] for k in wants if k in rollout})
        raw = call(fn, completion=completion, prompt=prompt, **kwargs)
    except Exception as e:  # the user's code: anything can come out
        return None, _reason(e)
    return as_number(raw)


def score_sample(fn: Callable[..., Any], batch: RewardBatch, i: int,
                 wants: tuple[str, ...] | None = None) -> tuple[float | None, str | None]:
    """score_one for sample ``i`` of ``batch``."""
    return score_one(fn, batch.completions[i], batch.examples[i], batch.prompts[i], batch.rollouts[i], wants)


def trl_arguments(batch: RewardBatch, wants: tuple[str, ...] = ()) -> dict[str, Any]:
    """The keyword arguments TRL's GRPOTrainer gives a reward function, for ``batch``."""
    n = len(batch)
    conversations = batch.conversations or [None] * n
    prompts = [c if c is not None else p for c, p in zip(conversations, batch.prompts)]
    completions = [[{"role": "assistant", "content": t}] if c is not None else t
                   for c, t in zip(conversations, batch.completions)]
    # TRL: every column of the first row but these three, one list each (here .get: rows may differ).
    columns = [k for k in (batch.examples[0] if n else {}) if k not in ("prompt", "completion", "completion_ids")]
    kwargs: dict[str, Any] = {k: [ex.get(k) for ex in batch.examples] for k in columns}
    for k in wants:  # asked for by name, over a column of the same name (as score_one does)
        kwargs[k] = [None if r is None else r.get(k) for r in batch.rollouts]
    kwargs["trainer_state"] = batch.trainer_state
    return dict(prompts=prompts, completions=completions, completion_ids=batch.completion_ids, **kwargs)


def score_batch(fn: Callable[..., Any], batch: RewardBatch,
                wants: tuple[str, ...] | None = None) -> list[tuple[float | None, str | None]]:
    """One call of a TRL-form reward for the whole batch: per sample (value, None), NOT_APPLICABLE for
    None, or, when the call fails in any way, (None, why) for every sample."""
    n = len(batch)
    try:
        raw = call(fn, **trl_arguments(batch, rollout_args(fn) if wants is None else wants))
    except Exception as e:  # the user's code: anything can come out
        return [(None, _reason(e))] * n
    if isinstance(raw, (str, bytes, dict)) or not hasattr(raw, "__len__"):
        return [(None, f"returned {type(raw).__name__}, not a list of {n} numbers")] * n
    values = list(raw)
    if len(values) != n:
        return [(None, f"returned {len(values)} values for {n} completions")] * n
    out = []
    for i, v in enumerate(values):
        if v is None:
            out.append(NOT_APPLICABLE)
            continue
        value, why = as_number(v)
        if why is not None:
            return [(None, f"value {i} of {n}: {why}")] * n
        out.append((value, None))
    return out
