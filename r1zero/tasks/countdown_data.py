"""Countdown data: option checks, the seeded task generator and an exhaustive solver (every generated
task is proven solvable)."""
from __future__ import annotations

import json
import random
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterable, Mapping

from r1zero.data.files import as_int_list, write_jsonl
from r1zero.tasks.arithmetic import evaluate, numbers_in
from r1zero.tasks.base import TaskError

# ---- options and row checks ---------------------------------------------------------------------


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def int_or_none(value: Any) -> int | None:
    """An integer stored as int, numpy integer or integral float; None otherwise."""
    if isinstance(value, (bool, str, bytes)):
        return None
    try:
        as_int = int(value)
        return as_int if as_int == value else None
    except (TypeError, ValueError, OverflowError):
        return None


def int_list_or_none(value: Any) -> list[int] | None:
    """``as_int_list`` that refuses, rather than truncates, non-integral entries."""
    try:
        ints = as_int_list(value)
        raw = json.loads(value) if isinstance(value, str) else list(value)
    except (TypeError, ValueError, OverflowError):  # json.JSONDecodeError is a ValueError
        return None
    if len(raw) != len(ints) or any(int_or_none(r) != i for r, i in zip(raw, ints)):
        return None
    return ints


def int_list_field(row: Mapping[str, Any], key: str, where: str) -> list[int]:
    """``row[key]`` as a non-empty list of integers, or a TaskError naming the row and the field."""
    values = int_list_or_none(row[key])
    if not values:
        raise TaskError(f"{where}: field '{key}' must be a non-empty list of integers, got {row[key]!r:.80}")
    return values


GENERATOR_OPTIONS = ("min_numbers", "max_numbers", "max_number", "operators", "min_target", "max_target")


def check_gen_options(
    min_numbers: int = 3,
    max_numbers: int = 4,
    max_number: int = 99,
    operators: str | Iterable[str] = "+-*/",
    min_target: int = 1,
    max_target: int = 100,
) -> dict:
    """Validated generator options (TaskError names the bad one)."""
    for key, value in (
        ("min_numbers", min_numbers),
        ("max_numbers", max_numbers),
        ("max_number", max_number),
        ("min_target", min_target),
        ("max_target", max_target),
    ):
        if not is_int(value) or value < 1:
            raise TaskError(f"task_args: {key} must be a positive integer, got {value!r}")
    if not 2 <= min_numbers <= max_numbers <= 8:
        raise TaskError(
            f"task_args: need 2 <= min_numbers <= max_numbers <= 8, got {min_numbers} and {max_numbers}"
        )
    if min_target > max_target:
        raise TaskError(f"task_args: min_target {min_target} is above max_target {max_target}")
    ops = "".join(operators) if not isinstance(operators, str) else operators
    if not ops or any(op not in "+-*/" for op in ops):
        raise TaskError(f"task_args: operators must be made of + - * /, got {operators!r}")
    return {
        "min_numbers": min_numbers,
        "max_numbers": max_numbers,
        "max_number": max_number,
        "operators": "".join(sorted(set(ops), key="+-*/".index)),
        "min_target": min_target,
        "max_target": max_target,
    }


# ---- generator --------------------------------------------------------------------------------


def _task_key(nums: Iterable[int], target: int) -> tuple:
    return (tuple(sorted(nums)), int(target))


