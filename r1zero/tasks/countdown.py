"""Countdown: reach ``target`` with ``nums`` (each used once), ``+ - * /`` and parentheses.

This module holds the task's prompts (verbatim from SPEC.md: they are data), its reward schemes
(``tinyzero`` and ``datawhale`` reproduce the reference scorers' verdicts exactly; ``shaped`` is our
own, for weak models), a seeded task generator and an exhaustive solver.

Scoring never evaluates model text with ``eval``: answers go through the bounded, exact evaluator
in :mod:`r1zero.tasks.arithmetic`. The reference regexes are re-implemented with ``str.find`` (and
one linear regex) so that each score is linear in the completion's length (``re`` with
``<answer>(.*?)</answer>`` is quadratic on a line of many ``<answer>`` openers); tests check them
against the regexes.
"""
from __future__ import annotations

import json
import random
import re
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterable, Mapping

from r1zero.data import DataError, as_int_list, has_split, load_rows, write_jsonl
from r1zero.tasks.arithmetic import MAX_EXPR_CHARS, evaluate, numbers_in, uses_exactly, within_tolerance
from r1zero.tasks.base import Score, Task, TaskError, register_task

# ---- prompts (verbatim from SPEC.md) -----------------------------------------------------------

_INSTRUCTION = (
    "Using the numbers {numbers}, create an equation that equals {target}. You can use basic "
    "arithmetic operations (+, -, *, /) and each number can only be used once. Show your work in "
    "<think> </think> tags. And return the final answer in <answer> </answer> tags, for example "
    "<answer> (1 + 2) / 3 </answer>."
)

BASE_TEMPLATE = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves "
    "it. The assistant first thinks about the reasoning process in the mind and then provides the "
    "user with the answer.\n"
    "User: " + _INSTRUCTION + "\n"
    "Assistant: Let me solve this step by step.\n<think>"
)

QWEN_INSTRUCT_TEMPLATE = (
    "<|im_start|>system\nYou are a helpful assistant. You first thinks about the reasoning process "
    "in the mind and then provides the user with the answer.<|im_end|>\n<|im_start|>user\n "
    + _INSTRUCTION
    + "<|im_end|>\n<|im_start|>assistant\nLet me solve this step by step.\n<think>"
)

DATAWHALE_USER = (
    "使用给定的数字 {numbers},创建一个等于 {target} 的方程。你可以使用基本算术运算(+、-、*、/)"
    "一次或多次,但每个数字只能使用一次。在 <think> </think> 标签中展示你的思考过程,并在 <answer> "
    "</answer> 标签中返回最终方程,例如 <answer> (1 + 2) / 3 </answer>。在 <think> 标签中逐步思考。"
)
DATAWHALE_ASSISTANT_PREFIX = "让我们逐步解决这个问题。\n<think>"

# Our own short prompt for small instruct models (no <think> request: they rarely follow it).
CHAT_USER = (
    "Using the numbers {numbers}, create an equation that equals {target}. You can use basic "
    "arithmetic operations (+, -, *, /) and each number can only be used once. Return the final "
    "equation in <answer> </answer> tags, for example <answer> (1 + 2) / 3 </answer>."
)

# What follows the assistant marker ("Assistant:" / "<|im_start|>assistant") in each template, up
# to where the completion starts. TinyZero scores "the last line of the text after the marker";
# the completion continues this text, so its last line is that of prefix + completion.
ASSISTANT_PREFIX = {
    "base": " Let me solve this step by step.\n<think>",
    "qwen-instruct": "\nLet me solve this step by step.\n<think>",
    "datawhale": DATAWHALE_ASSISTANT_PREFIX,
    "chat": "",
    # For very weak models (the embedded CPU default): the assistant turn is prefilled with the
    # opening tag, so the model only has to write the equation and close the tag.
    "chat-answer": "<answer>",
}

# Allowed totals of each scheme (used by tests and handy for sanity checks).
REWARD_VALUES = {
    "tinyzero": (0.0, 0.1, 1.0),
    "datawhale": (0.0, 1.0, 2.0, 3.0),
    "shaped": (0.0, 0.25, 0.5, 1.5),
}

# ---- answer extraction (the reference regexes, linear time) -------------------------------------


