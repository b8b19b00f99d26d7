"""Canonical layout of `.apd` text: `apdspec fmt`.

The formatter prints the syntax tree (never the checked experiment), so it works on partial specs
and keeps the author's structure, literals and comments. Layout: 2-space indent, one statement per
line, single spaces around `=` and operators, `, ` in lists and calls, at most one blank line
where the source had blank lines. Comments are re-attached by position: a comment after code on
the same line stays a trailing comment of that code; any other comment is printed on its own line
before the next statement of its block (or before the block's closing brace).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from . import ast as A
from .errors import Collector, SpecError, safety_net
from .parser import parse

INDENT = "  "
WRAP = 100  # a list longer than this is laid out over several lines
_PREC = {"+": 1, "-": 1, "*": 2, "/": 2}


def format_text(text: str, filename: str = "<string>") -> str:
    """The canonical layout of `text`; raises SpecError on a syntax error."""
    with safety_net(filename):
        diags = Collector()
        tree = parse(text, filename, diags)
        if tree is None or diags:
            raise SpecError(diags.diagnostics, {filename: text})
        return render_file(tree)


# ------------------------------------------------------------------------------------------
# Values and statements


def render_value(node: A.Value, parent: int = 0, right: bool = False) -> str:
    if isinstance(node, (A.Number, A.String)):
        return node.text
    if isinstance(node, A.Ident):
        return node.name
    if isinstance(node, A.Ref):
        return "$" + node.name
    if isinstance(node, A.ListValue):
        return "[" + ", ".join(render_value(v) for v in node.items) + "]"
    if isinstance(node, A.Call):
        return f"{node.name}(" + ", ".join(_render_arg(a) for a in node.args) + ")"
    if isinstance(node, A.Neg):
        return "-" + render_value(node.operand, 3)
    if isinstance(node, A.BinOp):
        p = _PREC[node.op]
        s = f"{render_value(node.left, p)} {node.op} {render_value(node.right, p, right=True)}"
        # left-associative: a same-precedence operation on the right keeps its parentheses
        return f"({s})" if p < parent or (right and p == parent) else s
    raise TypeError(f"not a value: {node!r}")


def _render_arg(a: A.Arg) -> str:
    return render_value(a.value) if a.name is None else f"{a.name} = {render_value(a.value)}"


def render_simple(s: A.Stmt) -> str:
    """One-line text of a statement that is not a block with a body."""
    if isinstance(s, A.Assign):
        return ".".join(s.path) + " = " + render_value(s.value)
    if isinstance(s, A.Use):
        return "use " + s.path.text
    if isinstance(s, A.Let):
        return f"let {s.name} = {render_value(s.value)}"
    if isinstance(s, A.Expect):
        metric = f"{s.reduce}({s.metric})" if s.reduce else s.metric
        out = f"expect {metric} {s.op} {render_value(s.value)}"
        if s.at_least is not None:
            out += f" for at least {render_value(s.at_least)} replicates"
        return out
    if isinstance(s, A.ExpectBare):
        return "expect " + s.name
    if isinstance(s, A.Block):
        return s.name + ("" if s.label is None else " " + render_value(s.label))
    raise TypeError(f"not a statement: {s!r}")


# ------------------------------------------------------------------------------------------
# Comment attachment


@dataclass
class _Attach:
    trailing: dict[int, list[A.Comment]] = field(default_factory=dict)  # id(stmt) -> comments
    trailing_open: dict[int, list[A.Comment]] = field(default_factory=dict)  # id(block) -> after '{'
    leading: dict[int, list[A.Comment]] = field(default_factory=dict)
    before_close: dict[int, list[A.Comment]] = field(default_factory=dict)
    at_end: list[A.Comment] = field(default_factory=list)
    # comments inside a list written over several lines (a network's layers): by item
    item_trailing: dict[int, list[A.Comment]] = field(default_factory=dict)
    item_leading: dict[int, list[A.Comment]] = field(default_factory=dict)

    def in_list(self, s: A.Stmt) -> bool:
        """Whether a list statement carries comments between its items."""
        return isinstance(s, A.Assign) and isinstance(s.value, A.ListValue) and any(
            id(v) in self.item_trailing or id(v) in self.item_leading for v in s.value.items)


def _pos(span: A.Span) -> tuple[int, int]:
    return (span.line, span.column)


def _end(span: A.Span) -> tuple[int, int]:
    return (span.end_line, span.end_column)


def _attach(items: tuple[A.Stmt, ...], comments: tuple[A.Comment, ...]) -> _Attach:
    at = _Attach()
    # every place a line of output ends: (end position, table, statement)
    ends: list[tuple[tuple[int, int], dict, A.Stmt]] = []

    def collect(stmts):
        for s in stmts:
            if isinstance(s, A.Block) and s.body is not None:
                ends.append((_end(s.open_span), at.trailing_open, s))
                collect(s.body)
                ends.append((_end(s.close_span), at.trailing, s))
            else:
                ends.append((_end(s.span), at.trailing, s))
                if isinstance(s, A.Assign) and isinstance(s.value, A.ListValue):
                    lists.append(s.value)
                    ends.extend((_end(v.span), at.item_trailing, v) for v in s.value.items)

    lists: list[A.ListValue] = []
    collect(items)
    for c in comments:
        p = _pos(c.span)
        same_line = [e for e in ends if e[0][0] == p[0] and e[0] <= p]
        if same_line:
            _, table, s = max(same_line, key=lambda e: e[0])
            table.setdefault(id(s), []).append(c)
            continue
        inside = next((v for v in lists if _pos(v.span) < p < _end(v.span) and v.items), None)
        if inside is not None:  # on its own line inside a list: before the next item (or after the last)
            nxt = next((v for v in inside.items if _end(v.span) > p), None)
            if nxt is not None:
                at.item_leading.setdefault(id(nxt), []).append(c)
            else:
                at.item_trailing.setdefault(id(inside.items[-1]), []).append(c)
            continue
        body, block = items, None
        while True:  # descend into the innermost block whose braces contain the comment
            inner = next((s for s in body if isinstance(s, A.Block) and s.body is not None
                          and _end(s.open_span) <= p < _pos(s.close_span)), None)
            if inner is None:
                break
            body, block = inner.body, inner
        nxt = next((s for s in body if _end(s.span) > p), None)
        if nxt is not None:
            at.leading.setdefault(id(nxt), []).append(c)
        elif block is not None:
            at.before_close.setdefault(id(block), []).append(c)
        else:
            at.at_end.append(c)
    return at


# ------------------------------------------------------------------------------------------
# Printing


class _Printer:
    def __init__(self, at: _Attach, generated: bool):
        self.at = at
        self.generated = generated  # no source lines: separate blocks by blank lines instead
        self.lines: list[str] = []

    def emit(self, depth: int, text: str) -> None:
        self.lines.append(INDENT * depth + text if text else "")

    def blank_if(self, gap: bool, started: bool) -> None:
        if gap and started and self.lines and self.lines[-1] != "":
            self.lines.append("")

    def body(self, stmts: tuple[A.Stmt, ...], depth: int, close: A.Block | None) -> None:
        last_line = None  # source line of the last printed item of this body

        def gap(line: int) -> bool:
            return last_line is not None and line > last_line + 1

        for i, s in enumerate(stmts):
            for c in self.at.leading.get(id(s), []):
                self.blank_if(gap(c.span.line), last_line is not None)
                self.emit(depth, c.text.rstrip())
                last_line = c.span.line
            if self.generated:  # blank lines around the experiment's blocks only
                self.blank_if(depth == 1 and isinstance(s, A.Block), i > 0)
            else:
                self.blank_if(gap(s.span.line), last_line is not None)
            self.stmt(s, depth)
            last_line = s.span.end_line
        if close is not None:
            for c in self.at.before_close.get(id(close), []):
                self.blank_if(gap(c.span.line), last_line is not None)
                self.emit(depth, c.text.rstrip())
                last_line = c.span.line

    def stmt(self, s: A.Stmt, depth: int) -> None:
        head = render_simple(s)
        if isinstance(s, A.Block) and s.body is not None:
            opened = self.at.trailing_open.get(id(s), [])
            closed = self.at.trailing.get(id(s), [])
            inner = self.at.before_close.get(id(s), [])
            if not s.body and not inner:
                self.emit(depth, head + " {}" + _trail(opened + closed))
                return
            self.emit(depth, head + " {" + _trail(opened))
            self.body(s.body, depth + 1, s)
            self.emit(depth, "}" + _trail(closed))
        elif isinstance(s, A.Assign) and isinstance(s.value, A.ListValue) and (
                len(INDENT * depth + head) > WRAP or self.at.in_list(s)):
            # a long list (a big sweep axis, a network) over several lines: the parser limits line
            # length; a list of calls (a network's layers) or one with comments, one item per line
            self.emit(depth, ".".join(s.path) + " = [")
            line = ""
            one_each = self.at.in_list(s) or any(isinstance(v, A.Call) for v in s.value.items)
            for v in s.value.items:
                item = render_value(v) + ","
                lead, trail = self.at.item_leading.get(id(v), []), self.at.item_trailing.get(id(v), [])
                if line and (one_each or lead or len(INDENT * (depth + 1) + line + " " + item) > WRAP):
                    self.emit(depth + 1, line)
                    line = ""
                for c in lead:
                    self.emit(depth + 1, c.text.rstrip())
                line = f"{line} {item}" if line else item
                if trail:
                    self.emit(depth + 1, line + _trail(trail))
                    line = ""
            if line:
                self.emit(depth + 1, line)
            self.emit(depth, "]" + _trail(self.at.trailing.get(id(s), [])))
        else:
            self.emit(depth, head + _trail(self.at.trailing.get(id(s), [])))


def _trail(comments: list[A.Comment]) -> str:
    return "".join("  " + c.text.rstrip() for c in comments)


def render_file(tree: A.File, generated: bool = False) -> str:
    at = _attach(tree.items, tree.comments)
    p = _Printer(at, generated)
    p.body(tree.items, 0, None)
    last = tree.items[-1].span.end_line if tree.items else None
    for c in at.at_end:
        if last is not None and c.span.line > last + 1 and p.lines and p.lines[-1] != "":
            p.lines.append("")
        p.emit(0, c.text.rstrip())
        last = c.span.line
    return "\n".join(p.lines) + "\n" if p.lines else ""
