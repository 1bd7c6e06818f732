"""Hostile and honest completions for every built-in scorer: the adversarial corpus that the tests
and ``benchmarks/score_fuzz.py`` share.

Everything here is deterministic (no clock, no global random state), so a failure names a case
that can be replayed: ``adversarial_corpus()[i]``.

Countdown cases are built for the example ``nums=[44, 19, 35], target=98`` (``COUNTDOWN_EXAMPLE``)
and GSM8K ones for the gold answer 18 (``GSM8K_EXAMPLE``); every case is scored by every scorer
anyway, since a scorer must survive any text.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Iterator

from r1zero.tasks import Task, get_task

COUNTDOWN_EXAMPLE = {"nums": [44, 19, 35], "target": 98}
GSM8K_EXAMPLE = {"question": "Janet's ducks lay 16 eggs per day...", "answer": "9 * 2 = <<9*2=18>>18\n#### 18"}

# Every built-in scorer: (label, task name, reward scheme, template). Countdown's tinyzero scheme
# reads the last line of prompt + completion, so each template's prefix is a separate path.
SCORERS = [
    ("countdown/tinyzero/base", "countdown", "tinyzero", "base"),
    ("countdown/tinyzero/qwen-instruct", "countdown", "tinyzero", "qwen-instruct"),
    ("countdown/tinyzero/chat-answer", "countdown", "tinyzero", "chat-answer"),
    ("countdown/datawhale", "countdown", "datawhale", "datawhale"),
    ("countdown/shaped/chat", "countdown", "shaped", "chat"),
    ("countdown/shaped/chat-answer", "countdown", "shaped", "chat-answer"),
    ("gsm8k/xml", "gsm8k", "xml", "xml"),
    ("gsm8k/numeric", "gsm8k", "numeric", "xml"),
]


def scorers() -> list[tuple[str, Task, dict]]:
    """(label, task, the example its cases are built for) for every built-in scorer."""
    out = []
    for label, name, reward, template in SCORERS:
        example = COUNTDOWN_EXAMPLE if name == "countdown" else GSM8K_EXAMPLE
        out.append((label, get_task(name, reward=reward, template=template), example))
    return out


@dataclass(frozen=True)
class Case:
    category: str
    completion: str
    # Whether an honest, well-formed and correct answer could be in it (False: it must never be
    # scored correct by a countdown scorer; the payload is an attack or nonsense).
    may_be_correct: bool = False


# ---- payloads, by category -----------------------------------------------------------------------

GOOD = "44 + 19 + 35"

PAYLOADS: dict[str, list[str]] = {
    "exponent_tower": [
        "99**99**99**99", "9**9**9**9**9**9**9**9", "44**19**35", "2**2**2**2**2**2", "(9**9)**9", "10**10**10",
        "9^9^9", "2**-1**-1", "44 + 19 + 35**1", "(44 + 19 + 35)**1", "44 + 19 + 35 + 0**0", "1e9**1e9",
        "pow(9, pow(9, 9))", "44*19*35*" * 30 + "1", "2**64 - 2**64 + 98", "-(-9)**(9**9)",
    ],
    "huge_literal": [
        "9" * 20, "9" * 400, "9" * 5000, "9" * 100_000, "1" + "0" * 4300, "1e308 * 10", "1e999", "0x" + "f" * 64,
        "1_000_000", "98" + "0" * 50 + " / 1" + "0" * 50, "44" * 2000 + " + 19 + 35", "0" * 1000 + "98",
        "44.0000000000000000000001 + 19 + 35", "4" * 300 + " - " + "4" * 300 + " + 98",
    ],
    "deep_nesting": [
        "(" * k + GOOD + ")" * k for k in (10, 100, 300, 1000, 10_000, 100_000)
    ] + [
        "(" * 1000 + GOOD, GOOD + ")" * 1000, "-" * 10_000 + "98", "+-" * 10_000 + "98", "((((((((((", "))))))))",
        "(" * 500 + "44" + ")" * 500 + " + 19 + 35", "[" * 100 + GOOD + "]" * 100, "{" * 100 + "}" * 100,
    ],
    "unicode_digit": [
        "٤٤ + 19 + 35", "４４ + １９ + ３５", "44 + 19 + 3⁵", "44 + 19 + 35²", "४४ + 19 + 35", "𝟒𝟒 + 19 + 35",
        "44 + 19 + 35\u200b", "44 + 19 + ３5", "44 ＋ 19 ＋ 35", "44 − 19 + 35", "½ + 97.5", "Ⅻ + 86",
        "44\u00a0+ 19 + 35", "44 + 19 + 35\u2028", "٤٤+١٩+٣٥", "44 + 19 + 35\U000e0041",
    ],
    "name": [
        "x", "nums", "target", "__builtins__", "True + 97", "None", "inf", "nan", "NaN", "Ellipsis", "_",
        "a + b + c", "forty-four + 19 + 35", "globals()", "__debug__ + 97", "sys.maxsize",
    ],
    "call": [
        "__import__('os').system('touch /tmp/r1zero-pwned')", "open('/etc/passwd').read()", "exit()", "print(98)",
        "int('44') + 19 + 35", "eval('44 + 19 + 35')", "exec('x = 98')", "sum([44, 19, 35])", "abs(-98)",
        "max(44, 19, 35) + 54", "breakpoint()", "input()", "__import__('time').sleep(100)", "98()",
        "getattr(44, '__add__')(54)", "compile('98', '', 'eval')",
    ],
    "attribute": [
        "(44).__add__(19) + 35", "().__class__.__bases__[0].__subclasses__()", "1 .real + 97", "44 .bit_length()",
        "x.y", "(98).numerator", "os.system", "[].append", "98 .__class__", "''.join", "(44).__radd__(54)",
        "type(98)", "98..__class__",
    ],
    "lambda": [
        "(lambda: 44 + 19 + 35)()", "lambda x: x", "(lambda f: f(f))(lambda f: f(f))", "(lambda: 98)",
        "[x for x in (44, 19, 35)]", "(44, 19, 35)", "[44, 19, 35]", "{44: 19}", "44 if 19 else 35",
        "(x := 98)", "44 and 19 or 35", "not 44", "44 == 98", "44 < 19 < 35",
    ],
    "f_string": [
        "f'{44 + 19 + 35}'", "f'{__import__(\"os\").getpid()}'", "f\"{98}\"", "'98'", "\"44\" + \"19\"",
        "b'98'", "r'98'", "'44' * 2", "f'{9**9**9}'", "'''98'''", "u'98'", "rb'98'",
    ],
    "decimal_glue": [
        "4.4 + 19 + 35", "44.19 + 35", "1.5", ".5 + 97.5", "44. + 19 + 35", "4 4 + 19 + 35", "44 + 1.9e1 + 35",
        "44 + 19 + 3.5e1", "44 + 19 + 35.0", "0.44e2 + 19 + 35", "44 + 19 + 35 + 0.0", "44 + 19 + 035",
        "44 + 19 + 3_5", "44 19 35", "44+19+35.", "4.4e1 + 19 + 35",
    ],
    "operators": [
        "44 // 19 * 35", "44 % 19 + 35", "44 @ 19", "44 << 1", "~44", "44 & 19 | 35", "44 / 0", "98 / (19 - 19)",
        "44 + 19 + 35 = 98", "44 + 19 + 35 == 98", "44 + 19 + 35;", "44 + 19 + 35 # comment", "44\\\n+ 19 + 35",
        "44 × 19 ÷ 35", "44 + 19 + 35\n", "44 ++ 19 + 35", "44 + -19 + 35 + 38", "(44 - 19) * 35 / 35 + 73",
    ],
}

# Payloads that are honest arithmetic on the example's numbers: a countdown scorer may find them correct.
HONEST_PAYLOADS = {GOOD, "44 + 19 + 35\n", "44 + 19 + 35.", "44+19+35.", "44 + 19 + 35.0", "44. + 19 + 35",
                   "44 + 19 + 35 + 0.0", "44 + 19 + 35\u2028", "44\u00a0+ 19 + 35", "44 ++ 19 + 35",
                   "44 + 1.9e1 + 35", "44 + 19 + 3.5e1", "0.44e2 + 19 + 35", "4.4e1 + 19 + 35",
                   "44 + 19 + 35\u200b"}

# Where a payload is put in a completion.
WRAPPERS: list[Callable[[str], str]] = [
    lambda p: f"<think>Let me add them.</think>\n<answer>{p}</answer>",
    lambda p: f"<answer>{p}</answer>",
    lambda p: f" x</think>\n<answer> {p} </answer>\n",
    lambda p: p,
    lambda p: f"<answer>{p}</answer> then <answer>44 + 19 + 35</answer>",
    lambda p: f"<think>{p}</think>\n<answer>{p}</answer>",
    lambda p: f"<reasoning>\n{p}\n</reasoning>\n<answer>\n{p}\n</answer>\n",
]

TAG_CASES = [
    "<answer><answer>44 + 19 + 35</answer></answer>",
    "<answer>44 + <answer>19</answer> + 35</answer>",
    "<think><answer></think>44 + 19 + 35</answer>",
    "<think>x</think>\n<answer><think>44 + 19 + 35</think></answer>",
    "</answer><answer>44 + 19 + 35",
    "<answer>44 + 19 + 35</answer></answer></answer>",
    "<answer><answer><answer>",
    "</answer></answer></answer>",
    "<answer>44 + 19 + 35</answe>",
    "<Answer>44 + 19 + 35</Answer>",
    "<answer >44 + 19 + 35</answer >",
    "< answer>44 + 19 + 35</ answer>",
    "<answer>44 + 19 + 35<answer/>",
    "<reasoning><answer>\n18\n</answer></reasoning>",
    "<reasoning>\n<reasoning>\n18\n</reasoning>\n</reasoning>\n<answer>\n18\n</answer>\n",
    "<answer>\n<answer>\n18\n</answer>\n</answer>\n",
    "<think><think></think></think>\n<answer>44 + 19 + 35</answer>",
    "<think>" * 50 + "</think>" * 50 + "\n<answer>44 + 19 + 35</answer>",
    "<answer>" * 50 + GOOD + "</answer>" * 50,
    "<answer>\n44 + 19 + 35\n</answer>",
    "<answer>44 + 19 + 35</answer>\n<answer>",
    "<answer>44 + 19 + 35</answer><|im_end|>",
    "Assistant: <answer>44 + 19 + 35</answer>",
    "<|im_start|>assistant\n<answer>44 + 19 + 35</answer>",
    "<answer>44 + 19 + 35</answer>Assistant:",
    "<answer>#### 18</answer>",
    "#### 18",
    "<reasoning>\n\n</reasoning>\n<answer>\n\n</answer>\n",
]

# Megabyte-long completions: built lazily (they are large), each about 1 MB.
MEGABYTE: list[Callable[[], str]] = [
    lambda: "x" * 1_000_000 + f"<answer>{GOOD}</answer>",
    lambda: "x\n" * 500_000 + f"<answer>{GOOD}</answer>",
    lambda: "<answer>" * 125_000,
    lambda: "<answer>" * 125_000 + "\n" + f"<answer>{GOOD}</answer>",
    lambda: "<think>" * 140_000 + "</think>",
    lambda: "<answer>1</answer>" * 55_000,
    lambda: "<answer>" + "1+" * 500_000 + "1</answer>",
    lambda: "<answer>" + "(" * 500_000 + GOOD + ")" * 500_000 + "</answer>",
    lambda: "<answer>" + "9" * 1_000_000 + "</answer>",
    lambda: "<answer>" + " " * 1_000_000 + GOOD + "</answer>",
    lambda: "\n" * 1_000_000,
    lambda: "<" * 1_000_000,
    lambda: "<answer>\n</answer>\n" * 55_000,
    lambda: "<reasoning>\n" * 80_000 + "</reasoning>\n<answer>\n18\n</answer>\n",
    lambda: "<reasoning>" + "</reasoning> <answer>" * 40_000 + "x\n\t<answer></answer>",
    lambda: "\n<answer>\n" * 100_000,
    lambda: "".join(map(chr, range(32))) * 30_000 + "<answer>\n</answer>",
    lambda: "٤" * 500_000 + "<answer>٤٤ + 19 + 35</answer>",
    lambda: "#### " * 200_000 + "18",
    lambda: ("<think>" + "x" * 1000 + "</think>\n<answer>" + GOOD + "</answer>\n") * 1000,
]

# Bytes that are not valid UTF-8, made into text the ways a decoder can.
_BAD_BYTES = [
    b"\xff\xfe44 + 19 + 35", b"<answer>44 + 19 + \xc3\x28</answer>", b"<answer>\xed\xa0\x80 98</answer>",
    b"<answer>44 + 19 + 35\xf8\x88\x80\x80\x80</answer>", b"\xc0\xaf<answer>44 + 19 + 35</answer>",
    b"<think>\x80\x81\x82</think>\n<answer>44 + 19 + 35</answer>", b"<answer>4\xe24 + 19 + 35</answer>",
    b"<reasoning>\n\xfe\n</reasoning>\n<answer>\n1\xff8\n</answer>\n", b"\x00<answer>\x0044 + 19 + 35</answer>",
    b"<answer>\xef\xbb\xbf44 + 19 + 35</answer>", b"<answer>44\xcc\x81 + 19 + 35</answer>",
]


def invalid_utf8_texts() -> list[str]:
    out = []
    for raw in _BAD_BYTES:
        for errors in ("replace", "surrogateescape", "ignore", "backslashreplace"):
            out.append(raw.decode("utf-8", errors=errors))
        out.append(raw.decode("latin-1"))
    return out


def adversarial_corpus(include_megabyte: bool = True) -> list[Case]:
    """The corpus: every payload in every wrapper, tag tricks, invalid UTF-8 and megabyte texts."""
    cases: list[Case] = []
    for category, payloads in PAYLOADS.items():
        for payload in payloads:
            # Long payloads in two wrappers only: they test length, not placement.
            wrappers = WRAPPERS if len(payload) < 2000 else WRAPPERS[:2]
            for w, wrap in enumerate(wrappers):
                # Wrapper 4 adds a right answer after the payload; parentheses around a right
                # answer are honest arithmetic.
                honest = payload in HONEST_PAYLOADS or w == 4 or category == "deep_nesting"
                cases.append(Case(category, wrap(payload), honest))
    for text in TAG_CASES:
        cases.append(Case("tags_in_tags", text, True))
    for text in invalid_utf8_texts():
        cases.append(Case("invalid_utf8", text, True))
    if include_megabyte:
        for make in MEGABYTE:
            cases.append(Case("megabyte", make(), True))
    return cases


# ---- honest answers ------------------------------------------------------------------------------

_OPS = ["+", "-", "*", "/"]


def _expressions(nums: list[int], rng: random.Random) -> str:
    """A random arithmetic expression using each number once (digits, + - * /, parentheses)."""
    order = nums[:]
    rng.shuffle(order)
    expr = str(order[0])
    for n in order[1:]:
        op = rng.choice(_OPS)
        if rng.random() < 0.4:
            expr = f"({expr}) {op} {n}"
        elif rng.random() < 0.2:
            expr = f"{n} {op} ({expr})"
        else:
            expr = f"{expr} {op} {n}"
    return expr


def honest_countdown(rng: random.Random) -> tuple[str, dict]:
    """A completion shaped like a model's honest answer to a random countdown task, right or wrong."""
    k = rng.choice([3, 4])
    nums = [rng.randint(1, 99) for _ in range(k)]
    expr = _expressions(nums, rng)
    from r1zero.tasks.arithmetic import evaluate

    value = evaluate(expr)
    # Half of the time the target is the expression's value (a right answer), else a nearby one.
    target = int(value) if value is not None and value.denominator == 1 and rng.random() < 0.5 else rng.randint(1, 100)
    think = rng.choice(["", "Let me try " + expr + ".", "x" * rng.randint(0, 1200), "First 1 + 2.\nThen done."])
    shape = rng.randrange(5)
    if shape == 0:
        text = f"{think}</think>\n<answer>{expr}</answer>"
    elif shape == 1:
        text = f"{think}</think>\n<answer> {expr} </answer>"
    elif shape == 2:
        text = f"{think}</think>\n<answer>{expr}</answer>\n"
    elif shape == 3:
        text = f"{expr}</answer>"  # chat-answer: the opening tag is in the prompt
    else:
        text = f"{think} <answer>{_expressions(nums, rng)}</answer> no, <answer>{expr}</answer>"
    return text, {"nums": nums, "target": target}