def _last_tag_content(text: str, open_tag: str = "<answer>", close_tag: str = "</answer>") -> str | None:
    """Group 1 of the last match of ``re.finditer(open(.*?)close, text, re.DOTALL)``, in O(1) finds.

    finditer's matches do not overlap: each starts at the first opener after the previous match
    and ends at the first closer after that opener. So: the last match holds the last opener O
    that still has a closer after it; the search is looking for an opener right after any closer
    (a closer either ends the current match or is skipped), so the last match starts at the first
    opener after the last closer before O, and ends at the first closer after that opener.
    (The tags cannot overlap themselves or each other: '<' only starts them.)
    """
    last_close = text.rfind(close_tag)
    if last_close < 0:
        return None
    last_open = text.rfind(open_tag, 0, last_close)  # the opener must end before the closer
    if last_open < 0:
        return None
    close_before = text.rfind(close_tag, 0, last_open)
    start = text.find(open_tag, close_before + len(close_tag) if close_before >= 0 else 0)
    end = text.find(close_tag, start + len(open_tag))
    return text[start + len(open_tag) : end]


def _first_tag_content_one_line(text: str, open_tag: str, close_tag: str) -> str | None:
    """Group 1 of ``re.search(open(.*?)close, text)`` without DOTALL: the content holds no newline.

    That regex is quadratic on a line of many openers without a closer. The first match is on the
    first line where an opener is followed by a closer; it starts at that line's first opener and
    ends at the first closer after it. Such a line holds a closer at or after the first closer F
    that follows the first opener, so: if F's line has an opener before F, that is the match;
    otherwise go on after F. A few such steps settle almost every text; the rest is left to
    ``_first_match_by_markers``, linear whatever the text.
    """
    pos = 0
    for _ in range(8):
        start = text.find(open_tag, pos)
        if start < 0:
            return None
        end = text.find(close_tag, start + len(open_tag))
        if end < 0:
            return None
        newline = text.rfind("\n", start, end)
        line_start = start if newline < 0 else newline + 1
        first = text.find(open_tag, line_start, end)  # an opener on F's line, ending before F
        if first >= 0:
            return text[first + len(open_tag) : end]
        pos = end + len(close_tag)
    rest = text[pos:]
    # Many tag pairs across lines: the marker replacement costs ~100 ns per tag, a possessive regex
    # ~30 ns per '<'; take the regex when '<' is not dense (an attacker's wall of '<' goes to markers).
    if _POSSESSIVE and rest.count("<") * 8 < len(rest):
        return _first_match_possessive(rest, open_tag, close_tag)
    return _first_match_by_markers(rest, open_tag, close_tag)


# Python 3.11+ has possessive quantifiers: no backtracking, so one pass over the text.
_POSSESSIVE = sys.version_info >= (3, 11)
_POSSESSIVE_PATTERNS: dict[tuple[str, str], re.Pattern] = {}


def _first_match_possessive(text: str, open_tag: str, close_tag: str) -> str | None:
    """The same search as ``_first_match_by_markers`` with one regex on the text itself. From an
    opener it runs over characters that are neither a newline nor the start of a tag, so it stops
    at the next opener, closer or newline, and matches only when that is a closer: each character
    is read by at most one attempt. The first such match lies on the first line that holds an
    opener followed by a closer; the reference match starts at that line's first opener."""
    pat = _POSSESSIVE_PATTERNS.get((open_tag, close_tag))
    if pat is None:
        assert open_tag[0] == "<" and close_tag[0] == "<"
        tags = f"(?!{re.escape(open_tag[1:])}|{re.escape(close_tag[1:])})"
        pat = re.compile(f"{re.escape(open_tag)}(?:[^\\n<]++|<{tags})*+{re.escape(close_tag)}")
        _POSSESSIVE_PATTERNS[(open_tag, close_tag)] = pat
    found = pat.search(text)
    if found is None:
        return None
    start = text.find(open_tag, text.rfind("\n", 0, found.start()) + 1)
    return text[start + len(open_tag) : found.end() - len(close_tag)]


# Characters to stand for the tags while searching (see below): control characters first, which
# keep an ASCII text one byte per character (faster), then private-use ones.
_MARKERS = [chr(c) for c in (*range(0x00, 0x09), *range(0x0E, 0x1C))] + [chr(c) for c in range(0xE000, 0xE010)]


