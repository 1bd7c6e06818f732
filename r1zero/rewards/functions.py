"""Users' reward functions, named ``module:function`` or ``path/to/file.py:function``, loaded by name
(in the trainer, to refuse a bad name before any model loads, and in each reward worker process)."""
from __future__ import annotations

import importlib
import importlib.util
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
