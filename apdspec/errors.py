"""Diagnostics: one type for every user-facing problem, rendered with a source snippet.

    specs/foo.apd:12:7: error: unknown key 'lerning_rate' in block 'decompose'
       12 |   lerning_rate = 3e-3
          |   ^^^^^^^^^^^^
    hint: did you mean 'lr'?
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

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


class SpecError(Exception):
    """Raised by `apdspec.load`/`loads` with every problem found, sorted by position."""

    def __init__(self, diagnostics: Iterable[Diagnostic], sources: Mapping[str, str] | None = None):
        self.sources = dict(sources or {})
        order = {name: i for i, name in enumerate(self.sources)}
        self.diagnostics = sorted(
            diagnostics,
            key=lambda d: (order.get(d.filename, len(order)), d.filename,
                           d.span.line if d.span else 0, d.span.column if d.span else 0),
        )
        super().__init__(self.render())

    def render(self) -> str:
        return "\n".join(render(d, self.sources) for d in self.diagnostics)

    def __str__(self) -> str:
        return self.render()


def render(d: Diagnostic, sources: Mapping[str, str]) -> str:
    out = [f"{d.location()}: {d.severity}: {d.message}"]
    if d.span is not None:
        out += _snippet(d.span, sources.get(d.span.file))
    if d.hint:
        out.append(f"hint: {d.hint}")
    for note in d.notes:
        if note.span is None:
            out.append(f"note: {note.message}")
        else:
            out.append(f"note: {note.span.file}:{note.span.line}:{note.span.column}: {note.message}")
            out += _snippet(note.span, sources.get(note.span.file))
    return "\n".join(out)


def _snippet(span: Span, text: str | None) -> list[str]:
    if text is None or span.line < 1:
        return []
    lines = text.splitlines() or [""]
    if span.line > len(lines):
        # the end of a file that ends with a newline: show an empty last line
        src = ""
    else:
        src = lines[span.line - 1]
    # one column per character: show tabs and control characters as single visible characters
    shown = "".join(c if c.isprintable() else " " for c in src)
    start = max(span.column, 1)
    if span.end_line == span.line:
        end = max(span.end_column, start + 1)
    else:
        end = max(len(src) + 1, start + 1)
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


def did_you_mean(word: str, choices: Iterable[str], max_distance: int = 2) -> str | None:
    """The closest choice within `max_distance` edits (Levenshtein), or None."""
    best, best_d = None, max_distance + 1
    for c in choices:
        d = edit_distance(word.lower(), c.lower())
        if d < best_d:
            best, best_d = c, d
    return best


def edit_distance(a: str, b: str) -> int:
    if abs(len(a) - len(b)) > 3:
        return abs(len(a) - len(b))
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]
