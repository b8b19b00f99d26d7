"""Text -> syntax tree (`apdspec.ast`), with friendly syntax errors.

The grammar (apd.lark) is parsed with Lark's LALR parser and contextual lexer, driven token by
token (recovery.py) so that every syntax error in a file is reported, not only the first; a
post-parse Transformer builds the position-carrying AST. Number literals and string escapes are checked here,
so a malformed literal becomes a located diagnostic instead of a silent truncation.
"""
from __future__ import annotations

import functools
import importlib.resources
import re
import threading
from dataclasses import dataclass

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken, VisitError

from . import ast as A
from .errors import Collector, Diagnostic
from .limits import MAX_LINE, MAX_TOKENS, MAX_TREE_DEPTH, brackets, check_text
from .recovery import parse_recovering

_local = threading.local()  # comment sink and token count of the parse in progress (lexer callbacks are per parser)


def _on_comment(tok: Token) -> None:
    sink = getattr(_local, "comments", None)
    if sink is not None:
        sink.append(tok)


class _TooManyTokens(Exception):
    def __init__(self, tok: Token):
        super().__init__("too many tokens")
        self.token = tok


def _count(tok: Token) -> Token:
    """Stop lexing after MAX_TOKENS tokens: the parser's cost grows with the token count."""
    _local.tokens = n = getattr(_local, "tokens", 0) + 1
    if n > getattr(_local, "budget", MAX_TOKENS):
        raise _TooManyTokens(tok)
    return tok


# Every terminal but whitespace and comments (keywords are lexed as NAME first, so counted there).
COUNTED = ("NAME", "NUMBER", "STRING", "REF", "CMP", "EQUAL", "LBRACE", "RBRACE", "PLUS", "MINUS", "STAR", "SLASH",
           "LPAR", "RPAR", "LSQB", "RSQB", "COMMA", "DOT", "SEMICOLON")


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
        lexer_callbacks={"COMMENT": _on_comment, **{name: _count for name in COUNTED}},
    )


# ------------------------------------------------------------------------------------------
# Literals

_NUMBER_BODY = re.compile(r"(\d[\d_]*(\.[\d_]*)?|\.\d[\d_]*)([eE][+-]?[\d_]+)?")
_SUFFIX = {"": 1, "k": 1_000, "M": 1_000_000, "%": None}
_UNDERSCORES = re.compile(r"(\d+(_\d+)*)?(\.(\d+(_\d+)*)?)?([eE][+-]?\d+(_\d+)*)?")  # '_' only between digits
_MAX_INT_DIGITS = 308  # below 10^308 < the largest float: a larger integer fits no field


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
    if not _UNDERSCORES.fullmatch(body):
        raise LiteralError(f"malformed number '{text}'", "'_' may only separate digits, as in 20_000")
    digits = body.replace("_", "")
    if is_int and len(digits.lstrip("0")) > _MAX_INT_DIGITS:  # before int(): no field takes it, and
        raise LiteralError(f"number '{text}' is too large", "")  # int() of 4300+ digits raises ValueError
    value: int | float = int(digits) if is_int else float(digits)
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


def parse(text: str, file: str, diags: Collector, max_tokens: int = MAX_TOKENS) -> A.File | None:
    """Parse a whole file. Syntax errors (and broken limits) are added to `diags` (None is returned).
    `max_tokens` is what is left of MAX_TOKENS after the files this one builds on (`tokens_used`)."""
    comments: list[Token] = []
    tree = _parse(text, file, diags, "start", comments, max_tokens)
    if tree is None:
        return None
    items = _transform(tree, file, diags)
    cs = tuple(A.Comment(_tok_span(file, t), str(t)) for t in comments)
    return A.File(file, items, cs)


def parse_override(text: str, file: str, diags: Collector) -> A.Assign | None:
    """Parse a command-line override `path=value` (same grammar, start symbol `override`)."""
    tree = _parse(text, file, diags, "override", [])
    return None if tree is None else _transform(tree, file, diags)


def tokens_used() -> int:
    """The tokens the last parse in this thread read (for a budget shared by `use`d files)."""
    return getattr(_local, "tokens", 0)