def honest_gsm8k(rng: random.Random) -> tuple[str, dict]:
    gold = str(rng.randint(0, 5000))
    answer = gold if rng.random() < 0.5 else str(rng.randint(0, 5000))
    if rng.random() < 0.1:
        answer = f"{answer}.0" if rng.random() < 0.5 else f"${answer}"
    reasoning = rng.choice(["16 - 3 - 4 = 9, 9 * 2 = 18.", "Add them.\nThen multiply.", "x" * rng.randint(0, 300)])
    shape = rng.randrange(4)
    if shape == 0:
        text = f"<reasoning>\n{reasoning}\n</reasoning>\n<answer>\n{answer}\n</answer>\n"
    elif shape == 1:
        text = f"<reasoning>{reasoning}</reasoning> <answer>{answer}</answer>"
    elif shape == 2:
        text = f"<reasoning>\n{reasoning}\n</reasoning>\n<answer>\n{answer}\n</answer>"
    else:
        text = f"{reasoning}\nThe answer is {answer}. <answer>{answer}</answer>"
    return text, {"question": "q", "answer": f"work\n#### {gold}"}


def generated_completions(n: int, seed: int = 0) -> Iterator[tuple[str, str, dict, dict]]:
    """``n`` completions for the benchmark: (kind, completion, countdown example, gsm8k example), the
    examples being those the completion answers (or the module's defaults).

    About 45% honest countdown answers, 25% honest gsm8k answers, 30% adversarial: a corpus case,
    mutated (a random slice repeated, a fragment inserted) so that no two are alike. One in a
    thousand is a megabyte-long text.
    """
    rng = random.Random(seed)
    corpus = adversarial_corpus(include_megabyte=False)
    fragments = ["<answer>", "</answer>", "<think>", "</think>", "\n", "**", "(", ")", "٤", "\udcff",
                 "<reasoning>", "</reasoning>", "#### ", "9" * 50, "__import__('os')", "lambda: 1"]
    for i in range(n):
        r = rng.random()
        if r < 0.001:
            yield "megabyte", MEGABYTE[rng.randrange(len(MEGABYTE))](), COUNTDOWN_EXAMPLE, GSM8K_EXAMPLE
        elif r < 0.45:
            text, ex = honest_countdown(rng)
            yield "honest_countdown", text, ex, GSM8K_EXAMPLE
        elif r < 0.70:
            text, ex = honest_gsm8k(rng)
            yield "honest_gsm8k", text, COUNTDOWN_EXAMPLE, ex
        else:
            base = corpus[rng.randrange(len(corpus))].completion
            if len(base) > 4000:
                base = base[:4000]
            a, b = sorted(rng.randrange(len(base) + 1) for _ in range(2))
            text = base[:a] + rng.choice(fragments) * rng.randint(1, 5) + base[a:b] * rng.randint(1, 3) + base[b:]
            yield "adversarial", text, COUNTDOWN_EXAMPLE, GSM8K_EXAMPLE


__all__ = ["Case", "SCORERS", "scorers", "adversarial_corpus", "generated_completions", "honest_countdown",
           "honest_gsm8k", "COUNTDOWN_EXAMPLE", "GSM8K_EXAMPLE", "HONEST_PAYLOADS", "PAYLOADS"]
