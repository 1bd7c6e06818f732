"""Users' reward functions, named ``module:function`` or ``path/to/file.py:function``, loaded by name
(in the trainer, to refuse a bad name before any model loads, and in each reward worker process);
what of the rollout they may ask for by name; and DAPO's overlong punishment."""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any, Callable


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


def overlong_penalty(length: int, max_completion_length: int, buffer_len: int, factor: float = 1.0) -> float:
    """DAPO's soft overlong punishment (Eq. 13; TRL's get_soft_overlong_punishment, veRL's overlong_buffer),
    with L = ``max_completion_length`` and the buffer B = ``buffer_len``: 0 up to L - B tokens, then
    ``factor * ((L - B) - length) / B`` (falling linearly to ``-factor`` at L), ``-factor`` beyond L.
    """
    start = max_completion_length - buffer_len
    if buffer_len <= 0 or length <= start:
        return 0.0
    if length <= max_completion_length:
        return factor * (start - length) / buffer_len
    return -factor
