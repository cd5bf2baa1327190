"""Exact, bounded parsing of a GeneralPoints formula: our own tokenizer and recursive descent.

Grammar (whitespace between tokens is ignored; an optional trailing ``= N`` is dropped and the left
side is judged)::

    expr   := term (("+" | "-") term)*
    term   := factor (("*" | "/") factor)*
    factor := INTEGER | "(" expr ")"          INTEGER := [0-9]+

Everything else (letters, ``**``, ``//``, ``^``, unary minus, decimals, implicit multiplication)
is illegal. Values are ``fractions.Fraction``; a division by zero yields ``value=None`` instead of
raising. Inputs over ``max_chars`` characters or ``max_tokens`` tokens are rejected before any
further work, so the cost is bounded for any text. Model text is never passed to ``eval``.

    >>> parse_formula("8/(3-8/3) = 24").value
    Fraction(24, 1)
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from fractions import Fraction

MAX_FORMULA_CHARS = 256
MAX_FORMULA_TOKENS = 48
_ALLOWED = re.compile(r"[\s0-9+\-*/()=]*")  # ASCII digits only: no other scripts' numerals
_TOKEN = re.compile(r"[0-9]+|\*\*|//|[-+*/()=]")
_SHOWABLE = frozenset(string.ascii_letters + string.digits + string.punctuation)


class FormulaError(ValueError):
    """The formula is illegal; the message is an ASCII clause for the verifier's feedback."""


@dataclass(frozen=True)
class ParsedFormula:
    """A legal formula: the numbers it uses, in order, and its exact value (None: divides by zero)."""

    numbers: tuple[int, ...]
    value: Fraction | None


def parse_formula(
    text: str, *, max_chars: int = MAX_FORMULA_CHARS, max_tokens: int = MAX_FORMULA_TOKENS
) -> ParsedFormula:
    """Parse and evaluate ``text`` exactly; raise FormulaError (with the reason) when illegal."""
    if len(text) > max_chars:
        raise FormulaError(f"it is longer than {max_chars} characters")
    tokens = _tokenize(text, max_tokens=max_tokens)
    if len(tokens) >= 2 and tokens[-2] == "=" and tokens[-1].isdigit():
        tokens = tokens[:-2]
    if not tokens:
        raise FormulaError("it is empty")
    parser = _Parser(tokens)
    value = parser.expression()
    if parser.position != len(tokens):
        raise FormulaError(_unexpected(tokens[parser.position]))
    return ParsedFormula(tuple(parser.numbers), value)


def _tokenize(text: str, *, max_tokens: int) -> list[str]:
    """Split into number and operator tokens; FormulaError on any other character."""
    if not _ALLOWED.fullmatch(text):
        bad = next(char for char in text if not _ALLOWED.fullmatch(char))
        shown = f"'{bad}'" if bad in _SHOWABLE else "a character that is not allowed"
        raise FormulaError(f"it contains {shown}; use only whole numbers, + - * / and parentheses")
    tokens = formula_tokens(text)
    for doubled in ("**", "//"):
        if doubled in tokens:
            raise FormulaError(f"it contains '{doubled}'; use only whole numbers, + - * / and parentheses")
    if len(tokens) > max_tokens:
        raise FormulaError(f"it has more than {max_tokens} tokens")
    return tokens


def formula_tokens(text: str) -> list[str]:
    """The number and operator tokens of ``text``, whitespace dropped (all of a legal formula's text)."""
    return _TOKEN.findall(text)


def _unexpected(token: str | None) -> str:
    """The feedback clause for a token the grammar does not allow at that place."""
    if token is None:
        return "it ends where a number or '(' is expected"
    if token.isdigit():
        return f"the number {shorten_number(token)} follows without an operator (no implicit multiplication)"
    if token == "-":
        return "a minus sign has no number before it (no negative numbers)"
    return f"'{token}' is not allowed at that place"


def shorten_number(number: str) -> str:
    """A number as shown in feedback, shortened when it is very long."""
    return number if len(number) <= 12 else number[:12] + "..."


_LEVELS = (("+", "-"), ("*", "/"))  # operator precedence, loosest first


def _apply(op: str, left: Fraction | None, right: Fraction | None) -> Fraction | None:
    """``left op right`` exactly; None when an operand is None or on division by zero."""
    if left is None or right is None or (op == "/" and right == 0):
        return None
    if op == "+":
        return left + right
    if op == "-":
        return left - right
    return left * right if op == "*" else left / right


class _Parser:
    """Recursive descent over a token list, evaluating as it goes (depth <= tokens / 2)."""

    def __init__(self, tokens: list[str]):
        self.tokens = tokens
        self.position = 0
        self.numbers: list[int] = []

    def _peek(self) -> str | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def expression(self, level: int = 0) -> Fraction | None:
        """Parse operators of ``_LEVELS[level]`` and tighter ones, left-associatively."""
        operand = self.factor if level + 1 == len(_LEVELS) else lambda: self.expression(level + 1)
        value = operand()
        while self._peek() in _LEVELS[level]:
            op = self.tokens[self.position]
            self.position += 1
            value = _apply(op, value, operand())
        return value

    def factor(self) -> Fraction | None:
        token = self._peek()
        if token is not None and token.isdigit():
            self.position += 1
            self.numbers.append(int(token))
            return Fraction(int(token))
        if token == "(":
            self.position += 1
            value = self.expression()
            if self._peek() != ")":
                raise FormulaError("a '(' is never closed" if self._peek() is None else _unexpected(self._peek()))
            self.position += 1
            return value
        raise FormulaError(_unexpected(token))