def _parse(text: str, file: str, diags: Collector, start: str, comments: list, max_tokens: int = MAX_TOKENS):
    """The Lark tree of `text`, or None after reporting why not: the limits of `apdspec.limits`
    first (size, characters, line length, nesting; tokens while lexing; tree depth), then syntax."""
    problem = check_text(text, file)
    if problem is not None:
        diags.diagnostics.append(problem)
        return None
    _local.comments, _local.tokens, _local.budget = comments, 0, max_tokens
    try:
        tree, errors = parse_recovering(parser(), text, start,
                                        lambda e: syntax_error(e, text, file, override=start == "override"))
        if errors:
            diags.diagnostics.extend(errors)
            if tree is not None and _too_deep(tree) is None:  # literal errors in what did parse
                _transform(tree, file, diags)
            return None
    except _TooManyTokens as e:
        what = "the spec" if max_tokens == MAX_TOKENS else "the spec and the files it uses"
        diags.error(f"{what} have more than {MAX_TOKENS} tokens" if max_tokens != MAX_TOKENS else
                    f"the spec has more than {MAX_TOKENS} tokens", _tok_span(file, e.token),
                    "a spec is a few hundred words, numbers and symbols")
        return None
    finally:
        _local.comments = None
    deep = _too_deep(tree)
    if deep is not None:
        diags.error(f"nested too deeply: more than {MAX_TREE_DEPTH} levels of blocks, calls, lists and operators",
                    A.Span(file, getattr(deep, "line", 1), getattr(deep, "column", 1), getattr(deep, "line", 1),
                           getattr(deep, "column", 1) + 1),
                    "split a long expression with let constants")
        return None
    return tree


def _too_deep(tree: Tree):
    """The meta of the first node deeper than MAX_TREE_DEPTH, or None. Iterative: the tree is not
    yet known to be shallow enough for the recursive transformer (or the checker)."""
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_TREE_DEPTH:
            return node.meta
        stack.extend((c, depth + 1) for c in node.children if isinstance(c, Tree))
    return None


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


@dataclass(frozen=True)
class _Open:
    name: str  # the words before '{' on its line: "target tms", "loss"
    line: int
    column: int
    indent: int  # indentation of the line that opened the block


def _open_blocks(text: str) -> tuple[list[_Open], tuple[_Open, int] | None]:
    """The blocks still open at the end of `text` (outermost first), and the first block whose
    closing '}' is indented less than the line that opened it, with that '}''s line: when a '}'
    is missing, braces match the wrong blocks and indentation shows which block lacks its '}'."""
    stack: list[_Open] = []
    misfit: tuple[_Open, int] | None = None
    for c, pos in brackets(text):
        if c not in "{}":
            continue
        start = text.rfind("\n", 0, pos) + 1
        before = text[start:pos]
        indent = len(before) - len(before.lstrip(" \t"))
        line = text.count("\n", 0, pos) + 1
        if c == "{":
            head = before
            if not head.strip() and start > 0:  # '{' on its own line: the header is on the line before
                head = text[text.rfind("\n", 0, start - 1) + 1:start - 1]
            words = re.findall(r"[A-Za-z_][A-Za-z0-9_]*|\S", head.split("#")[0])
            name = " ".join(w for w in words[-2:] if re.match(r"[A-Za-z_]", w)) or "block"
            stack.append(_Open(name, line, pos - start + 1, indent))
        elif stack:
            opened = stack.pop()
            if misfit is None and not before.strip() and indent < opened.indent:
                misfit = (opened, line)
    return stack, misfit


def _previous_word(text: str, pos: int) -> str:
    """The name just before offset `pos` (comments skipped), or "" if the previous token is not a name."""
    window = re.sub(r"#[^\n]*", "", text[max(0, pos - 2 * MAX_LINE):pos]).rstrip()
    i = len(window)
    while i > 0 and (window[i - 1] == "_" or (window[i - 1].isascii() and window[i - 1].isalnum())):
        i -= 1
    word = window[i:]
    if (i > 0 and window[i - 1] == "$") or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", word):
        return ""
    return word


