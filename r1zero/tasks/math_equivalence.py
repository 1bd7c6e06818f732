"""math-verify's verdict on one boxed answer, as it runs inside the ``math`` task's worker process.

r1zero.tasks.math starts this function in a reward worker (r1zero.sandbox.worker, the machinery of
``reward_funcs``) as ``r1zero.tasks.math_equivalence:equivalent`` and sends it a step's box contents
at once. math-verify's own timeouts are off here: they use ``signal.alarm``, which works only in a
process's main thread (a trainer scoring from a thread would get a ValueError), and a signal cannot
stop sympy inside one long C-level computation anyway. The worker's time limit bounds each call
instead: the trainer kills a worker that overruns and starts a fresh one.

Gold and answer are parsed alike, each wrapped as ``\\boxed{...}`` (math-verify's LaTeX extraction
with the box first, then its plain-expression extraction; the text itself as a last resort, so
``\\text{Monday}`` equals ``\\text{Monday}``), then compared with ``verify(gold, answer)`` (not
symmetric: the gold goes first), at its default precision (6 decimal places when floats are compared).
"""
from __future__ import annotations

import functools
import logging

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

# math-verify warns once that its timeout is off (this worker is the timeout), and logs parse
# failures: neither belongs in the trainer's output.
logging.getLogger("math_verify").setLevel(logging.ERROR)

_EXTRACTION = (LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig())


@functools.lru_cache(maxsize=4096)  # a group's samples repeat answers, every sample of a prompt shares its gold
def parsed(text: str) -> tuple:
    """math-verify's parse of ``\\boxed{text}``: its sympy readings (and the text), or ()."""
    return tuple(parse("\\boxed{" + text + "}", extraction_config=_EXTRACTION, parsing_timeout=None))


def equivalent(completion: str, prompt: str | None = None, gold: str = "") -> float:
    """1.0 when the box content ``completion`` is ``gold`` by math-verify, else 0.0. (The parameter
    names are those of a reward function: the worker calls ``fn(completion=..., prompt=..., gold=...)``.)"""
    answer, reference = parsed(completion), parsed(gold)
    if not answer or not reference:
        return 0.0
    return 1.0 if verify(list(reference), list(answer), timeout_seconds=None) else 0.0