def _first_match_by_markers(text: str, open_tag: str, close_tag: str) -> str | None:
    """The same search in one linear pass: with each tag replaced by one character that is not in
    the text (A, B), ``A[^\\nAB]*B`` finds the first line with an opener followed by a closer (from
    each A the scan stops at the next A, B or newline); the content maps back by the reverse
    replacement."""
    markers = []
    for m in _MARKERS:
        if m not in text:
            markers.append(m)
            if len(markers) == 2:
                break
    if len(markers) < 2:  # the text holds all our markers: walk it line by line instead
        return _first_tag_content_one_line_slow(text, open_tag, close_tag)
    a, b = markers
    coded = text.replace(open_tag, a).replace(close_tag, b)
    ea, eb = re.escape(a), re.escape(b)
    found = re.search(f"{ea}[^\\n{ea}{eb}]*{eb}", coded)
    if found is None:
        return None
    start = coded.find(a, coded.rfind("\n", 0, found.start()) + 1)
    end = coded.find(b, start + 1)
    return coded[start + 1 : end].replace(a, open_tag).replace(b, close_tag)


def _first_tag_content_one_line_slow(text: str, open_tag: str, close_tag: str) -> str | None:
    """The same, one opener line at a time (linear finds, but a Python step per such line)."""
    pos = 0
    while True:
        start = text.find(open_tag, pos)
        if start < 0:
            return None
        content = start + len(open_tag)
        newline = text.find("\n", content)
        line_end = len(text) if newline < 0 else newline
        end = text.find(close_tag, content, line_end)
        if end >= 0:
            return text[content:end]
        if newline < 0:
            return None
        pos = newline + 1  # no later opener on this line has a closer on it either


def _datawhale_format_ok(text: str) -> bool:
    """``re.search(r"^<think>([^<]*(?:<(?!/?think>)[^<]*)*)</think>\\n<answer>([\\s\\S]*?)</answer>$",
    text, re.DOTALL) is not None``, written out.

    The think group may hold any '<' except one starting "<think>" or "</think>", so it must end at
    the first "</think>" and must not contain "<think>". Then "\\n<answer>", anything, and a final
    "</answer>" at the very end (``$`` also matches before one trailing newline).
    """
    if not text.startswith("<think>"):
        return False
    end = text.find("</think>", 7)
    if end < 0 or text.find("<think>", 7, end) >= 0:
        return False
    rest_start = end + len("</think>")
    if not text.startswith("\n<answer>", rest_start):
        return False
    rest = text[rest_start + len("\n<answer>") :]
    return rest.endswith("</answer>") or rest.endswith("</answer>\n")


def _last_line(prefix: str, completion: str) -> str:
    """Last line of ``prefix + completion`` without copying a long completion."""
    cut = completion.rfind("\n")
    if cut >= 0:
        return completion[cut + 1 :]
    return prefix[prefix.rfind("\n") + 1 :] + completion


def _numbers_ok(answer: str, nums: list[int]) -> bool:
    # An answer longer than any evaluable expression fails here without a scan; in the reference
    # schemes it would fail evaluation next anyway, so the verdict is unchanged and the cost bounded.
    return len(answer) <= MAX_EXPR_CHARS and uses_exactly(answer, nums)


# ---- the task -----------------------------------------------------------------------------------

_TRAIN_SEED = 0
_TEST_SEED = 1
_SPLITS = {"train": _TRAIN_SEED, "test": _TEST_SEED}


