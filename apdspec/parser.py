"""Text -> syntax tree (`apdspec.ast`), with friendly syntax errors.

The grammar (apd.lark) is parsed with Lark's LALR parser and contextual lexer; a post-parse
Transformer builds the position-carrying AST. Number literals and string escapes are checked here,
so a malformed literal becomes a located diagnostic instead of a silent truncation.
"""
from __future__ import annotations

import functools
import importlib.resources
import re
import threading

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken, VisitError

from . import ast as A
from .errors import Collector

_local = threading.local()  # comment sink for the parse in progress (lexer callbacks are per parser)


def _on_comment(tok: Token) -> None:
    sink = getattr(_local, "comments", None)
    if sink is not None:
        sink.append(tok)


@functools.lru_cache(maxsize=None)
def grammar_text() -> str:
    return importlib.resources.files("apdspec").joinpath("apd.lark").read_text(encoding="utf-8")


@functools.lru_cache(maxsize=None)
def parser() -> Lark:
    return Lark(
        grammar_text(),
        parser="lalr",
        lexer="contextual",
        start=["start", "override"],
        propagate_positions=True,
        maybe_placeholders=True,
        lexer_callbacks={"COMMENT": _on_comment},
    )


# ------------------------------------------------------------------------------------------
# Literals

_NUMBER_BODY = re.compile(r"(\d[\d_]*(\.[\d_]*)?|\.\d[\d_]*)([eE][+-]?[\d_]+)?")
_SUFFIX = {"": 1, "k": 1_000, "M": 1_000_000, "%": None}


class LiteralError(ValueError):
    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.hint = hint


def parse_number(text: str) -> int | float:
    """`20_000` -> 20000, `3e-2` -> 0.03 (always a float), `5%` -> 0.05, `20k` -> 20000, `2M`.

    Ints stay ints (no '.', exponent or '%'); `_` is allowed only between digits."""
    m = _NUMBER_BODY.match(text)
    body, suffix = (m.group(0), text[m.end():]) if m else ("", text)
    if not m or suffix not in _SUFFIX:
        raise LiteralError(f"malformed number '{text}'", "numbers look like 3, 0.5, 3e-2, 20_000, 20k, 2M or 5%")
    is_int = not any(c in body for c in ".eE")
    try:
        value: int | float = int(body) if is_int else float(body)
    except ValueError:
        raise LiteralError(f"malformed number '{text}'", "'_' may only separate digits, as in 20_000") from None
    if suffix == "%":
        value = float(value) / 100
    elif suffix:
        value = value * _SUFFIX[suffix]
    if isinstance(value, float) and not _finite(value):
        raise LiteralError(f"number '{text}' is too large", "")
    return value


def _finite(x: float) -> bool:
    return x == x and x not in (float("inf"), float("-inf"))


_ESCAPES = {"\\": "\\", '"': '"', "n": "\n", "t": "\t"}


def parse_string(text: str) -> str:
    out, i, body = [], 0, text[1:-1]
    while i < len(body):
        c = body[i]
        if c == "\\":
            nxt = body[i + 1] if i + 1 < len(body) else ""
            if nxt not in _ESCAPES:
                raise LiteralError(f"unknown escape '\\{nxt}' in string", 'use \\\\, \\", \\n or \\t')
            out.append(_ESCAPES[nxt])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


# ------------------------------------------------------------------------------------------
# Tree -> AST


def _tok_span(file: str, t: Token) -> A.Span:
    return A.Span(file, t.line, t.column, t.end_line, t.end_column)