def _random_build(rng: random.Random, nums: list[int], operators: str) -> tuple[int, str] | None:
    """Combine random pairs with random operators until one value is left, keeping every
    intermediate a positive integer (as in the classic game).
    Returns (value, expression) or None when some step had no such operator."""
    items: list[tuple[int, str]] = [(n, str(n)) for n in nums]
    while len(items) > 1:
        i, j = rng.sample(range(len(items)), 2)  # ordered: a - b and a / b take the order drawn
        (a, ea), (b, eb) = items[i], items[j]
        choices = []
        for op in operators:
            if op == "+":
                choices.append((a + b, op))
            elif op == "*":
                choices.append((a * b, op))
            elif op == "-" and a > b:
                choices.append((a - b, op))
            elif op == "/" and a % b == 0:
                choices.append((a // b, op))
        if not choices:
            return None
        value, op = rng.choice(choices)
        rest = [items[k] for k in range(len(items)) if k != i and k != j]
        items = rest + [(value, f"({ea} {op} {eb})")]
    return items[0]


def generate_tasks(
    n: int,
    seed: int,
    min_numbers: int = 3,
    max_numbers: int = 4,
    max_number: int = 99,
    operators: str = "+-*/",
    min_target: int = 1,
    max_target: int = 100,
    exclude: Iterable[Mapping[str, Any]] = (),
) -> list[dict]:
    """``n`` reachable tasks ``{"nums": [...], "target": int}``, the same for a seed.

    Numbers are drawn from 1..max_number; the target is the value of a random expression over all
    of them (drawn again until it is an integer in [min_target, max_target]). That expression is
    the proof of reachability, re-checked with the safe evaluator; ``solve`` finds a solution on
    its own (the tests check it). Tasks equal to one in ``exclude`` (same sorted nums and target)
    are skipped, so a train set can leave out its test set. Repeats within the list are allowed:
    small settings (2 numbers up to 20, "+" only) have only a few hundred distinct tasks.
    """
    opts = check_gen_options(min_numbers, max_numbers, max_number, operators, min_target, max_target)
    rng = random.Random(seed)
    excluded = {_task_key(as_int_list(t["nums"]), t["target"]) for t in exclude}
    tasks: list[dict] = []
    misses = 0
    # Generous: typical settings need a handful of draws per task; impossible ones stop here.
    max_misses = 10_000 + 200 * n
    k = rng.randint(opts["min_numbers"], opts["max_numbers"])
    while len(tasks) < n:
        # k stays fixed until a task of that size is found, so sizes are uniform in the range
        # (larger sets miss the target range more often and would otherwise be rarer).
        nums = [rng.randint(1, opts["max_number"]) for _ in range(k)]
        built = _random_build(rng, nums, opts["operators"])
        ok = built is not None and opts["min_target"] <= built[0] <= opts["max_target"]
        if ok:
            target, expr = built
            ok = _task_key(nums, target) not in excluded
            if ok:
                # The construction is the proof; check it independently of how it was built.
                if evaluate(expr) != target or sorted(numbers_in(expr) or []) != sorted(nums):
                    raise RuntimeError(f"countdown generator: built {expr} but it does not give {target}")
                tasks.append({"nums": nums, "target": target})
                k = rng.randint(opts["min_numbers"], opts["max_numbers"])
        if not ok:
            misses += 1
            if misses > max_misses:
                raise TaskError(
                    f"countdown generator: could not find {n} tasks with {opts} (outside the "
                    f"{len(excluded)} excluded); widen max_target, max_number or operators"
                )
    return tasks


def write_generated(n: int, seed: int, out_path: str | Path, **gen_options: Any) -> int:
    """Write ``n`` generated tasks as JSON lines to ``out_path``; returns the number written."""
    rows = generate_tasks(n, seed, **gen_options)
    write_jsonl(rows, out_path)
    return len(rows)


# ---- solver -----------------------------------------------------------------------------------


def _div(a, b):
    """a / b exactly, as an int when it divides (ints are much faster than Fractions)."""
    if isinstance(a, int) and isinstance(b, int) and a % b == 0:
        return a // b
    q = Fraction(a) / b
    return q.numerator if q.denominator == 1 else q


def _wrap(expr: str) -> str:
    return f"({expr})" if " " in expr else expr


def solve(nums: Iterable[int], target: int, operators: str = "+-*/") -> str | None:
    """An expression using every number of ``nums`` exactly once that equals ``target`` exactly,
    or None when there is none (exhaustive over pairings, operators and their orders, with exact
    fractions as intermediates). Milliseconds for 4 numbers; exponential beyond ~6."""
    values = as_int_list(nums)
    if not values:
        return None
    goal = Fraction(target)
    ops = set(operators)
    failed: set[tuple] = set()  # multisets of values already shown not to reach the goal

    def combos(a, ea, b, eb):
        sa, sb = _wrap(ea), _wrap(eb)
        if "+" in ops:
            yield a + b, f"{sa} + {sb}"
        if "*" in ops:
            yield a * b, f"{sa} * {sb}"
        if "-" in ops:
            yield a - b, f"{sa} - {sb}"
            if a != b:
                yield b - a, f"{sb} - {sa}"
        if "/" in ops:
            if b != 0:
                yield _div(a, b), f"{sa} / {sb}"
            if a != 0 and a != b:
                yield _div(b, a), f"{sb} / {sa}"

    def search(items: list[tuple]) -> str | None:
        if len(items) == 1:
            return items[0][1] if items[0][0] == goal else None
        key = tuple(sorted(v for v, _ in items))
        if key in failed:
            return None
        if len(items) == 2:  # leaf level inlined: the bulk of the work
            (a, ea), (b, eb) = items
            for value, expr in combos(a, ea, b, eb):
                if value == goal:
                    return expr
        else:
            for i in range(len(items)):
                for j in range(i + 1, len(items)):
                    rest = [items[k] for k in range(len(items)) if k != i and k != j]
                    (a, ea), (b, eb) = items[i], items[j]
                    for value, expr in combos(a, ea, b, eb):
                        found = search(rest + [(value, expr)])
                        if found is not None:
                            return found
        failed.add(key)
        return None

    return search([(v, str(v) if v >= 0 else f"({v})") for v in values])
