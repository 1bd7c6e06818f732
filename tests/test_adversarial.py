"""Every built-in scorer against the adversarial corpus (tests/adversarial_corpus.py, more than 1,000
cases) and property-based text: never raises, never runs code (no exec/compile/open/import/os/subprocess
audit event while scoring), each call under 10 ms, always a value of the scheme, hostile answers
never correct, and the reference verdict on every honest answer (the reference scorers, with
`eval`, are in tests/test_countdown.py and tests/test_gsm8k.py)."""
import math
import re
import sys
import time
from fractions import Fraction
from pathlib import Path

import adversarial_corpus as corpus
import pytest
from conftest import REPO
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_countdown import _ref_numbers_ok, ref_datawhale, ref_tinyzero
from test_gsm8k import ref_count_xml, ref_extract

from r1zero.tasks import countdown as cd
from r1zero.tasks import countdown_answers as answers
from r1zero.tasks.gsm8k import SOFT_FORMAT, STRICT_FORMAT

CORPUS = corpus.adversarial_corpus()
SCORERS = {label: (task, example) for label, task, example in corpus.scorers()}
SENTINEL = Path("/tmp/r1zero-pwned")

# ---- "never runs code": Python's audit hooks see every exec, compile, open, import, os.* and
# subprocess call; a scorer must trigger none of them. While armed the hook also blocks the call (an
# exception raised in an audit hook aborts the operation), so a scorer that tried would not get to
# run the code, and the event is recorded even if the scorer catches the exception.
_armed = False
_events: list[str] = []


class AuditBlocked(BaseException):
    """Raised by the hook; a BaseException, so a scorer's ``except Exception`` does not swallow it."""
_WATCHED = ("exec", "compile", "open", "import", "builtins.input", "builtins.breakpoint", "marshal.loads",
            "pickle.find_class", "ctypes.dlopen", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
            "os.fork", "os.remove", "os.kill", "subprocess.Popen", "socket.connect", "shutil.rmtree",
            "code.__new__", "function.__new__", "object.__setattr__", "sys._getframe")


def _audit(event, args):
    if _armed and event.startswith(_WATCHED):
        _events.append(event)
        raise AuditBlocked(f"blocked while scoring: {event}")


sys.addaudithook(_audit)  # permanent for the process, inert unless armed


def score_checked(task, completion, example):
    """Score once with the audit hook armed; the time of a call over 10 ms is re-measured (best of
    7, as in test_countdown.py) so that a busy shared machine does not fail the test, a slow scorer
    still does."""
    global _armed
    _armed = True
    try:
        t0 = time.perf_counter()
        s = task.score(completion, example)
        best = time.perf_counter() - t0
        for _ in range(6):
            if best < 0.010:
                break
            t0 = time.perf_counter()
            task.score(completion, example)
            best = min(best, time.perf_counter() - t0)
    finally:
        _armed = False
    assert not _events, f"scoring triggered {sorted(set(_events))}"
    assert best < 0.010, f"{best * 1e3:.1f} ms for {completion[:80]!r}"
    assert isinstance(s.reward, float) and math.isfinite(s.reward)
    if task.name == "countdown":
        assert s.reward in cd.REWARD_VALUES[task.reward_scheme]
    else:
        assert -0.002 * len(completion) - 1e-9 <= s.reward <= 3.5 + 1e-9
    return s


class _EvalScorer:
    """A positive control: a scorer that evaluates the answer with Python's eval, as the reference
    scorers do. The hook must catch it and stop the code from running."""

    name = "eval-control"

    def score(self, completion, example):
        eval(completion)  # noqa: S307 - the point of the control
        raise AssertionError("eval ran")


def test_the_audit_hook_blocks_a_scorer_that_calls_eval():
    SENTINEL.unlink(missing_ok=True)
    attack = f"__import__('pathlib').Path('{SENTINEL}').touch()"
    try:
        with pytest.raises(AuditBlocked, match="blocked while scoring: (compile|exec)"):
            score_checked(_EvalScorer(), attack, {})
        assert _events and set(_events) <= {"compile", "exec"}, _events
    finally:
        _events.clear()
    assert not SENTINEL.exists()  # blocked before the code ran
    eval(attack)  # unarmed, the same call does run: the control's payload is live
    assert SENTINEL.exists()
    SENTINEL.unlink()


