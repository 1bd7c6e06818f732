"""Countdown: reach ``target`` with ``nums`` (each used once), ``+ - * /`` and parentheses.

This module holds the task's prompts (verbatim from the reference systems, docs/REFERENCES.md:
they are data), its reward schemes (``tinyzero`` and ``datawhale`` reproduce the reference scorers'
verdicts, except that they refuse decimal glue, ``1.5*2`` for nums [1, 5, 2], unless the task has
``reference_quirks``; ``shaped`` is our own, for weak models), a seeded task generator and an
exhaustive solver.

Scoring never evaluates model text with ``eval``: answers go through the bounded, exact evaluator
in :mod:`r1zero.tasks.arithmetic`. The reference regexes are re-implemented with ``str.find`` (and
one linear regex) so that each score is linear in the completion's length (``re`` with
``<answer>(.*?)</answer>`` is quadratic on a line of many ``<answer>`` openers); tests check them
against the regexes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from r1zero.data.files import DataError, as_int_list, has_split, load_rows
from r1zero.tasks.arithmetic import evaluate, within_tolerance
from r1zero.tasks.base import Score, Task, TaskError, register_task
from r1zero.tasks.countdown_answers import answer_after_think, datawhale_format_ok, first_tag_content_one_line, last_line, last_tag_content, numbers_ok
from r1zero.tasks.countdown_data import GENERATOR_OPTIONS, check_gen_options, generate_tasks, int_list_field, int_or_none, is_int, solve, write_generated  # noqa: F401  (solve, write_generated: public here too)

# ---- prompts (verbatim, docs/REFERENCES.md) ---------------------------------------------------

_INSTRUCTION = (
    "Using the numbers {numbers}, create an equation that equals {target}. You can use basic "
    "arithmetic operations (+, -, *, /) and each number can only be used once. Show your work in "
    "<think> </think> tags. And return the final answer in <answer> </answer> tags, for example "
    "<answer> (1 + 2) / 3 </answer>."
)

# The R1-Zero conversation's opening (the math task's base template starts with it too).
CONVERSATION = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves "
    "it. The assistant first thinks about the reasoning process in the mind and then provides the "
    "user with the answer.\n"
)
BASE_TEMPLATE = CONVERSATION + "User: " + _INSTRUCTION + "\nAssistant: Let me solve this step by step.\n<think>"

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
# Its example is a worked problem (numbers, target, an answer that reaches it), not TinyZero's bare
# "(1 + 2) / 3": a weak model copies the example, and with the bare one about one embedded-default
# run in five collapsed onto copying its shape and never left that plateau (benchmarks/RESULTS.md).
CHAT_USER = (
    "Using the numbers {numbers}, create an equation that equals {target}. You can use basic "
    "arithmetic operations (+, -, *, /) and each number can only be used once. Return the final "
    "equation in <answer> </answer> tags; for example, for the numbers [2, 5] and the target 7: "
    "<answer> 2 + 5 </answer>."
)

# Our own R1-Zero-style prompts for small instruct models: the reasoning in <think> </think>, the
# answer in <answer> </answer>, the assistant turn prefilled with "<think>" (as TinyZero's base
# template ends). "chat-think" shows no example; "chat-think-example" shows one short worked example
# as an earlier turn of the conversation, which a weak model copies far more readily than an example
# inside the question. Even so the embedded model's arithmetic is too weak for this task
# (benchmarks/RESULTS.md: 0 right answers untrained); r1zero.tasks.sums is its thinking task.
CHAT_THINK_USER = (
    "Using the numbers {numbers}, create an equation that equals {target}. You can use basic "
    "arithmetic operations (+, -, *, /) and each number can only be used once. First think it through "
    "in <think> </think> tags, then give the final equation in <answer> </answer> tags."
)
CHAT_THINK_EXAMPLE = [
    {"role": "user", "content": CHAT_THINK_USER.format(numbers="[6, 2]", target=3)},
    {"role": "assistant", "content": "<think> 6 + 2 = 8, no. 6 - 2 = 4, no. 6 * 2 = 12, no. 6 / 2 = 3, yes. "
                                     "</think> <answer> 6 / 2 </answer>"},
]
_CHAT_USERS = {"datawhale": DATAWHALE_USER, "chat": CHAT_USER, "chat-answer": CHAT_USER,
               "chat-think": CHAT_THINK_USER, "chat-think-example": CHAT_THINK_USER}

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
    "chat-think": "<think>",
    "chat-think-example": "<think>",
}

# The templates whose prompt opens a think part (the model continues inside it).
THINKING_TEMPLATES = tuple(t for t, prefix in ASSISTANT_PREFIX.items() if prefix.endswith("<think>"))

# Allowed totals of each scheme (used by tests and handy for sanity checks).
REWARD_VALUES = {
    "tinyzero": (0.0, 0.1, 1.0),
    "datawhale": (0.0, 1.0, 2.0, 3.0),
    "shaped": (0.0, 0.25, 0.5, 1.5),
    "think": (0.0, 0.25, 1.25),
}

# ---- the task -----------------------------------------------------------------------------------

_TRAIN_SEED = 0
_TEST_SEED = 1
_SPLITS = {"train": _TRAIN_SEED, "test": _TEST_SEED}


@register_task("countdown")
class CountdownTask(Task):
    """Countdown. Options (config ``task_args``) shape the generated data used when no source is
    given: ``min_numbers`` 3, ``max_numbers`` 4, ``max_number`` 99, ``operators`` "+-*/",
    ``min_target`` 1, ``max_target`` 100, ``train_size`` 10000, ``test_size`` 256."""

    templates = ("base", "qwen-instruct", "datawhale", "chat", "chat-answer", "chat-think", "chat-think-example")
    reward_schemes = ("tinyzero", "datawhale", "shaped", "think")
    default_template = "base"
    default_reward = "tinyzero"
    required_fields = ("nums", "target")

    def __init__(self, reward: str | None = None, template: str | None = None, *, train_size: int = 10000,
                 test_size: int = 256, **options: Any):
        # The generator's options (and their defaults) are check_gen_options'; the rest is the base's.
        gen = {k: options.pop(k) for k in GENERATOR_OPTIONS if k in options}
        super().__init__(reward=reward, template=template, **options)
        self.gen_options = check_gen_options(**gen)
        if self.reward_scheme == "think" and self.think_style() is None:
            raise TaskError(f"reward: 'think' scores a think part, which template '{self.template}' has not; "
                            f"use one of the templates {', '.join(THINKING_TEMPLATES)}")
        for key, value in (("train_size", train_size), ("test_size", test_size)):
            if not is_int(value) or value < 0:
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
        return [self._checked(row, f"{source} row {i}") for i, row in enumerate(rows, 1)]  # from 1, as lines

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
        nums = int_list_field(row, "nums", where)
        target = int_or_none(row["target"])
        if target is None:
            raise TaskError(f"{where}: field 'target' must be an integer, got {row['target']!r:.80}")
        out = dict(row)
        out["nums"], out["target"] = nums, target
        return out

    # ---- prompt ---------------------------------------------------------------------------------
    @property
    def prompt_is_chat(self) -> bool:
        return self.template in _CHAT_USERS

    def think_style(self) -> str | None:
        # Every template that asks for a think part opens it in the prompt.
        return "prefilled" if self.template in THINKING_TEMPLATES else None

    def render_prompt(self, example: Mapping[str, Any], tokenizer: Any = None) -> str:
        numbers = str(as_int_list(example["nums"]))  # Python list repr: "[44, 19, 35]"
        target = int(example["target"])
        if self.template == "base":
            return BASE_TEMPLATE.format(numbers=numbers, target=target)
        if self.template == "qwen-instruct":
            return QWEN_INSTRUCT_TEMPLATE.format(numbers=numbers, target=target)
        user = _CHAT_USERS[self.template]
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise TaskError(
                f"template: '{self.template}' needs a tokenizer with a chat template; "
                "use template 'base' for base models"
            )
        shown = CHAT_THINK_EXAMPLE if self.template == "chat-think-example" else []
        text = tokenizer.apply_chat_template(
            [*shown, {"role": "user", "content": user.format(numbers=numbers, target=target)}],
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
                completion, nums, target, ASSISTANT_PREFIX[self.template], self.template == "base",
                reference_quirks=self.reference_quirks,
            )
        if self.reward_scheme == "datawhale":
            return score_datawhale(completion, nums, target, reference_quirks=self.reference_quirks)
        if self.reward_scheme == "think":
            return score_think(self.THINK_OPEN + completion, nums, target)
        # The prefilled part of the answer (chat-answer's "<answer>") is the model's answer too.
        prefilled = ASSISTANT_PREFIX[self.template] if self.template == "chat-answer" else ""
        return score_shaped(prefilled + completion, nums, target)


_PART_NAMES = {
    "tinyzero": ("answer",),
    "datawhale": ("format", "equation", "thought_length"),
    "shaped": ("format", "numbers", "equation"),
    "think": ("format", "equation"),
}


def _zero(scheme: str) -> Score:
    return Score(0.0, False, False, {k: 0.0 for k in _PART_NAMES[scheme]})


def score_tinyzero(
    completion: str, nums: list[int], target: int, assistant_prefix: str = "", prompt_has_colon_marker: bool = True,
    *, reference_quirks: bool = False,
) -> Score:
    """TinyZero: last line of the assistant text, last <answer> on it; 0 / 0.1 / 1.0.

    Decimal glue (``1.5*2`` for nums [1, 5, 2]: arithmetic.py) is formatted but wrong, 0.1, unless
    ``reference_quirks``, which gives TinyZero's verdict, 1.0.

    TinyZero cuts prompt+completion after the first "Assistant:", else after the first
    "<|im_start|>assistant". A prompt without "Assistant:" (every template but ``base``) is
    therefore cut inside the completion when the model writes "Assistant:"; that only changes the
    last line when the first such "Assistant:" is on it.
    """
    line = last_line(assistant_prefix, completion)
    if not prompt_has_colon_marker:
        cut = completion.find("Assistant:")
        if cut >= 0 and completion.find("\n", cut) < 0:
            line = completion[cut + len("Assistant:") :]
    answer = last_tag_content(line)
    if answer is None:
        return Score(0.0, False, False, {"answer": 0.0})
    answer = answer.strip()
    right = numbers_ok(answer, nums) and within_tolerance(evaluate(answer, allow_glue=reference_quirks), target)
    value = 1.0 if right else 0.1
    return Score(value, right, True, {"answer": value})


def score_datawhale(completion: str, nums: list[int], target: int, *, reference_quirks: bool = False) -> Score:
    """Datawhale-R1: format + equation + thought length, each 0 or 1, on "<think>" + completion.
    Decimal glue gets equation 0 unless ``reference_quirks`` (Datawhale-R1's verdict: 1)."""
    text = "<think>" + completion
    fmt = 1.0 if datawhale_format_ok(text) else 0.0
    answer = first_tag_content_one_line(text, "<answer>", "</answer>")
    right = False
    if answer is not None:
        answer = answer.strip()
        right = numbers_ok(answer, nums) and within_tolerance(evaluate(answer, allow_glue=reference_quirks), target)
    thought = first_tag_content_one_line(text, "<think>", "</think>")
    long_thought = 1.0 if thought is not None and len(thought.strip()) > 1000 else 0.0
    parts = {"format": fmt, "equation": 1.0 if right else 0.0, "thought_length": long_thought}
    return Score(sum(parts.values()), right, fmt > 0, parts)


def score_shaped(completion: str, nums: list[int], target: int) -> Score:
    """Ours: 0.25 for a non-empty last <answer>, +0.25 for the right numbers, +1.0 for the exact
    target. Decimal literals are refused here (``1.5*2`` does not use 1, 5 and 2 honestly)."""
    answer = last_tag_content(completion)
    answer = answer.strip() if answer is not None else ""
    fmt = 0.25 if answer else 0.0
    num = 0.25 if fmt and numbers_ok(answer, nums) else 0.0
    right = bool(num) and evaluate(answer, allow_decimals=False) == target
    parts = {"format": fmt, "numbers": num, "equation": 1.0 if right else 0.0}
    return Score(sum(parts.values()), right, fmt > 0, parts)


def score_think(text: str, nums: list[int], target: int) -> Score:
    """Ours, R1-Zero's two rules: 0.25 for the format (a think part, closed, then a non-empty
    <answer>), +1.0 for the right answer in that place (the given numbers, each once, reaching the
    target; no decimals). ``text`` is the assistant turn from "<think>" on. Nothing is paid for the
    think part's length or words: an empty one (the no-think evaluation's) is in the format."""
    answer = answer_after_think(text)
    answer = answer.strip() if answer is not None else ""
    fmt = 0.25 if answer else 0.0
    right = bool(fmt) and numbers_ok(answer, nums) and evaluate(answer, allow_decimals=False) == target
    parts = {"format": fmt, "equation": 1.0 if right else 0.0}
    return Score(sum(parts.values()), right, fmt > 0, parts)
