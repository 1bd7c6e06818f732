"""GSM8K: grade-school word problems answered in ``<reasoning>``/``<answer>`` tags (docs/REFERENCES.md, "GSM8K").

Data: rows with ``question`` and ``answer``; the gold answer is the text after ``####`` in ``answer``.

Prompt (template ``xml``): the tokenizer's chat template with the reference system prompt and the question
as the user turn, the assistant turn opened and left empty (no prefix).

Reward schemes (five parts each, summed into ``Score.reward``):

- ``xml`` reproduces the GSM8K 0.5B course exactly, quirks included:
  ``correctness`` 2.0 (extracted answer == gold, as strings), ``integer`` 0.5 (``str.isdigit``),
  ``strict_format`` 0.5, ``soft_format`` 0.5, ``xml_count`` (0.125 per tag, minus length penalties).
  Quirks kept on purpose, since they shape what the reference model learned:

  * the two format regexes run without DOTALL, so ``strict_format`` needs the reasoning and the answer
    on one line each, and ``soft_format`` needs ``<reasoning>...</reasoning>`` on the *first* line and
    ``<answer>...</answer>`` on one line: the two can never both pay, so the highest reward is 3.5;
  * ``xml_count`` can go below zero: the ``\\n<answer>\\n`` item subtracts 0.001 per character after the
    last ``\\n</answer>\\n``, which is the whole text when there is none;
  * with no ``<answer>`` tag at all the "extracted answer" is the whole completion, stripped;
  * gold answers are compared verbatim, and 93 of them carry thousands commas (train 79, e.g. ``1,080``;
    test 14), and 5 are negative (``-10``): the ``integer`` part never pays on those.

- ``numeric``: the same five parts, but ``correctness`` compares numbers (``1,000`` = ``1000`` =
  ``1000.0``, ``$18`` = ``18`` = ``18.`` = ``18 dollars``), exactly, with fractions.

A scorer must never raise or hang (a reward that does stops training). The reference's
``soft_format`` regex is quadratic on adversarial text (``<reasoning>`` followed by many
``</reasoning><answer>``: 40k characters take 0.3 s), its strict regex costs 6 ms per MB, and
``str.split`` builds lists; so the checks below are a few ``str.find``/``count`` calls that give the
same verdicts (the tests compare them with the reference on random and edited text) and score a 1 MB
completion in 1-6 ms.
"""
from __future__ import annotations

import re
from fractions import Fraction
from typing import Any, Mapping

from r1zero.data.files import load_rows
from r1zero.tasks.base import Score, Task, TaskError, register_task, render_chat

HUB_ID = "openai/gsm8k"
HUB_CONFIG = "main"

# Verbatim from the course (docs/REFERENCES.md; it is data: the reference model was trained with exactly this text).
SYSTEM_PROMPT = (
    "\nRespond in the following format:\n<reasoning>\n...\n</reasoning>\n<answer>\n...\n</answer>\n"
)

# The reference's format regexes, kept as the definition of the format rewards (re.match, no DOTALL).
# Scoring calls `strict_format_ok` / `soft_format_ok`, which give the same verdicts on any text in
# linear time (see the module docstring); the tests check that they agree with these.
STRICT_FORMAT = re.compile(r"^<reasoning>\n.*?\n</reasoning>\n<answer>\n.*?\n</answer>\n$")
SOFT_FORMAT = re.compile(r"<reasoning>.*?</reasoning>\s*<answer>.*?</answer>")

PART_NAMES = ("correctness", "integer", "strict_format", "soft_format", "xml_count")


# ---- gold answer and extraction ------------------------------------------------------------------
def gold_answer(answer_field: Any) -> str:
    """The gold answer of a GSM8K ``answer`` field: the text after ``####``, stripped.

    Exactly the course's ``extract_hash_answer`` (``text.split("####")[1].strip()``): commas stay
    (``"1,080"``), so the ``xml`` scheme compares against the string as written.
    """
    if not isinstance(answer_field, str) or "####" not in answer_field:
        raise TaskError(
            "gsm8k: the 'answer' field has no '####'; it must end with '#### <final answer>'"
        )
    return answer_field.split("####")[1].strip()


