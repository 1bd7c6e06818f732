"""DAPO's soft overlong punishment, the reward part ``overlong`` (r1zero.rewards.scoring)."""
from __future__ import annotations


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
