"""Names, templates and params: the grammar of LTM names and labels.

A name is `^[a-z][a-z0-9_]*$` with optional `{param}` fields after the first
letter (`worker_{id}`, `shard_{region}_{n}`); a label follows the same grammar.
A param value is a string of `[A-Za-z0-9_-]+` (an integer is read as its
decimal string), so a formatted name never holds a dot, the fqn separator.

Two fields may not touch (`{a}{b}` cannot be split back), and two siblings may
not have overlapping templates (some name matching both), so every node key
names exactly one declaration.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache

__all__ = [
    "PARAM_VALUE",
    "Template",
    "param_value",
    "template",
    "templates_overlap",
]

_NAME = re.compile(r"[a-z](?:[a-z0-9_]|\{[a-z][a-z0-9_]*\})*")
_FIELD = re.compile(r"\{([a-z][a-z0-9_]*)\}")
PARAM_VALUE = re.compile(r"[A-Za-z0-9_-]+")
"""What a param value may hold once formatted."""

_PARAM_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed name or label: literal text and `{param}` fields, in order."""

    text: str
    """The template as declared."""

    parts: tuple[str | None, ...]
    """Literal strings, and None where a field is (names in `params`, same order)."""

    params: tuple[str, ...]
    """The names of the fields, in order of appearance (repeats kept)."""

    @property
    def is_parameterized(self) -> bool:
        """True if the template has at least one `{param}` field."""
        return bool(self.params)

    def format(self, values: Mapping[str, str]) -> str:
        """Fills the fields; raises KeyError naming the first field `values` lacks."""
        if not self.params:
            return self.text
        fields = iter(self.params)
        return "".join(values[next(fields)] if part is None else part for part in self.parts)

    def matches(self, text: str) -> bool:
        """True if `text` is this template formatted with some param values."""
        return _pattern(self).fullmatch(text) is not None

    def missing(self, values: Mapping[str, str]) -> str | None:
        """The first field that `values` does not bind, or None."""
        return next((p for p in self.params if p not in values), None)


def template(text: object) -> Template:
    """Parses a name or label.

    Raises:
        ValueError: `text` is not a string that follows the grammar; the
            message says how.
    """
    if not isinstance(text, str):
        raise ValueError(f"a name or label must be a string, not {text!r}")
    return _parse(text)


@cache
def _parse(text: str) -> Template:
    if not _NAME.fullmatch(text):
        raise ValueError(
            f"{text!r} must match ^[a-z][a-z0-9_]*$, with optional {{param}} fields "
            "named the same way"
        )
    if "}{" in text:
        raise ValueError(f"{text!r}: two {{param}} fields must be separated by literal text")
    parts: list[str | None] = []
    params: list[str] = []
    position = 0
    for field in _FIELD.finditer(text):
        if field.start() > position:
            parts.append(text[position : field.start()])
        parts.append(None)
        params.append(field.group(1))
        position = field.end()
    if position < len(text):
        parts.append(text[position:])
    return Template(text, tuple(parts), tuple(params))


@cache
def _pattern(t: Template) -> re.Pattern[str]:
    return re.compile(
        "".join(PARAM_VALUE.pattern if part is None else re.escape(part) for part in t.parts)
    )


def param_value(value: object) -> str:
    """Returns a param value as the string it formats to.

    Raises:
        ValueError: Not a string of `[A-Za-z0-9_-]+` nor an integer.
    """
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"a param value must be a string or an integer, not {value!r}")
    text = str(value)
    if not PARAM_VALUE.fullmatch(text):
        raise ValueError(f"param value {text!r} must match [A-Za-z0-9_-]+")
    return text


def _tokens(t: Template) -> list[str | None]:
    """One token per literal character; None for a field (one or more param chars)."""
    tokens: list[str | None] = []
    for part in t.parts:
        if part is None:
            tokens.append(None)
        else:
            tokens.extend(part)
    return tokens


def templates_overlap(a: Template, b: Template) -> bool:
    """True if some formatted name matches both templates.

    Decided exactly, by a search over pairs of positions in the two templates
    (their automata's product): a field consumes one or more param
    characters, a literal character only itself.
    """
    ta, tb = _tokens(a), _tokens(b)
    alphabet = {c for c in (*ta, *tb) if c is not None} | {"A"}  # "A": any other param char
    start = (0, False, 0, False)  # (position in a, inside a field of a, same for b)
    seen = {start}
    frontier = [start]

    def moves(tokens: list[str | None], i: int, inside: bool, char: str) -> list[tuple[int, bool]]:
        found: list[tuple[int, bool]] = []
        if inside and char in _PARAM_CHARS:
            found.append((i, True))  # the field goes on
        position = i + 1 if inside else i
        if position < len(tokens):
            token = tokens[position]
            if token is None and char in _PARAM_CHARS:
                found.append((position, True))
            elif token == char:
                found.append((position + 1, False))
        return found

    while frontier:
        i, in_a, j, in_b = frontier.pop()
        end_a = (i + 1 if in_a else i) == len(ta)
        end_b = (j + 1 if in_b else j) == len(tb)
        if end_a and end_b:
            return True
        for char in alphabet:
            for next_a in moves(ta, i, in_a, char):
                for next_b in moves(tb, j, in_b, char):
                    state = (*next_a, *next_b)
                    if state not in seen:
                        seen.add(state)
                        frontier.append(state)
    return False