def _gold_or_none(example: Any) -> str | None:
    """The gold answer of an example, or None when it has none (scoring must not raise)."""
    try:
        return gold_answer(example["answer"])
    except (TaskError, KeyError, TypeError, IndexError):
        return None


def extract_answer(text: str) -> str:
    """The text after the last ``<answer>`` and before the next ``</answer>``, stripped.

    Same result as the course's ``text.split("<answer>")[-1].split("</answer>")[0].strip()``
    (``<answer>`` cannot overlap itself, so the last split piece starts after ``rfind``), without
    building a list of pieces.
    """
    start = text.rfind("<answer>")
    start = 0 if start == -1 else start + len("<answer>")
    end = text.find("</answer>", start)
    return text[start:end if end != -1 else len(text)].strip()


def has_answer_tags(text: str) -> bool:
    """Whether the answer sits where the prompt asked: a ``</answer>`` after the last ``<answer>``."""
    start = text.rfind("<answer>")
    return start != -1 and text.find("</answer>", start + len("<answer>")) != -1


def is_digits(text: str) -> bool:
    """``text.isdigit()`` (the reference's integer test, Unicode digits such as ``²`` included).

    ``str.isdigit`` looks every character up in the Unicode tables (2.5 ms for a 1 MB answer); on
    ASCII text (``isascii`` is O(1) in CPython) ``bytes.isdigit`` gives the same verdict ten times faster.
    """
    if text.isascii():
        return text.encode("ascii").isdigit()
    # A run of one repeated character (the cheap way to make a megabyte answer) needs one lookup:
    # ``count`` is a memchr-speed scan, four times faster than the table lookups of ``isdigit``.
    first = text[:1]
    if first and text.count(first) == len(text):
        return first.isdigit()
    return text.isdigit()


def _len_after_last(text: str, sep: str) -> int:
    """``len(text.split(sep)[-1])`` without building the list of pieces.

    ``str.split`` takes matches left to right without overlap. ``"\\n</answer>\\n"`` overlaps itself
    (it starts and ends with ``\\n``), so in ``"\\n</answer>\\n</answer>\\n"`` split takes the first
    match and not the last one that ``rfind`` sees. The matches split takes in a prefix of the text are
    exactly its matches in the whole text that end inside the prefix, so the last occurrence is taken
    iff counting up to its end finds one more match than counting up to one character before.
    """
    limit = len(text)
    while True:
        last = text.rfind(sep, 0, limit)
        if last == -1:
            return len(text)
        end = last + len(sep)
        overlapped = text.find(sep, max(0, last - len(sep) + 1), end - 1) != -1
        if not overlapped or text.count(sep, 0, end) != text.count(sep, 0, end - 1):
            return len(text) - end
        limit = end - 1  # not taken: the last match taken ends before this one does


# ---- format checks (same verdicts as STRICT_FORMAT / SOFT_FORMAT, linear time) -----------------
def strict_format_ok(text: str) -> bool:
    """``STRICT_FORMAT.match(text)``: ``.`` excludes only ``\\n``, so each ``.*?`` is the rest of a
    line, and ``$`` also matches before one final ``\\n``."""
    head, middle, tail = "<reasoning>\n", "\n</reasoning>\n<answer>\n", "\n</answer>\n"
    if not text.startswith(head):
        return False
    newline = text.find("\n", len(head))  # end of the one-line reasoning
    if newline == -1 or not text.startswith(middle, newline):
        return False
    newline = text.find("\n", newline + len(middle))  # end of the one-line answer
    if newline == -1 or not text.startswith(tail, newline):
        return False
    end = newline + len(tail)
    return end == len(text) or (end == len(text) - 1 and text[end] == "\n")