@register_task("countdown")
class CountdownTask(Task):
    """Countdown. Options (config ``task_args``) shape the generated data used when no source is
    given: ``min_numbers`` 3, ``max_numbers`` 4, ``max_number`` 99, ``operators`` "+-*/",
    ``min_target`` 1, ``max_target`` 100, ``train_size`` 10000, ``test_size`` 256."""

    templates = ("base", "qwen-instruct", "datawhale", "chat", "chat-answer")
    reward_schemes = ("tinyzero", "datawhale", "shaped")
    default_template = "base"
    default_reward = "tinyzero"
    required_fields = ("nums", "target")

    def __init__(
        self,
        reward: str | None = None,
        template: str | None = None,
        *,
        min_numbers: int = 3,
        max_numbers: int = 4,
        max_number: int = 99,
        operators: str = "+-*/",
        min_target: int = 1,
        max_target: int = 100,
        train_size: int = 10000,
        test_size: int = 256,
        **options: Any,
    ):
        super().__init__(reward=reward, template=template, **options)
        self.gen_options = _check_gen_options(
            min_numbers=min_numbers,
            max_numbers=max_numbers,
            max_number=max_number,
            operators=operators,
            min_target=min_target,
            max_target=max_target,
        )
        for key, value in (("train_size", train_size), ("test_size", test_size)):
            if not _is_int(value) or value < 0:
                raise TaskError(f"task_args: {key} must be a non-negative integer, got {value!r}")
        self.train_size = int(train_size)
        self.test_size = int(test_size)

    # ---- data -----------------------------------------------------------------------------------
    def load_split(self, split: str, source: str | None = None, config: str | None = None) -> list[dict]:
        """Rows of ``split``.

        No source: generated tasks. Train and test come from different seeds, and train leaves
        out every task of test, so test measures unseen tasks even in tiny settings.
        A source: its rows of ``split``. A single file, a folder without that split, or a hub
        dataset without it (``Jiayi-Pan/Countdown-Tasks-3to4`` has only "train") gives all its
        rows / its train rows, and the trainer cuts its own train/test ranges from them.
        Rows are checked and returned with ``nums`` as a list of int and ``target`` as an int.
        """
        if source is None:
            if split not in _SPLITS:
                raise TaskError(f"split: generated countdown data has splits 'train' and 'test', not '{split}'")
            test = generate_tasks(self.test_size, _TEST_SEED, **self.gen_options)
            if split == "test":
                return test
            return generate_tasks(self.train_size, _TRAIN_SEED, exclude=test, **self.gen_options)
        rows = self._read_source(source, split, config)
        return [self._checked(row, f"{source} row index {i}") for i, row in enumerate(rows)]

    @staticmethod
    def _read_source(source: str, split: str, config: str | None) -> list[dict]:
        path = Path(source).expanduser()
        if path.is_file():
            return load_rows(source, split, config)  # a file is all rows, whatever the split
        if path.is_dir():
            return load_rows(source, split if has_split(source, split) else "train", config)
        try:
            return load_rows(source, split, config)
        except DataError:
            if split == "train":
                raise
            return load_rows(source, "train", config)

    def _checked(self, row: Mapping[str, Any], where: str) -> dict:
        if not isinstance(row, Mapping):
            raise TaskError(f"{where}: expected an object with fields nums, target")
        self.check_example(row, where)
        nums = _int_list_or_none(row["nums"])
        if not nums:
            raise TaskError(f"{where}: field 'nums' must be a non-empty list of integers, got {row['nums']!r:.80}")
        target = _int_or_none(row["target"])
        if target is None:
            raise TaskError(f"{where}: field 'target' must be an integer, got {row['target']!r:.80}")
        out = dict(row)
        out["nums"], out["target"] = nums, target
        return out

    # ---- prompt ---------------------------------------------------------------------------------
    @property
    def prompt_is_chat(self) -> bool:
        return self.template in ("datawhale", "chat", "chat-answer")

    def render_prompt(self, example: Mapping[str, Any], tokenizer: Any = None) -> str:
        numbers = str(as_int_list(example["nums"]))  # Python list repr: "[44, 19, 35]"
        target = int(example["target"])
        if self.template == "base":
            return BASE_TEMPLATE.format(numbers=numbers, target=target)
        if self.template == "qwen-instruct":
            return QWEN_INSTRUCT_TEMPLATE.format(numbers=numbers, target=target)
        user = DATAWHALE_USER if self.template == "datawhale" else CHAT_USER
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise TaskError(
                f"template: '{self.template}' needs a tokenizer with a chat template; "
                "use template 'base' for base models"
            )
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": user.format(numbers=numbers, target=target)}],
            tokenize=False,
            add_generation_prompt=True,
        )
        return text + ASSISTANT_PREFIX[self.template]

    # ---- reward ---------------------------------------------------------------------------------
    def score(self, completion: str, example: Mapping[str, Any]) -> Score:
        """Score the model's output (without the prompt). Never raises on any completion."""
        nums = as_int_list(example["nums"])
        target = int(example["target"])
        if not isinstance(completion, str):
            return _zero(self.reward_scheme)
        if self.reward_scheme == "tinyzero":
            # Only the base template's prompt holds "Assistant:"; in every chat prompt TinyZero's
            # first "Assistant:" can be one the model wrote.
            return score_tinyzero(
                completion, nums, target, ASSISTANT_PREFIX[self.template], self.template == "base"
            )
        if self.reward_scheme == "datawhale":
            return score_datawhale(completion, nums, target)
        # The prefilled part of the answer (chat-answer's "<answer>") is the model's answer too.
        prefilled = ASSISTANT_PREFIX[self.template] if self.template == "chat-answer" else ""
        return score_shaped(prefilled + completion, nums, target)


