"""The user's own Python that a config names: ``module:name`` (importable, e.g. ``mypkg.rewards:my_fn``)
or ``path/to/file.py:name``. Reward functions (r1zero.sandbox.functions) and task classes
(r1zero.tasks.base) are found the same way, so one rule and one set of messages covers both."""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any


def load_object(spec: str, key: str, what: str, error: type[Exception]) -> Any:
    """The object ``spec`` names; anything missing raises ``error`` with one line that starts with the
    config ``key`` and says which part to check (``what``: "function", "class", for the message)."""
    target, _, name = spec.rpartition(":")
    if not target or not name:
        raise error(f"{key}: '{spec}' must look like 'module:{what}' or 'file.py:{what}'")
    try:
        if target.endswith(".py"):
            path = Path(target).expanduser().resolve()
            if not path.is_file():
                raise error(f"{key}: no file {target}; check the path in '{spec}'")
            # Named after the whole path, so two files with the same name stay two modules.
            digest = hashlib.sha1(str(path).encode()).hexdigest()[:8]
            mod_name = f"r1zero_user_{path.stem}_{digest}"
            module_spec = importlib.util.spec_from_file_location(mod_name, path)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[mod_name] = module  # before running it: dataclasses and pickle look it up there
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except error:
        raise
    except Exception as e:
        raise error(f"{key}: cannot import '{target}' ({type(e).__name__}: {e}); check '{spec}'") from None
    if not hasattr(module, name):
        raise error(f"{key}: '{target}' has no {what} '{name}'; check '{spec}'")
    return getattr(module, name)
