"""Users' reward functions, named ``module:function`` or ``path/to/file.py:function``, loaded by name
(in the trainer, to refuse a bad name before any model loads, and in each reward worker process);
which of the two forms a function has (r1zero's per sample, TRL's per batch); what of the rollout
it may ask for by name."""
from __future__ import annotations

import inspect
from typing import Any, Callable

from r1zero.user_code import load_object


class RewardError(ValueError):
    """A reward function that cannot be found; one line naming it and the fix."""


def load_reward_func(spec: str) -> Callable[..., Any]:
    """``mypkg.rewards:my_fn`` or ``path/to/file.py:my_fn`` -> the function."""
    fn = load_object(spec, "reward_funcs", "function", RewardError)
    if not callable(fn):
        target, _, name = spec.rpartition(":")
        raise RewardError(f"reward_funcs: '{target}' has no function '{name}'; check '{spec}'")
    return fn


def is_batched(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` has TRL's form: a parameter named ``completions`` (called once per batch with
    lists); otherwise it has r1zero's per-sample form (``completion``, called once per completion)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a builtin without a signature
        return False
    return "completions" in params and params["completions"].kind is not inspect.Parameter.VAR_KEYWORD


def reward_name(spec: str) -> str:
    return spec.rpartition(":")[2]


# Facts of the rollout a reward function receives when it names them as parameters: the
# completion's token count (EOS included, the length max_completion_length bounds) and whether it
# hit max_completion_length without an EOS. They take precedence over example fields of the same name.
ROLLOUT_ARGS = ("completion_length", "truncated")


def rollout_args(fn: Callable[..., Any]) -> tuple[str, ...]:
    """The ROLLOUT_ARGS that ``fn`` names as parameters (a ``**kwargs`` catch-all does not ask)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a builtin without a signature
        return ()
    return tuple(a for a in ROLLOUT_ARGS if a in params and params[a].kind is not inspect.Parameter.VAR_KEYWORD)
