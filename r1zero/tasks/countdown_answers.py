"""Countdown's answer extraction: the reference scorers' regexes, re-implemented in linear time.

``re`` with ``<answer>(.*?)</answer>`` is quadratic on a line of many ``<answer>`` openers, so the
extraction uses ``str.find`` (and one linear regex); tests check each function against the regex it
replaces.
"""
from __future__ import annotations

import re
import sys

from r1zero.tasks.arithmetic import MAX_EXPR_CHARS, uses_exactly


# ---- answer extraction (the reference regexes, linear time) -------------------------------------


def last_tag_content(text: str, open_tag: str = "<answer>", close_tag: str = "</answer>") -> str | None:
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


def answer_after_think(text: str) -> str | None:
    """The last ``<answer>`` content after the first ``</think>`` of an assistant turn that opens with
    ``<think>`` (R1-Zero's layout); None when the turn does not open so, never closes the think part
    or has no answer after it. Linear, like last_tag_content."""
    close = text.find("</think>") if text.startswith("<think>") else -1
    return last_tag_content(text[close + len("</think>"):]) if close >= 0 else None


def first_tag_content_one_line(text: str, open_tag: str, close_tag: str) -> str | None:
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


def datawhale_format_ok(text: str) -> bool:
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


def last_line(prefix: str, completion: str) -> str:
    """Last line of ``prefix + completion`` without copying a long completion."""
    cut = completion.rfind("\n")
    if cut >= 0:
        return completion[cut + 1 :]
    return prefix[prefix.rfind("\n") + 1 :] + completion


def numbers_ok(answer: str, nums: list[int]) -> bool:
    # An answer longer than any evaluable expression fails here without a scan; in the reference
    # schemes it would fail evaluation next anyway, so the verdict is unchanged and the cost bounded.
    return len(answer) <= MAX_EXPR_CHARS and uses_exactly(answer, nums)


