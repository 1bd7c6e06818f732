"""The ``math`` task's cheap part: the final ``\\boxed{...}`` of a completion, the gold answer of a row,
and the refusals that keep hostile answers away from math-verify.

Everything here runs in the trainer's process, before anything reaches math-verify's worker (the
costly part, r1zero.tasks.math), so it is bounded whatever the text: a completion is read only in
its last ``MAX_TAIL_CHARS`` characters, a box is scanned for at most ``MAX_ANSWER_CHARS``, and every
check below is a few linear passes over that. Only the box's content travels to the worker.

Why each bound (measured with math-verify 0.9.0 / sympy 1.14 on one CPU core):

- bracket nesting: math-verify's LaTeX normalisation is exponential in bare ``{`` nesting (``{`` x 12
  around a number: 2 s, x 14: 7 s, x 40: hours) and about quadratic in ``(`` nesting (x 34: 5 s);
  honest final answers nest three or four levels, so over ``MAX_NESTING`` is refused;
- exponents: sympy computes ``9^{9^{9}}`` (9 to the 387,420,489th) and ``9^{999999999}`` exactly,
  for hours; an exponent over ``MAX_EXPONENT_DIGITS`` digits, or a tower of numbers (an exponent
  holding ``^`` and no variable) is refused (``99999^{99999}``: 65 ms; ``e^{x^2}`` is kept). ``**``
  counts as ``^``: math-verify's plain-expression reading computes ``44**19**35`` in any text;
- factorials and binomials: ``9999999!``, ``\\binom{100000000}{50000000}`` and ``9!!!!!!`` run for
  hours (``100000!``: 0.1 s), so a factorial of over ``MAX_FACTORIAL_DIGITS`` digits, a factorial of
  a factorial, a binomial with a number over ``MAX_EXPONENT_DIGITS`` digits are refused.

What slips through (it exists: a sum of a hundred costly pieces) is stopped by the worker's time limit.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

from r1zero.tasks.gsm8k import gold_answer as gsm8k_gold

MAX_TAIL_CHARS = 50_000  # a final answer is at the end: only this much of a completion is searched
MAX_ANSWER_CHARS = 1_000  # a box that does not close within this many characters is no answer
MAX_NESTING = 8  # { ( [ levels inside the box
MAX_EXPONENT_DIGITS = 5
MAX_FACTORIAL_DIGITS = 4  # 9999! has 35,660 digits: milliseconds

BOXED = "\\boxed{"
_BRACKET = re.compile(r"\\.|[{}()\[\]]", re.DOTALL)  # a backslash escapes the next character: \{ \} \\
_OPEN, _CLOSE = "{([", "})]"


def last_boxed(text: Any) -> str | None:
    """The content of the last ``\\boxed{...}`` (its braces balanced; ``\\{`` and ``\\}`` are
    literal braces), as written; None when the text has none in its last ``MAX_TAIL_CHARS`` characters,
    when the last one is blank or does not close within ``MAX_ANSWER_CHARS`` (a truncated answer).

    Only the last opener counts: ``\\boxed{3} ... \\boxed{4`` has no final answer, and
    ``\\boxed{\\boxed{5}}`` is 5. The scan stops at the closing brace or after MAX_ANSWER_CHARS
    characters, so ``"\\boxed{" + "{" * 100_000`` costs one bounded regex pass.
    """
    if not isinstance(text, str):
        return None
    start = text.rfind(BOXED, max(0, len(text) - MAX_TAIL_CHARS))
    if start < 0:
        return None
    begin = start + len(BOXED)
    depth = 1
    for m in _BRACKET.finditer(text, begin, min(len(text), begin + MAX_ANSWER_CHARS + 1)):
        c = m.group()
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                content = text[begin:m.start()]
                return content if content.strip() else None
    return None


# ---- refusals --------------------------------------------------------------------------------------
_COMMAND = re.compile(r"\\[A-Za-z]+")
# Commands that are not variables (\frac, \cdot, \left...): a tower of numbers stays one behind them.
_NOT_A_VARIABLE = re.compile(r"\\(?!(?:alpha|beta|gamma|delta|theta|lambda|mu|phi|omega|pi|text)\b)[A-Za-z]+")
_DIGITS = re.compile(r"\d+")
_FACTORIAL_OF_BIG = re.compile(r"\d{%d,}\s*\}?\s*!" % (MAX_FACTORIAL_DIGITS + 1))
_FACTORIAL_OF_FACTORIAL = re.compile(r"!\s*!\s*!|!\s*[)\]}]\s*!")  # 9!!!, (9!)!
_BINOMIAL = re.compile(r"\\[dt]?binom|\\choose")
_NEXT = re.compile(r"\s*(\S?)")  # the next character that is not a space


def _groups(text: str) -> tuple[dict[int, int], int]:
    """({opening index: closing index} of the balanced brackets, deepest nesting) in one pass."""
    pairs: dict[int, int] = {}
    stack: list[int] = []
    deepest = 0
    for m in _BRACKET.finditer(text):
        c = m.group()
        if c in _OPEN:
            stack.append(m.start())
            deepest = max(deepest, len(stack))
        elif c in _CLOSE and stack:
            pairs[stack.pop()] = m.start()
    return pairs, deepest


def _exponents(text: str, pairs: dict[int, int]):
    """(exponent text, what follows it) of every ``^``: a bracketed group, else the next token."""
    for m in re.finditer(r"\^\s*", text):
        at = m.end()
        if at < len(text) and text[at] in _OPEN and at in pairs:
            end = pairs[at] + 1
            yield text[at + 1:end - 1], _NEXT.match(text, end).group(1)
        else:
            token = _DIGITS.match(text, at) or _COMMAND.match(text, at)
            end = token.end() if token else at + 1
            yield text[at:end], _NEXT.match(text, end).group(1)


def _is_variable_free(text: str) -> bool:
    return re.search("[A-Za-z]", _NOT_A_VARIABLE.sub(" ", text)) is None


def refusal(answer: str) -> str | None:
    """Why ``answer`` (a box's content, at most MAX_ANSWER_CHARS long) is refused without asking
    math-verify, or None. A refused answer is wrong (the module docstring has the bounds)."""
    answer = answer.replace("**", "^")  # math-verify's plain-expression reading computes 44**19**35 too
    pairs, deepest = _groups(answer)
    if deepest > MAX_NESTING:
        return f"brackets nested {deepest} deep (over {MAX_NESTING})"
    for exponent, after in _exponents(answer, pairs):
        if any(len(d) > MAX_EXPONENT_DIGITS for d in _DIGITS.findall(exponent)):
            return f"an exponent over {MAX_EXPONENT_DIGITS} digits"
        if ("^" in exponent or after == "^") and _is_variable_free(exponent):
            return "a tower of exponents"
    if _FACTORIAL_OF_BIG.search(answer):
        return f"a factorial of a number over {MAX_FACTORIAL_DIGITS} digits"
    if _FACTORIAL_OF_FACTORIAL.search(answer):
        return "a factorial of a factorial"
    if _BINOMIAL.search(answer) and any(len(d) > MAX_EXPONENT_DIGITS for d in _DIGITS.findall(answer)):
        return f"a binomial of a number over {MAX_EXPONENT_DIGITS} digits"
    return None


# ---- rows ------------------------------------------------------------------------------------------
def gold_answer(example: Mapping[str, Any]) -> str | None:
    """The final answer of a row, as text: ``answer`` (GSM8K's ``... #### N`` gives N; a number is
    written as text), else the last ``\\boxed{...}`` of ``solution``; None when there is none."""
    answer = example.get("answer") if isinstance(example, Mapping) else None
    if isinstance(answer, (int, float)) and not isinstance(answer, bool):
        answer = str(answer)
    if isinstance(answer, str):
        return (gsm8k_gold(answer) if "####" in answer else answer.strip()) or None
    solution = example.get("solution") if isinstance(example, Mapping) else None
    boxed = last_boxed(solution)
    return boxed.strip() if boxed is not None else None


def problem_text(example: Mapping[str, Any]) -> str | None:
    """The problem of a row: ``problem``, else ``question`` (GSM8K)."""
    for key in ("problem", "question"):
        value = example.get(key) if isinstance(example, Mapping) else None
        if isinstance(value, str) and value.strip():
            return value
    return None
