"""A safe evaluator for Countdown answers: ``+ - * /``, parentheses and number literals.

The reference scorers (TinyZero, Datawhale-R1) filter the answer with ``^[\\d+\\-*/().\\s]+$`` and
then call Python's ``eval`` on it. The filter lets ``**`` through, so ``99**99**99**99`` hangs the
reward, and ``eval`` of model text is a bad idea anyway. This module never runs model text: it is a
hand-written tokenizer plus a recursive-descent parser computing with exact ``Fraction`` values,
and every input is bounded (length, token count, nesting, literal size) before any work is done, so
a call costs microseconds whatever the input (a megabyte-long string is refused by its length).

Grammar (Python's own precedence and associativity for these operators)::

    expr   := term (('+' | '-') term)*
    term   := factor (('*' | '/') factor)*
    factor := ('+' | '-') factor | '(' expr ')' | NUMBER
    NUMBER := DIGITS ['.' [DIGITS]] | '.' DIGITS          (ASCII digits 0-9 only)

Where the reference ``eval`` and this evaluator agree, and where they differ on purpose:

- Same verdict on every input the reference filter accepts except the two operators that are not
  in the game: ``**`` and ``//`` are refused here (not evaluable) where ``eval`` computes them.
- Decimal literals are read exactly (``1.5`` is 3/2), as ``eval`` reads them. For nums [1, 5, 2]
  the answer ``1.5*2`` holds the integers 1, 5, 2 (``re.findall(r"\\d+")``) and is 3, so the
  reference scorers give it full marks: a reward hack ("decimal glue"). ``allow_glue=False`` (the
  reference schemes' default; ``reference_quirks`` turns it off) refuses every literal that reads a
  given number as another value: digits after the point (``1.5`` glues 1 and 5, ``3.0`` swallows
  a 0) or none before it (``.5`` is not 5). ``2.`` is still 2. Our own ``shaped`` scheme passes
  ``allow_decimals=False`` and refuses every decimal point.
- Python rejects integer literals with leading zeros (``05``; ``00`` and ``05.5`` are fine); so do
  we, so that ``05 + 10`` gets the reference's verdict (not evaluable).
- Whitespace: space, tab and form feed anywhere; CR/LF only inside parentheses (as in ``eval``).
- Unicode digits (``'²'.isdigit()`` is True, ``'٣'`` matches ``\\d``) are refused; ``eval`` refuses
  them too, so the verdicts agree.
- Inputs over the bounds below are refused. ``eval`` would accept, e.g., 150 nested parentheses;
  no honest Countdown answer comes near these bounds.
"""
from __future__ import annotations

import re
from fractions import Fraction
from typing import Iterable

MAX_EXPR_CHARS = 1000  # longer text is refused before it is even scanned
MAX_TOKENS = 256
MAX_DEPTH = 100  # nesting of parentheses and unary signs; keeps recursion far from Python's limit
MAX_LITERAL_CHARS = 40  # one number literal, digits and point included

# Python refuses to convert digit strings longer than this to int (sys.get_int_max_str_digits()),
# so the reference's number check fails on such runs; numbers_in mirrors that.
_INT_MAX_STR_DIGITS = 4300

_DIGITS = frozenset("0123456789")
_BLANKS = frozenset(" \t\f")
_NEWLINES = frozenset("\r\n")
_OPERATORS = frozenset("+-*/()")
_ASCII_RUN = re.compile(r"[0-9]+")


class _Invalid(Exception):
    """Internal: the text is not an expression we evaluate (caught in evaluate)."""


def _tokenize(expr: str, allow_decimals: bool, allow_glue: bool) -> list:
    """Tokens: ``Fraction`` for numbers, one-character strings for operators and parentheses."""
    tokens: list = []
    depth = 0  # parentheses open so far, only to know where a newline is allowed
    i, n = 0, len(expr)
    while i < n:
        c = expr[i]
        if c in _BLANKS:
            i += 1
            continue
        if c in _NEWLINES:
            if depth <= 0:  # eval: a newline outside brackets ends the expression -> SyntaxError
                raise _Invalid
            i += 1
            continue
        if c in _DIGITS or c == ".":
            j = i
            while j < n and expr[j] in _DIGITS:
                j += 1
            int_part = expr[i:j]
            frac_part = None
            if j < n and expr[j] == ".":
                k = j + 1
                while k < n and expr[k] in _DIGITS:
                    k += 1
                frac_part = expr[j + 1 : k]
                j = k
            if j - i > MAX_LITERAL_CHARS:
                raise _Invalid
            if frac_part is None:
                # Python: "05" is a SyntaxError, "0" and "000" are fine.
                if len(int_part) > 1 and int_part[0] == "0" and int_part.strip("0"):
                    raise _Invalid
                tokens.append(Fraction(int(int_part)))
            else:
                if not allow_decimals or not (int_part or frac_part):  # a lone "." is not a number
                    raise _Invalid
                if not allow_glue and (frac_part or not int_part):  # "1.5", "3.0", ".5": not the numbers given
                    raise _Invalid
                scale = 10 ** len(frac_part)
                tokens.append(Fraction(int(int_part or "0") * scale + int(frac_part or "0"), scale))
            i = j
        elif c in _OPERATORS:
            if c == "(":
                depth += 1
            elif c == ")":
                depth -= 1
            tokens.append(c)
            i += 1
        else:  # letters, '_', ',', '[', unicode digits, '**' is caught by the parser...
            raise _Invalid
        if len(tokens) > MAX_TOKENS:
            raise _Invalid
    return tokens


