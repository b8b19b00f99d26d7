"""Resource limits of the language, checked before any parsing so that no input can exhaust the
checker: every spec, whatever its bytes, is reported (or accepted) in well under a second.

A spec is a few hundred tokens; each limit is orders of magnitude above what a real spec needs and
below where the parser, the Python recursion limit or the sweep expansion would take seconds.
"""
from __future__ import annotations

import re

from . import ast as A
from .errors import Diagnostic

MAX_BYTES = 256 * 1024  # size of one file (text given in memory: characters)
MAX_LINE = 2000  # characters per line
MAX_TOKENS = 10_000  # tokens per file (a shipped spec has at most 132; parsing costs ~20 us per token)
MAX_NESTING = 32  # brackets and braces open at once: ( [ {
MAX_TREE_DEPTH = 100  # levels of the syntax tree (blocks, calls, lists, operators): recursion depth
MAX_USE_DEPTH = 32  # files in a `use` chain
MAX_SWEEP_POINTS = 2000  # points of a sweep: each is validated (and run), at up to 0.2 ms per point

# Strings (possibly unterminated: the lexer reports those), comments, brackets: one linear scan.
_SCAN = re.compile(r'"(?:[^"\\\n]|\\.)*"?|#[^\n]*|[\[\](){}]')
_BAD_CHAR = re.compile(r"[\x00\ud800-\udfff]")


def position(text: str, pos: int) -> tuple[int, int]:
    """1-based (line, column) of character offset `pos` (columns count characters, like the lexer)."""
    line = text.count("\n", 0, pos) + 1
    return line, pos - (text.rfind("\n", 0, pos) + 1) + 1


def _at(file: str, text: str, pos: int, message: str, hint: str = "") -> Diagnostic:
    line, col = position(text, pos)
    return Diagnostic(message, A.Span(file, line, col, line, col + 1), hint=hint)


def brackets(text: str):
    """(character, offset) of every bracket or brace outside strings and comments, in order."""
    for m in _SCAN.finditer(text):
        c = m.group(0)
        if len(c) == 1 and c in "[](){}":
            yield c, m.start()


def check_text(text: str, file: str) -> Diagnostic | None:
    """The first limit `text` breaks, located; None if it is within every limit checked before lexing."""
    if len(text) > MAX_BYTES:
        return _at(file, text, MAX_BYTES, f"the spec is larger than {MAX_BYTES // 1024} KB; not a spec file",
                   "a spec is a few KB of text")
    m = _BAD_CHAR.search(text)
    if m:
        if m.group(0) == "\x00":
            return _at(file, text, m.start(), "NUL character in the spec", "an .apd spec is UTF-8 text, not a binary file")
        return _at(file, text, m.start(), "not valid UTF-8 text", "an .apd spec is UTF-8 text")
    start = 0
    for line in text.split("\n"):
        if len(line) > MAX_LINE:
            return _at(file, text, start + MAX_LINE, f"line longer than {MAX_LINE} characters",
                       "split long values over several lines")
        start += len(line) + 1
    depth = 0
    for c, pos in brackets(text):
        if c in "([{":
            depth += 1
            if depth > MAX_NESTING:
                return _at(file, text, pos, f"nesting too deep: more than {MAX_NESTING} brackets and blocks open",
                           "a spec nests a few levels of blocks, calls and lists")
        else:
            depth = max(depth - 1, 0)  # an unbalanced closer is a syntax error for the parser to report
    return None
