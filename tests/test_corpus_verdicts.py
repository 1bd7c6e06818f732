"""The verdict on every case of the adversarial corpus (tests/adversarial_corpus.py, 1,220 texts) under every
built-in scorer: the reference scorers' (TinyZero's and Datawhale-R1's code reduced to its logic, in
tests/test_countdown.py; the GSM8K course's, in tests/test_gsm8k.py; our own shaped scheme as its
docstring says), with the deviations r1zero documents in r1zero/tasks/arithmetic.py applied: ``**``
and ``//`` are refused and an answer over 1,000 characters is not evaluated (the reference's
``eval`` would hang or run for minutes on ``99**99**99**99``).

test_adversarial.py checks that no hostile case is ever scored correct; this file gives every case,
hostile or not, its exact reward (parts included). The only cases without a reference verdict are
in HAND below: megabyte texts on which a reference regex is quadratic (hours); each has the verdict
worked out by hand, with the reason.
"""
import re

import adversarial_corpus as corpus
import pytest
import test_countdown
from test_adversarial import _fraction_eval, ref_gsm8k
from test_countdown import ref_datawhale, ref_tinyzero

from r1zero.tasks import countdown as cd

CORPUS = corpus.adversarial_corpus()
SCORERS = {label: (task, example) for label, task, example in corpus.scorers()}
NUMS, TARGET = corpus.COUNTDOWN_EXAMPLE["nums"], corpus.COUNTDOWN_EXAMPLE["target"]
GOLD = "18"
PREFIX = {  # what the TinyZero scorer sees before the completion, per template
    "countdown/tinyzero/base": cd.BASE_TEMPLATE.format(numbers=str(NUMS), target=TARGET),
    "countdown/tinyzero/qwen-instruct": cd.QWEN_INSTRUCT_TEMPLATE.format(numbers=str(NUMS), target=TARGET),
    "countdown/tinyzero/chat-answer": "<|im_start|>assistant\n<answer>",
}
_real_eval = eval


def documented_eval(expr, *args):
    """The reference's eval, with r1zero's documented refusals (arithmetic.py) in front of it."""
    if "**" in expr or "//" in expr or len(expr) > 1000:
        raise ValueError("refused by r1zero on purpose")
    return _real_eval(expr, *args)


def ref_shaped(completion):
    """Our shaped scheme: last <answer>, the given numbers (ASCII digits, as numbers_in documents),
    the exact value (Fractions)."""
    found = re.findall(r"<answer>(.*?)</answer>", completion, re.DOTALL)
    answer = found[-1].strip() if found else ""
    fmt = 0.25 if answer else 0.0
    ascii_nums = sorted(int(n) for n in re.findall(r"[0-9]+", answer)) if len(answer) <= 1000 else None
    num = 0.25 if fmt and ascii_nums == sorted(NUMS) else 0.0
    right = bool(num) and "**" not in answer and "//" not in answer and _fraction_eval(answer) == TARGET
    return {"format": fmt, "numbers": num, "equation": 1.0 if right else 0.0}


def reference(label, completion):
    if label in PREFIX:
        return ref_tinyzero(PREFIX[label] + completion, NUMS, TARGET)
    if label == "countdown/datawhale":
        return ref_datawhale(completion, NUMS, TARGET)
    if label == "countdown/shaped/chat":
        return ref_shaped(completion)
    if label == "countdown/shaped/chat-answer":
        return ref_shaped("<answer>" + completion)
    return ref_gsm8k(completion, GOLD, label == "gsm8k/numeric")


ZERO_CD = {"countdown/tinyzero/base": 0.0, "countdown/tinyzero/qwen-instruct": 0.0,
           "countdown/tinyzero/chat-answer": 0.0,
           "countdown/datawhale": {"format": 0.0, "equation": 0.0, "thought_length": 0.0},
           "countdown/shaped/chat": {"format": 0.0, "numbers": 0.0, "equation": 0.0},
           "countdown/shaped/chat-answer": {"format": 0.0, "numbers": 0.0, "equation": 0.0}}
ZERO_GSM = {"correctness": 0.0, "integer": 0.0, "strict_format": 0.0, "soft_format": 0.0, "xml_count": 0.0}
# corpus.MEGABYTE index -> {scorer: verdict worked out by hand}, where a reference regex is quadratic.
HAND = {
    # "<answer>" x 125,000: no closing tag anywhere, so no scheme finds an answer; every
    # `<answer>(.*?)</answer>` search restarts at each of the 125,000 openings.
    2: ZERO_CD,
    # The same, then "\n<answer>44 + 19 + 35</answer>": Datawhale's first one-line <answer>...</answer>
    # is the right equation on the last line; no </think>, so no format and no thought.
    3: {"countdown/datawhale": {"format": 0.0, "equation": 1.0, "thought_length": 0.0}},
    # "<reasoning>" + "</reasoning> <answer>" x 40,000 + "x\n\t<answer></answer>": the only one-line
    # <answer>...</answer> is empty (Datawhale: no equation; GSM8K: empty answer, 0 for 18, not an
    # integer); no "\n" before any tag and no closing answer tag on the first line, so neither
    # format regex matches and no xml_count pattern occurs.
    14: {"countdown/datawhale": ZERO_CD["countdown/datawhale"], "gsm8k/xml": ZERO_GSM, "gsm8k/numeric": ZERO_GSM},
    # "\n<answer>\n" x 100,000: no closing tag, so the shaped scheme finds no answer.
    15: {k: ZERO_CD[k] for k in ("countdown/shaped/chat", "countdown/shaped/chat-answer")},
}
FIRST_MEGABYTE = next(i for i, c in enumerate(CORPUS) if c.category == "megabyte")


def test_the_hand_verdicts_name_megabyte_cases():
    assert len(CORPUS) - FIRST_MEGABYTE == len(corpus.MEGABYTE)
    assert all(CORPUS[FIRST_MEGABYTE + k].completion == corpus.MEGABYTE[k]() for k in HAND)
    assert CORPUS[FIRST_MEGABYTE + 2].completion == "<answer>" * 125_000


@pytest.mark.parametrize("label", sorted(SCORERS))
def test_every_corpus_case_gets_the_reference_verdict(label, monkeypatch):
    monkeypatch.setattr(test_countdown, "eval", documented_eval, raising=False)  # the references' eval
    task, example = SCORERS[label]
    wrong, by_hand = [], 0
    for i, case in enumerate(CORPUS):
        s = task.score(case.completion, example)
        got = s.reward if label in PREFIX else s.parts
        hand = HAND.get(i - FIRST_MEGABYTE, {}) if i >= FIRST_MEGABYTE else {}
        if label in hand:
            want = hand[label]
            by_hand += 1
        else:
            want = reference(label, case.completion)
        if label.startswith("gsm8k"):
            same = got.keys() == want.keys() and all(got[k] == pytest.approx(want[k], abs=1e-12) for k in want)
        else:
            same = got == want
        if not same:
            wrong.append((i, case.category, case.completion[:80], got, want))
    assert not wrong, f"{len(wrong)} cases differ from the reference, e.g. {wrong[:3]}"
    assert by_hand == sum(label in h for h in HAND.values())
