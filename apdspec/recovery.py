"""Syntax-error recovery: parse with Lark's interactive LALR parser and, after an error, go on at
the next statement, so that one mistake does not hide the others in the same file.

The parser is fed token by token. Before the first token of every line, if the parser stands
between two statements (it would accept a whole new statement `x = 1;` there), its stacks are
saved. At an error the parser returns to the last such point at or before the error, and the lexer
to the first line after it that the broken statement does not start on (the error's own line, if
the error token starts a line and the saved point is earlier: `seed zero` fails only at the next
line's first token). The statement in between is dropped.

No cascades: an error at the first token read after a recovery belongs to the same broken region
and is not reported (recovery moves on by a line), nor is a `}` that finds no block open after an
earlier error (a broken block header was dropped, its `}` closed the block around it); the end of
the file ends recovery (an unclosed block is reported once). Every recovery moves forward by at
least one line, so parsing ends. On a file without errors the cost is ~15% over a plain parse (the
probe's answer is cached per parser state stack).
"""
from __future__ import annotations

import copy
from typing import Any, Callable

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken
from lark.parsers.lalr_interactive_parser import InteractiveParser

MAX_SYNTAX_ERRORS = 50  # per file: past this many, the rest is noise


def _probe_tokens(at: Token) -> list[Token]:
    """`x = 1 ;`: a whole statement, and the end of one (never valid inside a value or a call)."""
    return [Token.new_borrow_pos(t, v, at) for t, v in (("NAME", "x"), ("EQUAL", "="), ("NUMBER", "1"),
                                                         ("SEMICOLON", ";"))]


def _between_statements(state: Any, probe_conf: Any, at: Token) -> bool:
    """Whether the parser in `state` would accept a whole new statement next (no callbacks run)."""
    trial = type(state)(probe_conf, state.lexer, list(state.state_stack), list(state.value_stack))
    try:
        for tok in _probe_tokens(at):
            trial.feed_token(tok)
    except UnexpectedToken:
        return False
    return True


def _saved(values: list) -> list:
    """The parser's value stack as it is now, to come back to: Lark reduces a left-recursive
    repetition (`_item*`) by appending to the children list of the tree already on the stack, in
    place, so each tree's number of children is kept with it (their subtrees are finished)."""
    return [(v, len(v.children)) if isinstance(v, Tree) else (v, None) for v in values]


def _restored(saved: list) -> list:
    """A value stack equal to the one `_saved` saw, in new lists (parsing on appends to those)."""
    return [Tree(v.data, v.children[:n], v._meta) if n is not None else v for v, n in saved]


def _next_line_start(text: str, pos: int) -> int | None:
    """The offset of the first character that starts a statement on a line after the one holding
    offset `pos` (blank and comment-only lines skipped), or None at the end of the text."""
    i = text.find("\n", pos)
    while i != -1:
        j = i + 1
        while j < len(text) and text[j] in " \t\f\r":
            j += 1
        if j < len(text) and text[j] not in "\n#":
            return j
        i = text.find("\n", j) if j < len(text) else -1
    return None


def _first_on_line(text: str, pos: int) -> bool:
    """Whether only blanks precede offset `pos` on its line."""
    start = text.rfind("\n", 0, pos) + 1
    return not text[start:pos].strip(" \t\f\r")


def _seek(lexer_thread: Any, text: str, pos: int) -> None:
    """Move the lexer to offset `pos` (line and column recomputed)."""
    ctr = lexer_thread.state.line_ctr
    line_start = text.rfind("\n", 0, pos) + 1
    ctr.char_pos, ctr.line = pos, text.count("\n", 0, pos) + 1
    ctr.line_start_pos, ctr.column = line_start, pos - line_start + 1
    lexer_thread.state.last_token = None