_SAME_LINE_ANSWER = re.compile(r"</reasoning>[^\S\n]*<answer>")  # \s* that stays on the line
_WHITESPACE = re.compile(r"\s*")


def soft_format_ok(text: str) -> bool:
    """``SOFT_FORMAT.match(text)`` in linear time.

    The regex needs ``<reasoning>`` at 0 and a ``</reasoning>`` on the first line (``.*?`` stops at
    ``\\n``), then whitespace (``\\s*`` may cross lines), ``<answer>``, and ``</answer>`` later on that
    line. The regex engine tries every ``</reasoning>`` of the first line and rescans the answer line
    for each (quadratic); but only two of them can matter:

    (a) those followed by ``<answer>`` on the first line: the earliest leaves the most room for the
        ``</answer>``, so if it fails they all fail;
    (b) one whose whitespace runs past the newline: only the last ``</reasoning>`` of the line can be
        followed by nothing but whitespace up to it.
    """
    if not text.startswith("<reasoning>"):
        return False
    start = len("<reasoning>")
    eol = text.find("\n")
    if eol == -1:
        eol = len(text)
    m = _SAME_LINE_ANSWER.search(text, start, eol)
    if m and text.find("</answer>", m.end(), eol) != -1:
        return True
    last = text.rfind("</reasoning>", start, eol)
    if last == -1:
        return False
    k = _WHITESPACE.match(text, last + len("</reasoning>")).end()
    if k <= eol or not text.startswith("<answer>", k):
        return False
    line_end = text.find("\n", k)
    if line_end == -1:
        line_end = len(text)
    return text.find("</answer>", k + len("<answer>"), line_end) != -1


def xml_count(text: str) -> float:
    """The course's ``count_xml``, term by term and in the same order (so the floats are identical)."""
    count = 0.0
    if text.count("<reasoning>\n") == 1:
        count += 0.125
    if text.count("\n</reasoning>\n") == 1:
        count += 0.125
    if text.count("\n<answer>\n") == 1:
        count += 0.125
        count -= _len_after_last(text, "\n</answer>\n") * 0.001
    if text.count("\n</answer>") == 1:
        count += 0.125
        count -= (_len_after_last(text, "\n</answer>") - 1) * 0.001
    return count


# ---- numeric comparison (scheme "numeric") -------------------------------------------------------
_MAX_NUMBER_CHARS = 100  # an answer longer than this is not a number we compare (and int() is bounded)
_THOUSANDS_COMMA = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_NUMBER = re.compile(
    r"(?P<sign>[-+]?)\s*[$€£]?\s*(?P<sign2>[-+]?)"  # "-$10", "$-10", "$ 18"
    r"(?P<num>\d+(?:\.\d*)?|\.\d+)(?:\s*/\s*(?P<den>\d+))?"  # "18", "18.", "18.50", ".5", "3/4"
    r"\s*%?\s*(?P<unit>[a-z]+(?:[ /-][a-z]+)*)?\s*\.?",  # "50%", "18 dollars", "5 km/h", "18."
    re.ASCII | re.IGNORECASE,
)
# A trailing word that scales the number is not a unit: "18 million" is not 18.
_SCALE_WORDS = frozenset(
    "k m mn bn hundred hundreds thousand thousands million millions billion billions "
    "trillion trillions dozen dozens".split()
)