def _value_stack(e: UnexpectedToken) -> list:
    """The parser's stack of tokens and subtrees at the error (empty if Lark does not expose it)."""
    for state in (getattr(e, "state", None), getattr(getattr(e, "interactive_parser", None), "parser_state", None)):
        stack = getattr(state, "value_stack", None)
        if stack is not None:
            return list(stack)
    return []


_LABELLED = ("experiment", "target")  # the blocks whose header takes a label: experiment NAME, target KIND


def _label_error(e: UnexpectedToken, file: str):
    """`seed zero` or `activation "relu"`: a name and a value without '=' parse as a block header
    `NAME label` still waiting for its '{'. Report the missing '=' at the value, on its own line,
    rather than "expected '{'" at whatever token comes next; for a real header, the missing '{'."""
    from .errors import Diagnostic

    stack = _value_stack(e)
    if len(stack) < 2:
        return None
    head, label = stack[-2], stack[-1]
    if isinstance(label, Tree) and label.data in ("ident", "string"):  # reduced already, or not yet
        label = label.children[0]
    if not (isinstance(head, Token) and head.type == "NAME" and isinstance(label, Token)
            and label.type in ("NAME", "STRING")):
        return None
    found = "the end of the file" if e.token.type == "$END" else _describe(e.token)
    if e.token.type in ("EQUAL", "DOT") and label.line > head.line:  # `decompose` then `steps = 5` below it
        return Diagnostic(f"expected '=' or '{{' after '{head}', found a new statement on the next line",
                          A.Span(file, head.end_line, head.end_column, head.end_line, head.end_column + 1),
                          hint=f"write {head} = VALUE, or {head} {{ ... }} to open a block")
    if str(head) in _LABELLED:
        span = A.Span(file, label.end_line, label.end_column, label.end_line, label.end_column + 1)
        return Diagnostic(f"expected '{{' after '{head} {label}', found {found}", span,
                          hint=f"write {head} {label} {{ ... }}")
    return Diagnostic(f"expected '=' after '{head}', found {_describe(label)}", _tok_span(file, label),
                      hint=f"write {head} = {label}")


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
    if "LBRACE" in expected:
        label = _label_error(e, file)
        if label is not None:
            return label
    if tok.type == "$END":
        span = _end_of_text(text, file)
        open_blocks, misfit = _open_blocks(text)
        if open_blocks and "RBRACE" in expected:
            if misfit is not None:  # indentation shows which block lacks its '}'
                block, before_line = misfit
                hint = f"add '}}' to close '{block.name}' before line {before_line}"
            else:
                block = open_blocks[-1]
                hint = f"add '}}' to close '{block.name}'"
            return Diagnostic(
                f"unexpected end of file: block '{block.name}' is not closed", span, hint=hint,
                notes=(Note(f"'{block.name}' opened here", A.Span(file, block.line, block.column, block.line,
                                                                  block.column + 1)),))
        what = "override" if override else "file"
        return Diagnostic(f"unexpected end of {what}; expected {_join(_alternatives(expected))}", span)

    span = _tok_span(file, tok)
    prev = _previous_word(text, tok.start_pos)
    if prev in _RESERVED and tok.type in ("EQUAL", "DOT"):
        return Diagnostic(f"'{prev}' is a reserved word and cannot be used as a key", span,
                          hint="'use', 'let' and 'expect' start statements")
    alts = _alternatives(expected)
    if "EQUAL" in expected and prev and tok.type in ("NUMBER", "REF", "LSQB", "LPAR", "MINUS", "EQUAL", "CMP"):
        return Diagnostic(f"expected '=' after '{prev}', found {_describe(tok)}", span, hint=f"write {prev} = {tok}")
    if tok.type == "RBRACE" and "RBRACE" not in expected and not _open_blocks(text[: tok.start_pos])[0]:
        return Diagnostic("unexpected '}': no block is open here", span)
    if len(alts) <= 3:
        after = f" after '{prev}'" if prev and tok.type != "NAME" and "EQUAL" in expected else ""
        return Diagnostic(f"expected {_join(alts)}{after}, found {_describe(tok)}", span)
    return Diagnostic(f"unexpected {_describe(tok)}", span, hint=f"expected {_join(alts)}")
