"""The refusal every layer shares: a bad config value, said in one line naming the key and the fix."""
from __future__ import annotations


class ConfigError(ValueError):
    """A config value that cannot run; the message names the key and the fix."""


def need(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"config: '{key}' {msg}")