def parse_recovering(lark: Lark, text: str, start: str,
                     to_diagnostic: Callable[[UnexpectedInput], Any]) -> tuple[Any, list]:
    """(tree, diagnostics): the Lark tree of `text` and no diagnostics when it has no syntax error;
    else every syntax error found (at most MAX_SYNTAX_ERRORS, each made by `to_diagnostic(exception)`)
    and the tree of the statements that parsed around them (None if even that is not whole).
    Exceptions other than Lark's syntax errors (a lexer callback's limit) propagate."""
    ip = lark.parse_interactive(text, start=start)
    state, lexer_thread = ip.parser_state, ip.lexer_thread
    probe_conf = copy.copy(state.parse_conf)
    probe_conf.callbacks = {}
    saved: list[tuple[int, list, list]] = []  # (offset, state stack, value stack) between statements
    known: dict[tuple, bool] = {}  # state stack -> between statements (the probe's answer depends on it alone)

    def between(tok: Token) -> bool:
        key = tuple(state.state_stack)
        if key not in known:
            known[key] = _between_statements(state, probe_conf, tok)
        return known[key]

    errors: list = []
    resumed_at: int | None = None  # offset the lexer resumed at after the last error, until a token parses
    last: Token | None = None
    while True:
        try:
            for tok in lexer_thread.lex(state):
                if _first_on_line(text, tok.start_pos) and (not saved or saved[-1][0] < tok.start_pos) \
                        and between(tok):
                    saved.append((tok.start_pos, list(state.state_stack), _saved(state.value_stack)))
                state.feed_token(tok)
                last = tok
                if resumed_at is not None and tok.start_pos > resumed_at:
                    resumed_at = None  # a token after the first one parsed: errors count again
            end = Token.new_borrow_pos("$END", "", last) if last is not None else Token("$END", "", 0, 1, 1)
            return state.feed_token(end, True), errors
        except UnexpectedInput as e:
            if isinstance(e, UnexpectedToken) and e.interactive_parser is None:
                e.interactive_parser = InteractiveParser(ip.parser, state, lexer_thread)
            at_end = isinstance(e, UnexpectedToken) and e.token.type == "$END"
            pos = _error_offset(e, text)
            at_rest = isinstance(e, UnexpectedToken) and _between_statements(state, probe_conf, e.token)
            if _reported(e, pos, resumed_at, errors, at_rest):
                errors.append(to_diagnostic(e))
            back = [s for s in saved if s[0] <= pos]
            if at_end or len(errors) >= MAX_SYNTAX_ERRORS or not back:  # not back: no statement began before it
                return None, errors
            offset, states, values = back[-1]
            # the error token starts a line after the broken statement's first: it may start the next statement
            here = _first_on_line(text, pos) and offset < pos and resumed_at != pos
            resume = pos if here else _next_line_start(text, pos)
            del saved[len(back):]
            state.state_stack[:], state.value_stack[:] = list(states), _restored(values)
            if resume is None:  # the broken statement was the last: end the text there
                try:
                    return state.feed_token(Token("$END", "", len(text), 1, 1), True), errors
                except UnexpectedToken as eof:  # a block is still open at the end
                    eof.interactive_parser = InteractiveParser(ip.parser, state, lexer_thread)
                    if not any(_is_end(d) for d in errors):
                        errors.append(to_diagnostic(eof))
                    return None, errors
            _seek(lexer_thread, text, resume)
            resumed_at = resume


def _reported(e: UnexpectedInput, pos: int, resumed_at: int | None, errors: list, between: bool) -> bool:
    """Whether an error is news rather than a consequence of an earlier one: not at the first token
    read after a recovery, and not a '}' that finds no block open after an earlier error (most
    likely the end of a block whose broken header was dropped). `between`: the parser stands
    between statements at the error."""
    if resumed_at is not None and pos <= resumed_at:
        return False
    return not (errors and between and isinstance(e, UnexpectedToken) and e.token.type == "RBRACE")


def _is_end(diagnostic: Any) -> bool:
    return "end of file" in getattr(diagnostic, "message", "")


def _error_offset(e: UnexpectedInput, text: str) -> int:
    if isinstance(e, UnexpectedCharacters):
        return e.pos_in_stream
    tok = e.token
    if tok.type == "$END" or tok.start_pos is None:
        return len(text)
    return tok.start_pos
