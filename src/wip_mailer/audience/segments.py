"""Segments: a small filter language over subscriber fields, compiled to SQL.

Grammar (keywords and field names are case-insensitive)::

    segment    := or_expr
    or_expr    := and_expr ( "or" and_expr )*
    and_expr   := not_expr ( "and" not_expr )*
    not_expr   := "not" not_expr | "(" or_expr ")" | condition
    condition  := field ( "=" | "!=" ) value
                | field [ "not" ] "in" "(" value ( "," value )* ")"
    field      := language | country | organisation | name | email | domain | tag | attr.NAME
    value      := word | "double-quoted text" | 'single-quoted text'

Examples: ``language=en``, ``tag=press and country in (FR, DE)``,
``domain=example.org or (organisation="Comune di Lione" and not tag=old)``,
``attr.sector=culture``.

Comparisons ignore case. ``tag=x`` is true when x is one of the subscriber's tags;
``domain=x`` matches the part of the address after the @. ``!=`` and ``not in`` are
true for an empty or absent value too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import ColumnElement, func
from sqlmodel import col

from wip_mailer.errors import InvalidInputError
from wip_mailer.models import Subscriber

FIELDS = ("language", "country", "organisation", "name", "email", "domain", "tag", "attr.NAME")


class InvalidSegmentError(InvalidInputError):
    """A segment expression that cannot be understood."""


_TOKEN = re.compile(
    r"""\s*(?:
        (?P<op>!=|=|\(|\)|,)
      | "(?P<dq>[^"]*)"
      | '(?P<sq>[^']*)'
      | (?P<word>[^\s()=,!"']+)
      | (?P<bad>\S)
    )""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class _Token:
    kind: str  # "op", "word" or "text" (quoted; never a keyword)
    value: str
    position: int


def _tokenise(expression: str) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    while position < len(expression):
        if not expression[position:].strip():
            break
        match = _TOKEN.match(expression, position)
        if match is None or match.group("bad") is not None:
            start = match.start("bad") if match else position
            raise InvalidSegmentError(
                f"The segment {expression!r} has an unexpected {expression[start]!r} "
                f"at character {start + 1}."
            )
        if match.group("op") is not None:
            tokens.append(_Token("op", match.group("op"), match.start("op")))
        elif match.group("word") is not None:
            tokens.append(_Token("word", match.group("word"), match.start("word")))
        else:
            quoted = match.group("dq") if match.group("dq") is not None else match.group("sq")
            tokens.append(_Token("text", quoted, match.start()))
        position = match.end()
    return tokens


# The parsed expression: a tree of ("and"|"or", left, right), ("not", child) and
# ("cond", field, operator, values) nodes, compiled to SQL once the dialect is known.
Node = tuple[Any, ...]


class _Parser:
    def __init__(self, expression: str) -> None:
        self.expression = expression
        self.tokens = _tokenise(expression)
        self.index = 0

    def fail(self, problem: str) -> InvalidSegmentError:
        return InvalidSegmentError(f"The segment {self.expression!r} {problem}.")

    def peek(self) -> _Token | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def is_keyword(self, word: str) -> bool:
        token = self.peek()
        return token is not None and token.kind == "word" and token.value.lower() == word

    def is_op(self, op: str) -> bool:
        token = self.peek()
        return token is not None and token.kind == "op" and token.value == op

    def take(self) -> _Token:
        token = self.peek()
        if token is None:
            raise self.fail("ends too early")
        self.index += 1
        return token

    def expect_op(self, op: str, after: str) -> None:
        token = self.peek()
        if token is None:
            raise self.fail(f"ends too early: {op!r} expected after {after}")
        if not (token.kind == "op" and token.value == op):
            raise self.fail(f"has {token.value!r} at character {token.position + 1} where {op!r} "
                            f"was expected after {after}")
        self.index += 1

    def parse(self) -> Node:
        if not self.tokens:
            raise self.fail("is empty")
        node = self.or_expr()
        extra = self.peek()
        if extra is not None:
            raise self.fail(f"has an unexpected {extra.value!r} at character {extra.position + 1}")
        return node

    def or_expr(self) -> Node:
        node = self.and_expr()
        while self.is_keyword("or"):
            self.take()
            node = ("or", node, self.and_expr())
        return node

    def and_expr(self) -> Node:
        node = self.not_expr()
        while self.is_keyword("and"):
            self.take()
            node = ("and", node, self.not_expr())
        return node

    def not_expr(self) -> Node:
        if self.is_keyword("not"):
            self.take()
            return ("not", self.not_expr())
        if self.is_op("("):
            self.take()
            node = self.or_expr()
            self.expect_op(")", "a parenthesised condition")
            return node
        return self.condition()

    def condition(self) -> Node:
        token = self.take()
        if token.kind != "word":
            raise self.fail(f"has {token.value!r} at character {token.position + 1} where a field name "
                            f"was expected ({', '.join(FIELDS)})")
        field = token.value.lower()
        if not (field in FIELDS[:-1] or (field.startswith("attr.") and len(field) > 5)):
            raise self.fail(f"uses the unknown field {token.value!r}; known fields are {', '.join(FIELDS)}")
        if field.startswith("attr."):
            field = "attr." + token.value[5:]  # attribute names keep their case
        negate = False
        if self.is_keyword("not"):
            self.take()
            negate = True
            if not self.is_keyword("in"):
                raise self.fail(f"has 'not' after {token.value!r} where 'not in' was expected")
        if self.is_keyword("in"):
            self.take()
            self.expect_op("(", f"'{token.value} in'")
            values = [self.value(token.value)]
            while self.is_op(","):
                self.take()
                values.append(self.value(token.value))
            self.expect_op(")", f"the values of '{token.value} in'")
            return ("cond", field, "not in" if negate else "in", tuple(values))
        operator = self.peek()
        if operator is None or operator.kind != "op" or operator.value not in ("=", "!="):
            shown = "the end" if operator is None else repr(operator.value)
            raise self.fail(f"has {shown} after {token.value!r} where =, != or in was expected")
        self.take()
        return ("cond", field, operator.value, (self.value(token.value),))

    def value(self, field: str) -> str:
        token = self.peek()
        if token is None or token.kind == "op":
            shown = "the end" if token is None else repr(token.value)
            raise self.fail(f"has {shown} where a value for {field!r} was expected")
        self.take()
        return token.value


def parse_segment(expression: str) -> Node:
    """Check ``expression`` and return its parsed form; InvalidSegmentError names the problem."""
    return _Parser(expression).parse()


def segment_filter(expression: str, dialect: str) -> ColumnElement[bool]:
    """The SQL condition on ``Subscriber`` for ``expression`` (dialect: "sqlite" or "postgresql")."""
    return _compile(parse_segment(expression), dialect)


def _compile(node: Node, dialect: str) -> ColumnElement[bool]:
    kind = node[0]
    if kind == "and":
        return sa.and_(_compile(node[1], dialect), _compile(node[2], dialect))
    if kind == "or":
        return sa.or_(_compile(node[1], dialect), _compile(node[2], dialect))
    if kind == "not":
        return sa.not_(_compile(node[1], dialect))
    _, field, operator, values = node
    positive = _positive(field, values, dialect)
    return positive if operator in ("=", "in") else sa.not_(positive)


def _lowered(column: Any) -> Callable[[Sequence[str]], ColumnElement[bool]]:
    return lambda values: func.lower(column).in_([v.lower() for v in values])


def _positive(field: str, values: Sequence[str], dialect: str) -> ColumnElement[bool]:
    """The condition "field equals one of values"; NULLs count as false (coalesced)."""
    if field == "tag":
        return _has_tag(values, dialect)
    if field == "domain":
        email = col(Subscriber.email)
        return sa.or_(*(email.endswith("@" + v.lower().lstrip("@"), autoescape=True) for v in values))
    if field.startswith("attr."):
        attribute = Subscriber.attributes[field[5:]].as_string()
        return func.coalesce(func.lower(attribute).in_([v.lower() for v in values]), sa.false())
    simple = {
        "language": col(Subscriber.language),
        "country": col(Subscriber.country),
        "organisation": col(Subscriber.organisation),
        "name": col(Subscriber.name),
        "email": col(Subscriber.email),
    }
    return _lowered(simple[field])(values)


def _has_tag(values: Sequence[str], dialect: str) -> ColumnElement[bool]:
    # Tags are a JSON array; each database spells "array elements as rows" differently.
    if dialect == "postgresql":
        elements = func.json_array_elements_text(col(Subscriber.tags)).table_valued("value")
    else:
        elements = func.json_each(col(Subscriber.tags)).table_valued("value")
    wanted = [v.strip().lower() for v in values]
    return sa.exists(sa.select(1).select_from(elements).where(elements.c.value.in_(wanted)))
