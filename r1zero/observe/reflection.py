"""Reflection tracking: how often completions use self-checking language ("wait", "let me check").

R1-Zero's "aha moment" is the model starting to re-examine its own work. We measure it the way
readers of the papers do by hand: the share of a step's logged completions that contain at least
one phrase of a word list. English phrases match case-insensitively at the start of a word, so
inflections count ("verify" matches "verifying", "recheck" matches "Rechecking") but words that
merely contain one do not ("wait" does not match "await"); phrases with non-ASCII letters
(Chinese) match as substrings, since Chinese text has no spaces between words.
"""
from __future__ import annotations

import re
from collections import defaultdict
from typing import Iterable, Mapping, Sequence

DEFAULT_WORDS: tuple[str, ...] = (
    "wait", "let me check", "verify", "re-evaluate", "try another", "however", "recheck",
    "等等", "检查", "验证", "重新", "再试",
)
DEFAULT_THRESHOLD = 0.1


def reflection_pattern(words: Sequence[str] = DEFAULT_WORDS) -> re.Pattern:
    """One regex matching any phrase of ``words`` (whitespace inside a phrase matches any run of it)."""
    if not words:
        raise ValueError("reflection_words: the list is empty; give at least one phrase or leave it unset")
    alts = []
    for w in sorted({w.strip().lower() for w in words}, key=len, reverse=True):
        if not w:
            raise ValueError("reflection_words: an entry is empty; remove it")
        body = r"\s+".join(re.escape(part) for part in w.split())
        if w.isascii() and re.match(r"\w", w):
            body = r"\b" + body
        alts.append(body)
    return re.compile("|".join(alts), re.IGNORECASE)


def uses_reflection(text: str, words: Sequence[str] = DEFAULT_WORDS, pattern: re.Pattern | None = None) -> bool:
    return (pattern or reflection_pattern(words)).search(text or "") is not None


def reflection_by_step(samples: Iterable[Mapping], words: Sequence[str] = DEFAULT_WORDS) -> dict[int, tuple[float, int]]:
    """{step: (share of that step's completions with a reflection phrase, number of completions)}."""
    pattern = reflection_pattern(words)
    hits: dict[int, int] = defaultdict(int)
    total: dict[int, int] = defaultdict(int)
    for s in samples:
        step = int(s["step"])
        total[step] += 1
        hits[step] += uses_reflection(s.get("completion", ""), pattern=pattern)
    return {step: (hits[step] / total[step], total[step]) for step in sorted(total)}


def first_step_over(shares: Mapping[int, float], threshold: float) -> int | None:
    """The first step whose share reaches ``threshold`` (None if none does)."""
    for step in sorted(shares):
        if shares[step] >= threshold:
            return step
    return None
