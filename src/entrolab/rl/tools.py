"""A calculator tool for multi-turn tool-use rollouts: the ``<tool>expr</tool>`` text protocol and a
safe arithmetic evaluator (a tiny recursive-descent parser over exact fractions — model text is
never passed to ``eval``).

Protocol: the model writes ``<tool>EXPR</tool>``; the environment appends
``<result>VALUE</result>`` (or ``<result>error: …</result>`` for a malformed or failing call) and
the model continues. A reply without a tool call ends the episode.

Grammar (whitespace ignored)::

    expr   := term (("+" | "-") term)*
    term   := unary (("*" | "/" | "//" | "%") unary)*
    unary  := ("+" | "-") unary | power
    power  := atom ("**" unary)?            # right-associative
    atom   := NUMBER | "(" expr ")"         # NUMBER: digits with an optional ".digits"

Bounds (each violation is an error message to the model, never an exception out of the
rollout): expression length ``MAX_CHARS``, nesting depth ``MAX_DEPTH`` (recursion), number of
operations ``MAX_OPS``, integer exponents with ``|e| <= MAX_EXPONENT``, operands and results with
at most ``MAX_DIGITS`` digits in numerator and denominator, and a wall-clock budget ``MAX_SECONDS``.
"""

from __future__ import annotations

import re
import time
from fractions import Fraction

from entrolab.errors import EntrolabError

__all__ = [
    "MAX_CHARS",
    "ToolError",
    "calculate",
    "find_tool_call",
    "format_value",
    "run_tool_call",
]

MAX_CHARS = 200
MAX_DEPTH = 32
MAX_OPS = 100
MAX_EXPONENT = 64
MAX_DIGITS = 60
MAX_SECONDS = 0.05

_TOKEN = re.compile(r"\s*(?:(\d+(?:\.\d+)?)|(\*\*|//|[-+*/%()]))")
_CALL = re.compile(r"<tool>(.*?)</tool>", re.DOTALL)


class ToolError(EntrolabError):
    """A tool call that cannot be evaluated (its message goes back to the model)."""


def _tokens(text: str) -> list[str]:
    out, i = [], 0
    text = text.rstrip()
    while i < len(text):
        m = _TOKEN.match(text, i)
        if m is None or m.end() == i:
            raise ToolError(f"unexpected character {text[i:].strip()[:1]!r} at position {i}")
        out.append(m.group(1) or m.group(2))
        i = m.end()
    return out


class _Parser:
    def __init__(self, tokens: list[str]) -> None:
        self.toks, self.pos, self.ops = tokens, 0, 0
        self.deadline = time.perf_counter() + MAX_SECONDS

    def peek(self) -> str | None:
        return self.toks[self.pos] if self.pos < len(self.toks) else None

    def take(self) -> str:
        tok = self.peek()
        if tok is None:
            raise ToolError("the expression ends too early")
        self.pos += 1
        return tok

    def tick(self, depth: int) -> None:
        self.ops += 1
        if self.ops > MAX_OPS:
            raise ToolError(f"too many operations (limit {MAX_OPS})")
        if depth > MAX_DEPTH:
            raise ToolError(f"too deeply nested (limit {MAX_DEPTH})")
        if time.perf_counter() > self.deadline:
            raise ToolError("evaluation took too long")

    def expr(self, depth: int) -> Fraction:
        self.tick(depth)
        value = self.term(depth + 1)
        while self.peek() in ("+", "-"):
            op = self.take()
            rhs = self.term(depth + 1)
            value = _check(value + rhs if op == "+" else value - rhs)
        return value

    def term(self, depth: int) -> Fraction:
        self.tick(depth)
        value = self.unary(depth + 1)
        while self.peek() in ("*", "/", "//", "%"):
            op = self.take()
            rhs = self.unary(depth + 1)
            if op == "*":
                value = value * rhs
            elif rhs == 0:
                raise ToolError("division by zero")
            elif op == "/":
                value = value / rhs
            elif op == "//":
                value = Fraction(value // rhs)
            else:
                value = value % rhs
            value = _check(value)
        return value

    def unary(self, depth: int) -> Fraction:
        self.tick(depth)
        if self.peek() in ("+", "-"):
            sign = self.take()
            v = self.unary(depth + 1)
            return -v if sign == "-" else v
        return self.power(depth + 1)

    def power(self, depth: int) -> Fraction:
        self.tick(depth)
        base = self.atom(depth + 1)
        if self.peek() == "**":
            self.take()
            exp = self.unary(depth + 1)
            if exp.denominator != 1:
                raise ToolError("only integer exponents are supported")
            if abs(exp) > MAX_EXPONENT:
                raise ToolError(f"exponent too large (limit {MAX_EXPONENT})")
            if base == 0 and exp < 0:
                raise ToolError("division by zero")
            if len(str(abs(base.numerator))) * abs(int(exp)) > 4 * MAX_DIGITS:
                raise ToolError(f"result too large (limit {MAX_DIGITS} digits)")
            base = _check(base ** int(exp))
        return base

    def atom(self, depth: int) -> Fraction:
        self.tick(depth)
        tok = self.take()
        if tok == "(":
            v = self.expr(depth + 1)
            if self.take() != ")":
                raise ToolError("missing ')'")
            return v
        if tok[0].isdigit():
            return _check(Fraction(tok))
        raise ToolError(f"expected a number or '(' but got {tok!r}")


def _check(v: Fraction) -> Fraction:
    if len(str(abs(v.numerator))) > MAX_DIGITS or len(str(v.denominator)) > MAX_DIGITS:
        raise ToolError(f"number too large (limit {MAX_DIGITS} digits)")
    return v


def calculate(expression: str) -> Fraction:
    """The exact value of an arithmetic ``expression`` (see the module grammar and bounds).

    Raises:
        ToolError: malformed input or a bound exceeded (the message says which)."""
    if not isinstance(expression, str) or not expression.strip():
        raise ToolError("empty expression")
    if len(expression) > MAX_CHARS:
        raise ToolError(f"expression too long ({len(expression)} > {MAX_CHARS} characters)")
    p = _Parser(_tokens(expression))
    value = p.expr(0)
    if p.peek() is not None:
        raise ToolError(f"unexpected {p.peek()!r} after a complete expression")
    return value


def format_value(v: Fraction) -> str:
    """An integer as digits; otherwise a decimal with up to 10 significant digits."""
    if v.denominator == 1:
        return str(v.numerator)
    return f"{float(v):.10g}"


def find_tool_call(text: str) -> str | None:
    """The expression of the last complete ``<tool>…</tool>`` call in ``text`` (None if none);
    an opened but unclosed ``<tool>`` at the end counts as a call up to the end of the text."""
    calls = _CALL.findall(text)
    tail = text.rfind("<tool>")
    if tail >= 0 and "</tool>" not in text[tail:]:
        return text[tail + len("<tool>") :]
    return calls[-1] if calls else None


def run_tool_call(expression: str) -> str:
    """The tool message for ``expression``: ``<result>VALUE</result>`` or
    ``<result>error: REASON</result>``; never raises."""
    try:
        return f"<result>{format_value(calculate(expression))}</result>"
    except ToolError as e:
        return f"<result>error: {e}</result>"
    except (RecursionError, MemoryError, OverflowError, ValueError, ZeroDivisionError) as e:
        return f"<result>error: {type(e).__name__}</result>"
