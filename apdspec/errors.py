"""Diagnostics: one type for every user-facing problem, rendered with a source snippet.

    specs/foo.apd:12:7: error: unknown key 'lerning_rate' in block 'decompose'
       12 |   lerning_rate = 3e-3
          |   ^^^^^^^^^^^^
    hint: did you mean 'lr'?
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Mapping

from .ast import Span


@dataclass(frozen=True)
class Note:
    message: str
    span: Span | None = None


@dataclass(frozen=True)
class Diagnostic:
    """A problem located by `span`; a problem with a whole file (unreadable, missing) has span None."""

    message: str
    span: Span | None
    file: str = ""  # used when span is None
    hint: str = ""
    notes: tuple[Note, ...] = ()
    severity: str = "error"

    @property
    def filename(self) -> str:
        return self.span.file if self.span is not None else self.file

    def location(self) -> str:
        if self.span is None:
            return self.file
        return f"{self.span.file}:{self.span.line}:{self.span.column}"


MAX_SHOWN = 100  # diagnostics rendered; the rest are counted (thousands of errors help nobody)


class SpecError(Exception):
    """Raised by `apdspec.load`/`loads` with every problem found, sorted by position.

    `internal` is True when the error stands for a bug in apdspec (an unexpected exception
    converted by the safety net of the public entry points), not for a mistake in the spec."""

    def __init__(self, diagnostics: Iterable[Diagnostic], sources: Mapping[str, str] | None = None,
                 internal: bool = False):
        self.sources = dict(sources or {})
        self.internal = internal
        order = {name: i for i, name in enumerate(self.sources)}
        self.diagnostics = sorted(
            diagnostics,
            key=lambda d: (order.get(d.filename, len(order)), d.filename,
                           d.span.line if d.span else 0, d.span.column if d.span else 0),
        )
        super().__init__(self.render())

    def render(self) -> str:
        lines: dict[str, list[str]] = {}  # each source split once, however many diagnostics it has
        out = [render(d, self.sources, lines) for d in self.diagnostics[:MAX_SHOWN]]
        if len(self.diagnostics) > MAX_SHOWN:
            out.append(f"... and {len(self.diagnostics) - MAX_SHOWN} more errors")
        return "\n".join(out)

    def __str__(self) -> str:
        return self.render()


def internal_error(e: BaseException, file: str, sources: Mapping[str, str] | None = None) -> SpecError:
    """The safety net's SpecError for an exception that is a bug in apdspec, not a spec mistake."""
    return SpecError([Diagnostic(f"internal error while checking the spec: {type(e).__name__}: {e}"[:500], None,
                                 file=file, hint="this is a bug in apdspec: please report it with the spec")],
                     sources, internal=True)


@contextmanager
def safety_net(file: str) -> Iterator[None]:
    """Last resort at the public entry points: any exception but SpecError becomes an internal
    SpecError (counted by benchmarks/fuzz_checker.py, where the target is that it never fires)."""
    try:
        yield
    except SpecError:
        raise
    except Exception as e:  # RecursionError and MemoryError included: a bug, whatever the input
        raise internal_error(e, file) from e


def render(d: Diagnostic, sources: Mapping[str, str], lines: dict[str, list[str]] | None = None) -> str:
    lines = {} if lines is None else lines
    out = [f"{d.location()}: {d.severity}: {d.message}"]
    if d.span is not None:
        out += _snippet(d.span, _lines(d.span.file, sources, lines))
    if d.hint:
        out.append(f"hint: {d.hint}")
    for note in d.notes:
        if note.span is None:
            out.append(f"note: {note.message}")
        else:
            out.append(f"note: {note.span.file}:{note.span.line}:{note.span.column}: {note.message}")
            out += _snippet(note.span, _lines(note.span.file, sources, lines))
    return "\n".join(out)


def _lines(file: str, sources: Mapping[str, str], cache: dict[str, list[str]]) -> list[str] | None:
    if file not in cache:
        text = sources.get(file)
        # only '\n' ends a line, as for the lexer (str.splitlines also splits at \f, \x1c, \u2028, ...)
        cache[file] = None if text is None else [line.rstrip("\r") for line in text.split("\n")]
    return cache[file]


SNIPPET_WIDTH = 120  # characters of a long source line shown around the error


def _snippet(span: Span, lines: list[str] | None) -> list[str]:
    if lines is None or span.line < 1:
        return []
    # past the last line: the end of a file that ends with a newline; show an empty last line
    src = lines[span.line - 1] if span.line <= len(lines) else ""
    start = max(span.column, 1)
    if span.end_line == span.line:
        end = max(span.end_column, start + 1)
    else:
        end = max(len(src) + 1, start + 1)
    if len(src) > SNIPPET_WIDTH:  # a window around the column, so that a huge line stays readable
        lo = max(0, min(start - 1 - SNIPPET_WIDTH // 3, len(src) - SNIPPET_WIDTH))
        src = src[lo:lo + SNIPPET_WIDTH]
        start, end = start - lo, min(end - lo, SNIPPET_WIDTH + 1)
        end = max(end, start + 1)
    # one column per character: show tabs and control characters as single visible characters
    shown = "".join(c if c.isprintable() else " " for c in src)
    width = max(5, len(str(span.line)))
    return [f"{span.line:>{width}} | {shown}".rstrip(), f"{'':>{width}} | {' ' * (start - 1)}{'^' * (end - start)}"]


@dataclass
class Collector:
    """Accumulates diagnostics while a spec is read and checked."""

    diagnostics: list[Diagnostic] = field(default_factory=list)

    def error(self, message: str, span: Span | None, hint: str = "", notes: tuple[Note, ...] = (), file: str = "") -> None:
        self.diagnostics.append(Diagnostic(message, span, file=file, hint=hint, notes=notes))

    def __bool__(self) -> bool:
        return bool(self.diagnostics)

    @property
    def full(self) -> bool:
        """Enough errors to stop checking: each costs a did-you-mean, and nobody reads thousands."""
        return len(self.diagnostics) >= MAX_ERRORS


MAX_ERRORS = 200  # the checker stops checking statements after this many errors
MAX_CHOICES = 200  # a did-you-mean among more names is no help, and costs ~1 ms per lookup


def did_you_mean(word: str, choices: Iterable[str], max_distance: int = 2) -> str | None:
    """The closest choice within `max_distance` edits (Levenshtein), or None."""
    best, best_d = None, max_distance + 1
    w = word.lower()
    for i, c in enumerate(choices):
        if i >= MAX_CHOICES:
            break
        d = edit_distance(w, c.lower(), best_d - 1)
        if d < best_d:
            best, best_d = c, d
    return best


def edit_distance(a: str, b: str, limit: int | None = None) -> int:
    """Levenshtein distance; with `limit`, any distance above it may be returned as limit + 1,
    computed in a band of width 2 limit + 1 (linear time, so long names cost no more than short)."""
    if limit is None:
        limit = max(len(a), len(b))
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    big = limit + 1
    prev = [j if j <= limit else big for j in range(len(b) + 1)]
    for i, ca in enumerate(a, 1):
        lo, hi = max(1, i - limit), min(len(b), i + limit)
        cur = [big] * (len(b) + 1)
        cur[0] = i if i <= limit else big
        for j in range(lo, hi + 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != b[j - 1]), big)
        if min(cur[max(0, lo - 1):hi + 1]) > limit:
            return big
        prev = cur
    return min(prev[-1], big)