def test_corpus_is_large_deterministic_and_covers_every_category():
    assert len(CORPUS) >= 1000
    assert {c.category for c in CORPUS} == set(corpus.PAYLOADS) | {"tags_in_tags", "invalid_utf8", "megabyte"}
    assert sum(c.category == "megabyte" and len(c.completion) >= 500_000 for c in CORPUS) == len(corpus.MEGABYTE)
    assert corpus.adversarial_corpus() == CORPUS
    assert any("\udcff" in c.completion for c in CORPUS)  # undecodable bytes kept as lone surrogates


@pytest.mark.parametrize("label", sorted(SCORERS))
def test_every_corpus_case_is_scored_safely_and_fast(label):
    task, example = SCORERS[label]
    SENTINEL.unlink(missing_ok=True)
    correct = []
    for i, case in enumerate(CORPUS):
        s = score_checked(task, case.completion, example)
        if s.correct and not case.may_be_correct:
            correct.append((i, case.completion[:80]))
    assert not correct, f"hostile answers scored correct: {correct[:5]}"
    assert not SENTINEL.exists()


def test_hostile_answers_alone_never_score_correct():
    """The payload as the only answer, in the place every countdown scheme reads it."""
    for category, payloads in corpus.PAYLOADS.items():
        for p in payloads:
            if p in corpus.HONEST_PAYLOADS or category == "deep_nesting":
                continue
            for label in ("countdown/tinyzero/base", "countdown/datawhale", "countdown/shaped/chat"):
                task, example = SCORERS[label]
                assert not task.score(f"x</think>\n<answer>{p}</answer>", example).correct, (label, p)


# ---- property-based: any text, every scorer -------------------------------------------------------

PIECES = ["<answer>", "</answer>", "<think>", "</think>", "<reasoning>", "</reasoning>", "\n", " ", "44", "19",
          "35", "18", "+", "*", "**", "/", "//", "(", ")", ".", "e9", "٤", "４", "\udcff", "__import__('os')",
          "lambda: 1", "f'{1}'", "9" * 50, "Assistant:", "#### ", "<|im_start|>assistant"]
any_text = st.one_of(st.text(max_size=300), st.lists(st.sampled_from(PIECES), max_size=40).map("".join),
                     st.builds(lambda a, p, b: a + p + b, st.text(max_size=20),
                               st.sampled_from([c.completion for c in CORPUS if len(c.completion) < 5000]),
                               st.text(max_size=20)))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=any_text)
def test_any_text_every_scorer(text):
    for label, (task, example) in SCORERS.items():
        score_checked(task, text, example)


# ---- honest answers: the reference verdict -------------------------------------------------------

def _fraction_eval(expr):
    """The exact value of an arithmetic expression (digits, + - * /, parentheses, spaces), by Python
    on Fractions; None for anything else."""
    if not re.fullmatch(r"[0-9+\-*/() ]+", expr):
        return None
    try:
        return eval(re.sub(r"\d+", lambda m: f"Fraction({m.group()})", expr), {"Fraction": Fraction})  # noqa: S307
    except (ZeroDivisionError, SyntaxError):
        return None


def ref_shaped(completion, nums, target):
    """Ours (no external reference): last <answer>, right numbers, exact value."""
    found = re.findall(r"<answer>(.*?)</answer>", completion, re.DOTALL)
    answer = found[-1].strip() if found else ""
    fmt = 0.25 if answer else 0.0
    # An answer longer than any evaluable expression (1000 characters) does not get the numbers part.
    num = 0.25 if fmt and len(answer) <= 1000 and _ref_numbers_ok(answer, nums) else 0.0
    right = bool(num) and _fraction_eval(answer) == target
    return {"format": fmt, "numbers": num, "equation": 1.0 if right else 0.0}


