r"""Lenient extraction of a JSON answer object from a policy's raw text.

Policies wrap their answers in prose, code fences, single quotes or trailing commas. This module
finds the first ``{...}`` object in the text that parses as a dict, trying strict JSON first and a
normalised form second (single-quoted strings turned into JSON strings, trailing commas dropped,
Python's ``True``/``False``/``None`` mapped to JSON). It never evaluates anything and never raises
on a ``str``. Both GeneralPoints and V-IRL read answers through it.

    >>> extract_answer("Sure! ```json\n{'formula': '1+2',}\n```")
    {'formula': '1+2'}
"""

from __future__ import annotations

import json
import re

# Tokens that matter for brace matching: escapes, braces and quotes (strings are only tracked
# inside an object, so an apostrophe in surrounding prose does not open a "string").
_STRUCTURE = re.compile(r"""\\.|[{}"']""", re.DOTALL)
# One pass of the normaliser: a JSON string, a single-quoted string, a trailing comma, or a
# Python literal outside strings.
_NORMALISE = re.compile(
    r'"(?:\\.|[^"\\])*"'  # double-quoted string: kept
    r"|'(?:\\.|[^'\\])*'"  # single-quoted string: rewritten as a JSON string
    r"|,(?=\s*[}\]])"  # trailing comma: dropped
    r"|\b(?:True|False|None)\b",  # Python literals: mapped to JSON
    re.DOTALL,
)
_PY_LITERALS = {"True": "true", "False": "false", "None": "null"}
# At most this many candidate objects are tried, so adversarial texts full of braces stay cheap.
_MAX_CANDIDATES = 64


def extract_answer(text: str, *, max_chars: int = 8192) -> dict | None:
    """Return the first dict found in ``text``, or None.

    Contract: accepts any ``str``; never raises on one; returns None without scanning when
    ``len(text) > max_chars``; keys are kept as written (no case folding or renaming). Non-str
    input also returns None.
    """
    if not isinstance(text, str) or len(text) > max_chars:
        return None
    for start, end in _object_spans(text)[:_MAX_CANDIDATES]:
        parsed = _parse_object(text[start : end + 1])
        if parsed is not None:
            return parsed
    return None


def _object_spans(text: str) -> list[tuple[int, int]]:
    """Spans (start, end) of balanced ``{...}`` groups, ordered by their opening brace."""
    spans: list[tuple[int, int]] = []
    stack: list[int] = []
    quote = ""
    for match in _STRUCTURE.finditer(text):
        token = match.group()
        if quote:
            if token == quote:
                quote = ""
        elif token in "\"'":
            if stack:
                quote = token
        elif token == "{":
            stack.append(match.start())
        elif token == "}" and stack:
            spans.append((stack.pop(), match.start()))
    spans.sort()
    return spans


def _parse_object(candidate: str) -> dict | None:
    """Parse one ``{...}`` candidate strictly, then normalised; None when neither gives a dict."""
    for normalise in (False, True):  # strict JSON first; normalise only when it fails
        source = _NORMALISE.sub(_normalise_token, candidate) if normalise else candidate
        try:
            value = json.loads(source)
        except (ValueError, RecursionError):
            continue
        if isinstance(value, dict):
            return value
    return None


def _normalise_token(match: re.Match) -> str:
    """Rewrite one token matched by ``_NORMALISE`` into its JSON form."""
    token = match.group()
    if token.startswith('"'):
        return token
    if token.startswith("'"):
        inner = token[1:-1].replace("\\'", "'")
        return '"' + re.sub(r'(?<!\\)"', r'\\"', inner) + '"'
    if token == ",":
        return ""
    return _PY_LITERALS[token]
