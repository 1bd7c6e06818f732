"""Chained sums: "Compute 7 + 5 + 8." answered with a number, the reasoning in <think> </think> first.

Why this task exists: it is where a 135M model's thinking can matter. Countdown with thinking asks the
embedded model (SmolLM2-135M-Instruct) to check candidate equations, and its arithmetic is too weak
for that: asked untrained, 0 of 64 answers to two-number problems with all four operators were
right. A chained sum written out step by step ("7 + 5 = 12, 12 + 8 = 20") needs only one small
addition per step, which it mostly gets right; answered at once, the whole sum must come out in one
token. Measured untrained (benchmarks/RESULTS.md, benchmarks/think_candidates.py): three terms of
1-9, 8 samples of 8 problems at temperature 1, 31 of 64 answers in the format and 8 right with the
thinking, 0 right with it taken away. Training can then pay for being right and let the thinking
decide how.

The prompt is R1-Zero's template style: the reasoning in <think> </think>, the answer in <answer>
</answer>, the assistant turn prefilled with "<think>". ``chat-think-example`` shows one short worked
example as an earlier turn of the conversation (the untrained model copies the tags' use from a turn
far more often than from an example inside the question: 31 of 64 formatted against 0), and
``chat-think`` shows none. The reward (``think``) pays 0.25 for the format (a closed think part, then
a non-empty answer) and 1.0 more for the right sum; never for the think part's length or words.

Data: generated, the same for a seed; the test split comes from its own seed and the train split
leaves out every test problem. A source file of rows with a ``numbers`` list works too.
"""
from __future__ import annotations

import random
import re
from typing import Any, Mapping

from r1zero.data.files import as_int_list, load_rows
from r1zero.tasks.base import Score, Task, TaskError, register_task, render_chat
from r1zero.tasks.countdown_answers import answer_after_think
from r1zero.tasks.countdown_data import int_list_field, is_int

USER = ("Compute {expression}. First think it through in <think> </think> tags, then give the final number "
        "in <answer> </answer> tags.")
EXAMPLE_NUMBERS = (7, 5, 8)
EXAMPLE_ANSWER = "<think> 7 + 5 = 12, 12 + 8 = 20. </think> <answer> 20 </answer>"

_INTEGER = re.compile(r"[+-]?[0-9]{1,12}")
_SEEDS = {"train": 0, "test": 1}


def expression(numbers) -> str:
    return " + ".join(str(n) for n in numbers)


def score_sum(text: str, numbers: list[int]) -> Score:
    """The ``think`` scheme on the assistant turn ``text`` (from "<think>" on): 0.25 for a closed
    think part followed by a non-empty last <answer>, +1.0 when that answer is the sum, written as
    an integer. Any other text scores 0; nothing here can raise or take long (linear finds)."""
    answer = answer_after_think(text)
    answer = answer.strip() if answer is not None else ""
    fmt = 0.25 if answer else 0.0
    right = bool(fmt) and _INTEGER.fullmatch(answer) is not None and int(answer) == sum(numbers)
    parts = {"format": fmt, "equation": 1.0 if right else 0.0}
    return Score(sum(parts.values()), right, fmt > 0, parts)


@register_task("sums")
class SumsTask(Task):
    """Chained sums. Options (config ``task_args``): ``min_terms`` 3, ``max_terms`` 3, ``max_number``
    9 (terms are drawn from 1..max_number), ``train_size`` 2000, ``test_size`` 64."""

    templates = ("chat-think-example", "chat-think")
    reward_schemes = ("think",)
    default_template = "chat-think-example"
    default_reward = "think"
    required_fields = ("numbers",)

    def __init__(self, reward: str | None = None, template: str | None = None, *, min_terms: int = 3,
                 max_terms: int = 3, max_number: int = 9, train_size: int = 2000, test_size: int = 64, **options: Any):
        super().__init__(reward=reward, template=template, **options)
        for key, value, low in (("min_terms", min_terms, 2), ("max_terms", max_terms, 2), ("max_number", max_number, 1),
                                ("train_size", train_size, 0), ("test_size", test_size, 0)):
            if not is_int(value) or value < low:
                raise TaskError(f"task_args: {key} must be an integer of at least {low}, got {value!r}")
        if max_terms < min_terms:
            raise TaskError(f"task_args: max_terms ({max_terms}) is below min_terms ({min_terms}); raise max_terms")
        self.min_terms, self.max_terms, self.max_number = min_terms, max_terms, max_number
        self.train_size, self.test_size = train_size, test_size

    # ---- data -----------------------------------------------------------------------------------
    def generate(self, n: int, seed: int, exclude: frozenset = frozenset()) -> list[dict]:
        """``n`` problems ``{"numbers": [...]}`` drawn with ``seed``, none in ``exclude`` (tuples)."""
        space = sum((self.max_number ** k) for k in range(self.min_terms, self.max_terms + 1)) - len(exclude)
        if n and space < 1:
            raise TaskError("task_args: every possible problem is in the test split; raise max_number or max_terms")
        rng = random.Random(seed)
        rows: list[dict] = []
        while len(rows) < n:  # repeats are allowed: small settings have only hundreds of problems
            numbers = [rng.randint(1, self.max_number) for _ in range(rng.randint(self.min_terms, self.max_terms))]
            if tuple(numbers) not in exclude:
                rows.append({"numbers": numbers})
        return rows

    def load_split(self, split: str, source: str | None = None, config: str | None = None) -> list[dict]:
        if source is not None:
            rows = load_rows(source, split, config)
            return [self._checked(row, f"{source} row {i}") for i, row in enumerate(rows, 1)]
        if split not in _SEEDS:
            raise TaskError(f"split: generated sums data has splits 'train' and 'test', not '{split}'")
        test = self.generate(self.test_size, _SEEDS["test"])
        if split == "test":
            return test
        return self.generate(self.train_size, _SEEDS["train"], frozenset(tuple(r["numbers"]) for r in test))

    def _checked(self, row: Mapping[str, Any], where: str) -> dict:
        if not isinstance(row, Mapping):
            raise TaskError(f"{where}: expected an object with the field numbers")
        self.check_example(row, where)
        return {**row, "numbers": int_list_field(row, "numbers", where)}

    # ---- prompt ---------------------------------------------------------------------------------
    @property
    def prompt_is_chat(self) -> bool:
        return True

    def think_style(self) -> str | None:
        return "prefilled"

    def messages(self, example: Mapping[str, Any]) -> list[dict]:
        question = {"role": "user", "content": USER.format(expression=expression(as_int_list(example["numbers"])))}
        if self.template == "chat-think":
            return [question]
        shown = {"role": "user", "content": USER.format(expression=expression(EXAMPLE_NUMBERS))}
        return [shown, {"role": "assistant", "content": EXAMPLE_ANSWER}, question]

    def render_prompt(self, example: Mapping[str, Any], tokenizer: Any = None) -> str:
        return render_chat(tokenizer, self.messages(example), f"task 'sums' template '{self.template}'") + self.THINK_OPEN

    # ---- reward ---------------------------------------------------------------------------------
    def score(self, completion: str, example: Mapping[str, Any]) -> Score:
        """The completion continues the prefilled "<think>"; never raises on any completion."""
        if not isinstance(completion, str):
            return Score(0.0, False, False, {"format": 0.0, "equation": 0.0})
        return score_sum(self.THINK_OPEN + completion, as_int_list(example["numbers"]))
