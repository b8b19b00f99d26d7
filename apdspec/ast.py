"""Position-carrying syntax tree of an `.apd` file.

Every node keeps the `Span` of the text it came from, so that every later error (type, range,
cross-field) can point at the exact characters. Nodes are frozen: the checker and the formatter
only read them. Nodes built by `unparse` (not from text) carry `NOWHERE`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union


@dataclass(frozen=True)
class Span:
    """file, 1-based line/column of the first character, and the line/column just past the last."""

    file: str
    line: int
    column: int
    end_line: int
    end_column: int

    def to(self, other: "Span") -> "Span":
        """The span from the start of self to the end of other."""
        return Span(self.file, self.line, self.column, other.end_line, other.end_column)


NOWHERE = Span("<generated>", 0, 0, 0, 0)

# ------------------------------------------------------------------------------------------
# Values


@dataclass(frozen=True)
class Number:
    span: Span
    text: str  # as written, e.g. "20_000", "5%", "3e-2"
    value: Union[int, float, None]  # None when the literal is malformed (a diagnostic was recorded)


@dataclass(frozen=True)
class String:
    span: Span
    text: str  # with quotes and escapes, as written
    value: str


@dataclass(frozen=True)
class Ident:
    """A bare name: an enum value (relu), a boolean (true), none, or a constant used by name."""

    span: Span
    name: str


@dataclass(frozen=True)
class Ref:
    """A constant reference, `$name`."""

    span: Span
    name: str


@dataclass(frozen=True)
class Arg:
    span: Span
    name: Union[str, None]  # None for a positional argument
    name_span: Union[Span, None]
    value: "Value"


@dataclass(frozen=True)
class Call:
    span: Span
    name: str
    name_span: Span
    args: tuple[Arg, ...]


@dataclass(frozen=True)
class ListValue:
    span: Span
    items: tuple["Value", ...]


@dataclass(frozen=True)
class BinOp:
    span: Span
    op: str  # + - * /
    left: "Value"
    right: "Value"


@dataclass(frozen=True)
class Neg:
    span: Span
    operand: "Value"


Value = Union[Number, String, Ident, Ref, Call, ListValue, BinOp, Neg]

# ------------------------------------------------------------------------------------------
# Statements


@dataclass(frozen=True)
class Use:
    span: Span
    path: String


@dataclass(frozen=True)
class Let:
    span: Span
    name: str
    name_span: Span
    value: Value


@dataclass(frozen=True)
class Assign:
    span: Span
    path: tuple[str, ...]  # dotted key, e.g. ("decompose", "topk")
    path_spans: tuple[Span, ...]  # one per segment
    value: Value

    @property
    def key_span(self) -> Span:
        return self.path_spans[0].to(self.path_spans[-1])


@dataclass(frozen=True)
class Block:
    """`name [label] { body }`, or `name call` with body None (e.g. target file("x.npz"))."""

    span: Span
    name: str
    name_span: Span
    label: Union[Value, None]
    body: Union[tuple["Stmt", ...], None]
    open_span: Union[Span, None]  # the "{" token
    close_span: Union[Span, None]  # the "}" token

    @property
    def header_span(self) -> Span:
        """From the block name to the end of its label (what errors about the block point at)."""
        end = self.label.span if self.label is not None else self.name_span
        return self.name_span.to(end)


@dataclass(frozen=True)
class Expect:
    """`expect [reduce(]metric[)] op value [for at least N replicates]`."""

    span: Span
    metric: str
    metric_span: Span
    reduce: Union[str, None]  # mean | min | max | median | None (every replicate)
    reduce_span: Union[Span, None]
    op: str
    value: Value
    at_least: Union[Value, None]


@dataclass(frozen=True)
class ExpectBare:
    """`expect none` (clears inherited expectations) or an incomplete `expect NAME`."""

    span: Span
    name: str


Stmt = Union[Use, Let, Assign, Block, Expect, ExpectBare]


@dataclass(frozen=True)
class Comment:
    span: Span
    text: str  # including the leading '#'


@dataclass(frozen=True)
class File:
    name: str
    items: tuple[Stmt, ...]
    comments: tuple[Comment, ...]