def ref_gsm8k(completion, gold, numeric):
    answer = ref_extract(completion)
    if numeric:
        def num(s):
            try:
                return Fraction(s.replace(",", "").replace("$", ""))
            except (ValueError, ZeroDivisionError):
                return None
        right = num(answer) is not None and num(answer) == num(gold)
    else:
        right = answer == gold
    return {"correctness": 2.0 if right else 0.0, "integer": 0.5 if answer.isdigit() else 0.0,
            "strict_format": 0.5 if STRICT_FORMAT.match(completion) else 0.0,
            "soft_format": 0.5 if SOFT_FORMAT.match(completion) else 0.0, "xml_count": ref_count_xml(completion)}


@settings(max_examples=400, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_honest_countdown_answers_get_the_reference_verdict(seed):
    import random

    completion, ex = corpus.honest_countdown(random.Random(seed))
    nums, target = ex["nums"], ex["target"]
    numbers = str(nums)
    base = cd.BASE_TEMPLATE.format(numbers=numbers, target=target)
    qwen = cd.QWEN_INSTRUCT_TEMPLATE.format(numbers=numbers, target=target)
    s = {label: score_checked(SCORERS[label][0], completion, ex) for label in SCORERS if label.startswith("countdown")}
    assert s["countdown/tinyzero/base"].reward == ref_tinyzero(base + completion, nums, target)
    assert s["countdown/tinyzero/qwen-instruct"].reward == ref_tinyzero(qwen + completion, nums, target)
    # chat-answer: the chat prompt ends with the assistant marker and the prefilled "<answer>"
    assert s["countdown/tinyzero/chat-answer"].reward == ref_tinyzero(
        "<|im_start|>assistant\n<answer>" + completion, nums, target)
    assert s["countdown/datawhale"].parts == ref_datawhale(completion, nums, target)
    assert s["countdown/shaped/chat"].parts == ref_shaped(completion, nums, target)
    assert s["countdown/shaped/chat-answer"].parts == ref_shaped("<answer>" + completion, nums, target)


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_honest_gsm8k_answers_get_the_reference_verdict(seed):
    import random

    completion, ex = corpus.honest_gsm8k(random.Random(seed))
    gold = ex["answer"].split("####")[1].strip()
    for label, numeric in (("gsm8k/xml", False), ("gsm8k/numeric", True)):
        parts = score_checked(SCORERS[label][0], completion, ex).parts
        ref = ref_gsm8k(completion, gold, numeric)
        assert parts.keys() == ref.keys()
        for k in ref:
            assert parts[k] == pytest.approx(ref[k], abs=1e-12), (label, k, completion)


def test_score_fuzz_benchmark_smoke(capsys):
    """benchmarks/score_fuzz.py at toy size: runs, no exceptions, the exact last-line format."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("score_fuzz", REPO / "benchmarks" / "score_fuzz.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--n", "1500", "--seed", "3"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    m = re.fullmatch(r"p99_ms=(\d+\.\d+) max_ms=(\d+\.\d+) exceptions=(\d+)", last)
    assert m, last
    assert int(m.group(3)) == 0 and float(m.group(1)) <= float(m.group(2))


TAG_PIECES = ["<answer>", "</answer>", "\n", "<", "x", " ", "answer>", "/", "1", "<think>", "</think>", "<answe"]


@settings(max_examples=600, deadline=None)
@given(st.lists(st.sampled_from(TAG_PIECES), max_size=80).map("".join))
def test_first_tag_searches_match_the_reference_regex(text):
    """The three linear searches behind `re.search(r"<answer>(.*?)</answer>", text)` (without
    DOTALL: the match stays on one line) give its group, including the fallbacks that only long
    texts with many tags across lines reach."""
    m = re.search(r"<answer>(.*?)</answer>", text)
    want = m.group(1) if m else None
    assert answers.first_tag_content_one_line(text, "<answer>", "</answer>") == want
    assert answers._first_match_by_markers(text, "<answer>", "</answer>") == want
    if answers._POSSESSIVE:
        assert answers._first_match_possessive(text, "<answer>", "</answer>") == want
    m = re.search(r"<think>(.*?)</think>", text)
    assert answers.first_tag_content_one_line(text, "<think>", "</think>") == (m.group(1) if m else None)