class _ToAst(Transformer):
    def __init__(self, file: str, diags: Collector):
        super().__init__()
        self.file = file
        self.diags = diags

    def _span(self, meta) -> A.Span:
        return A.Span(self.file, meta.line, meta.column, meta.end_line, meta.end_column)

    # values
    def number(self, children):
        (t,) = children
        span = _tok_span(self.file, t)
        try:
            value = parse_number(str(t))
        except LiteralError as e:
            self.diags.error(str(e), span, e.hint)
            value = None
        return A.Number(span, str(t), value)

    def string(self, children):
        (t,) = children
        span = _tok_span(self.file, t)
        try:
            value = parse_string(str(t))
        except LiteralError as e:
            self.diags.error(str(e), span, e.hint)
            value = ""
        return A.String(span, str(t), value)

    def ident(self, children):
        (t,) = children
        return A.Ident(_tok_span(self.file, t), str(t))

    def ref(self, children):
        (t,) = children
        return A.Ref(_tok_span(self.file, t), str(t)[1:])

    @v_args(meta=True)
    def call(self, meta, children):
        name, *args = children
        args = tuple(a if isinstance(a, A.Arg) else A.Arg(a.span, None, None, a) for a in args if a is not None)
        return A.Call(self._span(meta), str(name), _tok_span(self.file, name), args)

    @v_args(meta=True)
    def kwarg(self, meta, children):
        name, _eq, value = children
        return A.Arg(self._span(meta), str(name), _tok_span(self.file, name), value)

    @v_args(meta=True)
    def list(self, meta, children):
        return A.ListValue(self._span(meta), tuple(c for c in children if c is not None))

    @v_args(meta=True)
    def binop(self, meta, children):
        left, op, right = children
        return A.BinOp(self._span(meta), str(op), left, right)

    @v_args(meta=True)
    def neg(self, meta, children):
        _minus, operand = children
        return A.Neg(self._span(meta), operand)

    # statements
    def path(self, children):
        return children  # list of NAME tokens

    @v_args(meta=True)
    def assign(self, meta, children):
        path, _eq, value = children
        return A.Assign(self._span(meta), tuple(str(t) for t in path),
                        tuple(_tok_span(self.file, t) for t in path), value)

    override = assign

    @v_args(meta=True)
    def use_stmt(self, meta, children):
        return A.Use(self._span(meta), self.string(children))

    @v_args(meta=True)
    def let_stmt(self, meta, children):
        name, _eq, value = children
        return A.Let(self._span(meta), str(name), _tok_span(self.file, name), value)

    @v_args(meta=True)
    def block(self, meta, children):
        name, label, lbrace, *body, rbrace = children
        return A.Block(self._span(meta), str(name), _tok_span(self.file, name), label, tuple(body),
                       _tok_span(self.file, lbrace), _tok_span(self.file, rbrace))

    @v_args(meta=True)
    def call_block(self, meta, children):
        name, call = children
        return A.Block(self._span(meta), str(name), _tok_span(self.file, name), call, None, None, None)

    def metric(self, children):
        if len(children) == 1:
            return (str(children[0]), _tok_span(self.file, children[0]), None, None)
        reduce, metric = children
        return (str(metric), _tok_span(self.file, metric), str(reduce), _tok_span(self.file, reduce))

    def for_clause(self, children):
        (t,) = children
        return self.number([t]) if t.type == "NUMBER" else self.ref([t])

    @v_args(meta=True)
    def expect_stmt(self, meta, children):
        (metric, metric_span, reduce, reduce_span), op, value, at_least = children
        return A.Expect(self._span(meta), metric, metric_span, reduce, reduce_span, str(op), value, at_least)

    @v_args(meta=True)
    def expect_bare(self, meta, children):
        return A.ExpectBare(self._span(meta), str(children[0]))

    def start(self, children):
        return tuple(children)


# ------------------------------------------------------------------------------------------
# Entry points


def parse(text: str, file: str, diags: Collector) -> A.File | None:
    """Parse a whole file. Syntax errors are added to `diags` (None is returned)."""
    _local.comments = comments = []
    try:
        tree = parser().parse(text, start="start")
    except UnexpectedInput as e:
        diags.diagnostics.append(syntax_error(e, text, file))
        return None
    finally:
        _local.comments = None
    items = _transform(tree, file, diags)
    cs = tuple(A.Comment(_tok_span(file, t), str(t)) for t in comments)
    return A.File(file, items, cs)


def parse_override(text: str, file: str, diags: Collector) -> A.Assign | None:
    """Parse a command-line override `path=value` (same grammar, start symbol `override`)."""
    _local.comments = []
    try:
        tree = parser().parse(text, start="override")
    except UnexpectedInput as e:
        diags.diagnostics.append(syntax_error(e, text, file, override=True))
        return None
    finally:
        _local.comments = None
    return _transform(tree, file, diags)


def _transform(tree, file: str, diags: Collector):
    try:
        return _ToAst(file, diags).transform(tree)
    except VisitError as e:  # a bug in this module, not a user mistake
        raise e.orig_exc from None


# ------------------------------------------------------------------------------------------
# Syntax errors

_WORDS = {
    "VALUE": "a value", "NAME": "a name", "NUMBER": "a number", "STRING": "a string", "REF": "a $constant",
    "EQUAL": "'='", "LBRACE": "'{'", "RBRACE": "'}'", "LPAR": "'('", "RPAR": "')'",
    "LSQB": "'['", "RSQB": "']'", "COMMA": "','", "DOT": "'.'", "SEMICOLON": "';'",
    "CMP": "a comparison (>=, <=, >, <, ==)", "PLUS": "'+'", "MINUS": "'-'", "STAR": "'*'",
    "SLASH": "'/'", "USE": "'use'", "LET": "'let'", "EXPECT": "'expect'", "FOR": "'for'",
    "REPLICATES": "'replicates'", "AT": "'at'", "LEAST": "'least'", "$END": "the end of the file",
}
# Most useful alternatives first; arithmetic operators are rarely what the user meant.
_ORDER = ["VALUE", "EQUAL", "LBRACE", "RBRACE", "RPAR", "RSQB", "COMMA", "DOT", "NAME", "NUMBER", "STRING",
          "REF", "LSQB", "LPAR", "CMP", "FOR", "REPLICATES", "AT", "LEAST", "USE", "LET", "EXPECT",
          "SEMICOLON", "MINUS", "PLUS", "STAR", "SLASH", "$END"]
_NOISE = {"PLUS", "MINUS", "STAR", "SLASH", "SEMICOLON", "USE", "LET", "EXPECT"}
_RESERVED = ("use", "let", "expect")