def parse_number(text: Any) -> Fraction | None:
    """The number written in ``text``, exactly, or None.

    Accepts a sign, a currency sign, thousands commas (``1,000``; a comma not followed by exactly
    three digits makes the text unparsable: ``1,5`` is ambiguous), a decimal point (``18.``,
    ``18.0``), a fraction (``3/4``), a percent sign, a trailing full stop and a unit word
    (``18 dollars``). Anything else, and text over 100 characters, is None.
    """
    if not isinstance(text, str) or len(text) > _MAX_NUMBER_CHARS:
        return None
    text = _THOUSANDS_COMMA.sub("", text.strip().replace("\u2212", "-"))
    m = _NUMBER.fullmatch(text)
    if m is None or (m["sign"] and m["sign2"]):
        return None
    unit = (m["unit"] or "").lower()
    if any(word in _SCALE_WORDS for word in re.split(r"[ /-]", unit)):
        return None
    value = Fraction(m["num"])
    if m["den"] is not None:
        if int(m["den"]) == 0:
            return None
        value /= int(m["den"])
    return -value if "-" in (m["sign"] + m["sign2"]) else value


def same_number(answer: str, gold: str | None) -> bool:
    a, g = parse_number(answer), parse_number(gold)
    return a is not None and g is not None and a == g


# ---- the task ------------------------------------------------------------------------------------
def _zero_score() -> Score:
    return Score(reward=0.0, correct=False, formatted=False, parts=dict.fromkeys(PART_NAMES, 0.0))


@register_task("gsm8k")
class GSM8KTask(Task):
    templates = ("xml",)
    reward_schemes = ("xml", "numeric")
    default_template = "xml"
    default_reward = "xml"
    required_fields = ("question", "answer")

    # ---- data -----------------------------------------------------------------------------------
    def load_split(self, split: str, source: str | None = None, config: str | None = None) -> list[dict]:
        """Rows of ``split``: from the hub (``openai/gsm8k``, config ``main`` unless given) when
        ``source`` is None, else from a local file or folder (or another hub id); a source that cannot
        be read raises DataError. Bad rows raise TaskError naming the row and the fix."""
        source = source or HUB_ID
        if source == HUB_ID and config is None:
            config = HUB_CONFIG  # the hub dataset has two configs ("main", "socratic") and needs one
        rows = load_rows(source, split, config)
        where = f"{source} ({split})"
        for i, row in enumerate(rows, 1):  # counted from 1, as file lines are
            self.check_example(row, where=f"{where} row {i}")
            answer = row["answer"]
            if not isinstance(answer, str) or "####" not in answer:
                raise TaskError(
                    f"{where} row {i}: field 'answer' has no '####'; GSM8K answers end with "
                    "'#### <final answer>': fix or remove that row"
                )
            if not answer.split("####")[1].strip():
                raise TaskError(
                    f"{where} row {i}: nothing after '####' in field 'answer'; write the final "
                    "answer after it or remove that row"
                )
            if not isinstance(row["question"], str):
                raise TaskError(f"{where} row {i}: field 'question' must be text; fix that row")
        return rows

    # ---- prompt ---------------------------------------------------------------------------------
    @property
    def prompt_is_chat(self) -> bool:
        return True

    def messages(self, example: Mapping[str, Any]) -> list[dict]:
        return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": example["question"]}]

    def render_prompt(self, example: Mapping[str, Any], tokenizer: Any = None) -> str:
        return render_chat(tokenizer, self.messages(example), "gsm8k")

    # ---- reward ---------------------------------------------------------------------------------
    def score(self, completion: str, example: Mapping[str, Any]) -> Score:
        if not isinstance(completion, str):
            return _zero_score()
        gold = _gold_or_none(example)
        answer = extract_answer(completion)
        if self.reward_scheme == "numeric":
            right = same_number(answer, gold)
        else:
            right = gold is not None and answer == gold
        parts = {
            "correctness": 2.0 if right else 0.0,
            "integer": 0.5 if is_digits(answer) else 0.0,
            "strict_format": 0.5 if strict_format_ok(completion) else 0.0,
            "soft_format": 0.5 if soft_format_ok(completion) else 0.0,
            "xml_count": xml_count(completion),
        }
        return Score(
            reward=sum(parts.values()),
            correct=parts["correctness"] > 0,
            formatted=has_answer_tags(completion),
            parts=parts,
        )