class _Parser:
    """Recursive descent over the token list; ``depth`` bounds the recursion."""

    def __init__(self, tokens: list):
        self.tokens = tokens
        self.pos = 0
        self.depth = 0

    def peek(self):
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self):
        tok = self.peek()
        self.pos += 1
        return tok

    def parse(self) -> Fraction:
        value = self.expr()
        if self.pos != len(self.tokens):  # trailing tokens: "1 2", "(1)(2)", "1)"
            raise _Invalid
        return value

    def expr(self) -> Fraction:
        value = self.term()
        while self.peek() in ("+", "-"):
            if self.take() == "+":
                value = value + self.term()
            else:
                value = value - self.term()
        return value

    def term(self) -> Fraction:
        value = self.factor()
        while self.peek() in ("*", "/"):
            # "**" and "//" arrive as two operator tokens in a row: the second one is not a factor,
            # so they fail here, as intended.
            if self.take() == "*":
                value = value * self.factor()
            else:
                divisor = self.factor()
                if divisor == 0:
                    raise _Invalid
                value = value / divisor
        return value

    def factor(self) -> Fraction:
        tok = self.take()
        if isinstance(tok, Fraction):
            return tok
        if tok in ("+", "-", "("):
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise _Invalid
            if tok == "(":
                value = self.expr()
                if self.take() != ")":
                    raise _Invalid
            else:
                value = self.factor()
                if tok == "-":
                    value = -value
            self.depth -= 1
            return value
        raise _Invalid  # None (end of input), ")", "*", "/"


def evaluate(expr: str, *, allow_decimals: bool = True, allow_glue: bool = True) -> Fraction | None:
    """The exact value of ``expr``, or None when it is not an evaluable arithmetic expression.

    Never raises, never runs code; refuses anything over the module's bounds before scanning it.
    ``allow_decimals=False`` refuses literals with a decimal point (``1.5``, ``2.``);
    ``allow_glue=False`` only those with digits after the point or none before it (``1.5``, ``3.0``,
    ``.5``: decimal glue, see the module docstring), so ``2.`` stays 2.
    """
    if not isinstance(expr, str) or len(expr) > MAX_EXPR_CHARS:
        return None
    try:
        tokens = _tokenize(expr, allow_decimals, allow_glue)
        if not tokens:
            return None
        return _Parser(tokens).parse()
    except (_Invalid, RecursionError, ValueError, ZeroDivisionError, OverflowError, MemoryError):
        return None


def numbers_in(expr: str) -> list[int] | None:
    """The integers written in ``expr``, as the reference reads them: ``re.findall(r"\\d+")``.

    ``1.5*2`` -> [1, 5, 2]; ``05`` -> [5]. Only ASCII digits count (the reference's ``\\d`` also
    matches other scripts' digits, but such answers never evaluate there, so every verdict is the
    same). Returns None when a digit run is too long for ``int()`` (over 4300 digits), where the
    reference's conversion raises and its number check fails. Linear in ``len(expr)``.
    """
    if not isinstance(expr, str):
        return None
    runs = _ASCII_RUN.findall(expr)
    if any(len(r) > _INT_MAX_STR_DIGITS for r in runs):
        return None
    return [int(r) for r in runs]


def uses_exactly(expr: str, nums: Iterable[int]) -> bool:
    """Whether the integers in ``expr`` (see numbers_in), sorted, equal ``nums`` sorted.

    Stops scanning as soon as there are more numbers than ``nums``, so a long text costs little
    unless it is mostly digits-free; callers with untrusted megabyte texts should bound the length
    first (every evaluable expression is at most MAX_EXPR_CHARS long).
    """
    if not isinstance(expr, str):
        return False
    want = sorted(int(v) for v in nums)
    found: list[int] = []
    for m in _ASCII_RUN.finditer(expr):
        if len(found) == len(want):
            return False  # one number too many
        run = m.group()
        if len(run) > _INT_MAX_STR_DIGITS:
            return False
        found.append(int(run))
    return sorted(found) == want


def within_tolerance(value: Fraction | None, target: int | float, tol: float = 1e-5) -> bool:
    """The reference's test ``abs(result - target) < 1e-5``, done in floats like the reference.

    Converting the exact value to float first (rather than comparing exactly with 1e-5) keeps the
    verdict of boundary answers such as ``1.00001`` for target 1 identical to ``eval``'s.
    """
    if value is None:
        return False
    try:
        return abs(float(value) - target) < tol
    except (OverflowError, TypeError, ValueError):  # a value too large for a float is not the target
        return False