_PART_NAMES = {
    "tinyzero": ("answer",),
    "datawhale": ("format", "equation", "thought_length"),
    "shaped": ("format", "numbers", "equation"),
}


def _zero(scheme: str) -> Score:
    return Score(0.0, False, False, {k: 0.0 for k in _PART_NAMES[scheme]})


def score_tinyzero(
    completion: str, nums: list[int], target: int, assistant_prefix: str = "", prompt_has_colon_marker: bool = True
) -> Score:
    """TinyZero: last line of the assistant text, last <answer> on it; 0 / 0.1 / 1.0.

    TinyZero cuts prompt+completion after the first "Assistant:", else after the first
    "<|im_start|>assistant". A prompt without "Assistant:" (every template but ``base``) is
    therefore cut inside the completion when the model writes "Assistant:"; that only changes the
    last line when the first such "Assistant:" is on it.
    """
    line = _last_line(assistant_prefix, completion)
    if not prompt_has_colon_marker:
        cut = completion.find("Assistant:")
        if cut >= 0 and completion.find("\n", cut) < 0:
            line = completion[cut + len("Assistant:") :]
    answer = _last_tag_content(line)
    if answer is None:
        return Score(0.0, False, False, {"answer": 0.0})
    answer = answer.strip()
    right = _numbers_ok(answer, nums) and within_tolerance(evaluate(answer), target)
    value = 1.0 if right else 0.1
    return Score(value, right, True, {"answer": value})


def score_datawhale(completion: str, nums: list[int], target: int) -> Score:
    """Datawhale-R1: format + equation + thought length, each 0 or 1, on "<think>" + completion."""
    text = "<think>" + completion
    fmt = 1.0 if _datawhale_format_ok(text) else 0.0
    answer = _first_tag_content_one_line(text, "<answer>", "</answer>")
    right = False
    if answer is not None:
        answer = answer.strip()
        right = _numbers_ok(answer, nums) and within_tolerance(evaluate(answer), target)
    thought = _first_tag_content_one_line(text, "<think>", "</think>")
    long_thought = 1.0 if thought is not None and len(thought.strip()) > 1000 else 0.0
    parts = {"format": fmt, "equation": 1.0 if right else 0.0, "thought_length": long_thought}
    return Score(sum(parts.values()), right, fmt > 0, parts)


def score_shaped(completion: str, nums: list[int], target: int) -> Score:
    """Ours: 0.25 for a non-empty last <answer>, +0.25 for the right numbers, +1.0 for the exact
    target. Decimal literals are refused here (``1.5*2`` does not use 1, 5 and 2 honestly)."""
    answer = _last_tag_content(completion)
    answer = answer.strip() if answer is not None else ""
    fmt = 0.25 if answer else 0.0
    num = 0.25 if fmt and _numbers_ok(answer, nums) else 0.0
    right = bool(num) and evaluate(answer, allow_decimals=False) == target
    parts = {"format": fmt, "numbers": num, "equation": 1.0 if right else 0.0}
    return Score(sum(parts.values()), right, fmt > 0, parts)


# ---- options and row checks ---------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_or_none(value: Any) -> int | None:
    """An integer stored as int, numpy integer or integral float; None otherwise."""
    if isinstance(value, (bool, str, bytes)):
        return None
    try:
        as_int = int(value)
        return as_int if as_int == value else None
    except (TypeError, ValueError, OverflowError):
        return None


def _int_list_or_none(value: Any) -> list[int] | None:
    """``as_int_list`` that refuses, rather than truncates, non-integral entries."""
    try:
        ints = as_int_list(value)
        raw = json.loads(value) if isinstance(value, str) else list(value)
    except (TypeError, ValueError, OverflowError):  # json.JSONDecodeError is a ValueError
        return None
    if len(raw) != len(ints) or any(_int_or_none(r) != i for r, i in zip(raw, ints)):
        return None
    return ints


def _check_gen_options(
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
        if not _is_int(value) or value < 1:
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
    opts = _check_gen_options(min_numbers, max_numbers, max_number, operators, min_target, max_target)
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
