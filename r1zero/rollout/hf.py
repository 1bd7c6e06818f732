"""What differs between the supported transformers versions (pyproject: 5.17 up to 5.x).

5.24 renamed the models' ``past_key_values`` argument to ``cache`` (the old name warns and is to be
removed in 5.40); 5.17 knows only ``past_key_values`` and would silently drop ``cache`` into its
``**kwargs``. The name is read from the module's own signature, so remote-code models that keep the
old name work too.
"""
from __future__ import annotations

import inspect

_NAMES: dict[type, str] = {}


def cache_kwarg(module) -> str:
    """The keyword ``module``'s forward takes its KV cache under: "cache" or "past_key_values"."""
    cls = type(module)
    name = _NAMES.get(cls)
    if name is None:
        params = inspect.signature(cls.forward).parameters
        name = "cache" if "cache" in params else "past_key_values"
        _NAMES[cls] = name
    return name