_VALUE_START = {"NUMBER", "STRING", "REF", "LSQB"}


def _alternatives(expected: set[str]) -> list[str]:
    if _VALUE_START <= expected:  # the start of a value: say so rather than list its 7 first tokens
        expected = (expected - _VALUE_START - {"NAME", "LPAR", "MINUS"}) | {"VALUE"}
    names = [n for n in _ORDER if n in expected]
    useful = [n for n in names if n not in _NOISE] or names
    return [_WORDS[n] for n in useful] + [_WORDS.get(n, n) for n in expected if n not in _ORDER]


def _join(words: list[str]) -> str:
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " or " + words[-1]


def _describe(tok: Token) -> str:
    kind = tok.type
    if kind == "NUMBER":
        return f"number '{tok}'"
    if kind == "NAME":
        return f"name '{tok}'"
    if kind == "STRING":
        return f"string {tok}"
    if kind == "REF":
        return f"constant '{tok}'"
    return f"'{tok}'"


def _end_of_text(text: str, file: str) -> A.Span:
    """Just after the last non-blank character (LALR reports EOF at the last token, not after it)."""
    stripped = text.rstrip()
    if not stripped:
        return A.Span(file, 1, 1, 1, 2)
    line = stripped.count("\n") + 1
    col = len(stripped) - (stripped.rfind("\n") + 1) + 1
    return A.Span(file, line, col, line, col + 1)


def _open_blocks(text: str) -> list[tuple[str, int, int]]:
    """(name, line, col) of every '{' still open at the end of `text`, ignoring strings/comments."""
    stack: list[tuple[str, int, int]] = []
    scrub = re.sub(r'"([^"\\\n]|\\.)*"|#[^\n]*', lambda m: " " * len(m.group(0)), text)
    for m in re.finditer(r"[{}]", scrub):
        if m.group(0) == "{":
            before = scrub[: m.start()]
            words = re.findall(r"[A-Za-z_][A-Za-z0-9_]*|\S", before[-200:])
            name = " ".join(w for w in words[-2:] if re.match(r"[A-Za-z_]", w)) or "block"
            line = before.count("\n") + 1
            stack.append((name, line, m.start() - (before.rfind("\n") + 1) + 1))
        elif stack:
            stack.pop()
    return stack


def _previous_word(text: str, pos: int) -> str:
    m = re.search(r"([A-Za-z_][A-Za-z0-9_]*)\s*$", re.sub(r"#[^\n]*", "", text[:pos]))
    return m.group(1) if m else ""


def syntax_error(e: UnexpectedInput, text: str, file: str, override: bool = False):
    from .errors import Diagnostic, Note

    if isinstance(e, UnexpectedCharacters):
        span = A.Span(file, e.line, e.column, e.line, e.column + 1)
        ch = text[e.pos_in_stream] if 0 <= e.pos_in_stream < len(text) else ""
        if ch == '"':
            return Diagnostic("unterminated string", span, hint='a string ends with " on the same line')
        if ch == "'":
            return Diagnostic("unexpected character \"'\"", span, hint='strings use double quotes: "runs/x.npz"')
        shown = ch if ch.isprintable() else repr(ch)
        return Diagnostic(f"unexpected character '{shown}'", span)

    assert isinstance(e, UnexpectedToken)
    tok = e.token
    expected = set(e.accepts or e.expected or ())
    if tok.type == "$END":
        span = _end_of_text(text, file)
        open_blocks = _open_blocks(text)
        if open_blocks and "RBRACE" in expected:
            name, line, col = open_blocks[-1]
            return Diagnostic(
                "unexpected end of file: a block is not closed", span, hint="add '}'",
                notes=(Note(f"'{name}' opened here", A.Span(file, line, col, line, col + 1)),))
        what = "override" if override else "file"
        return Diagnostic(f"unexpected end of {what}; expected {_join(_alternatives(expected))}", span)

    span = _tok_span(file, tok)
    prev = _previous_word(text, tok.start_pos)
    if prev in _RESERVED and tok.type in ("EQUAL", "DOT"):
        return Diagnostic(f"'{prev}' is a reserved word and cannot be used as a key", span,
                          hint="'use', 'let' and 'expect' start statements")
    alts = _alternatives(expected)
    if "EQUAL" in expected and prev and tok.type in ("NUMBER", "REF", "LSQB", "MINUS", "EQUAL", "CMP"):
        return Diagnostic(f"expected '=' after '{prev}', found {_describe(tok)}", span)
    if tok.type == "RBRACE" and "RBRACE" not in expected and not _open_blocks(text[: tok.start_pos]):
        return Diagnostic("unexpected '}': no block is open here", span)
    if len(alts) <= 3:
        after = f" after '{prev}'" if prev and tok.type != "NAME" and "EQUAL" in expected else ""
        return Diagnostic(f"expected {_join(alts)}{after}, found {_describe(tok)}", span)
    return Diagnostic(f"unexpected {_describe(tok)}", span, hint=f"expected {_join(alts)}")
