"""Files, `use` composition and command-line overrides -> `LoadedSpec`.

Reading order: the file's `use` base first (recursively, cycles are errors), then the file's own
statements, then each `-s path=value` override in order. Every problem from every file is
collected; if there is any, `SpecError` is raised with all of them.
"""
from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from typing import Sequence

from runtime import spec as S

from . import ast as A
from .build import build, check_experiment, check_sweep_size, missing_target, provenance
from .checker import FileEval
from .state import State
from .errors import MAX_ERRORS, Collector, SpecError, safety_net
from .limits import MAX_BYTES, MAX_TOKENS, MAX_USE_DEPTH
from .parser import parse, parse_override, tokens_used



@dataclass(frozen=True)
class LoadedSpec:
    experiment: S.Experiment  # checked and resolved; with a sweep, every point is checked instead (a swept
    # field keeps its value from outside the sweep here, which is never run and so not checked on its own)
    text: str  # canonical resolved spec (to_apd), what the run directory stores
    files: tuple[str, ...]  # absolute paths of every file read, in reading order (for hashing)
    state: State = field(repr=False, compare=False)
    sources: dict[str, str] = field(repr=False, compare=False, default_factory=dict)

    def where(self, rt_path: str) -> A.Span | None:
        """The span that set runtime field `rt_path`, or None if it has its default value."""
        return provenance(self.state, rt_path)


class _Loader:
    def __init__(self) -> None:
        self.diags = Collector()
        self.sources: dict[str, str] = {}
        self.files: list[str] = []
        self.tokens = 0  # tokens parsed so far, in every file

    def read(self, display: str, path: str, use: A.Use | None) -> str | None:
        """The text of a file, or None after reporting why it cannot be read."""
        def fail(reason: str) -> None:
            if use is not None:
                where = "the current directory" if use.span.file.startswith("<") else "the directory of the using file"
                self.diags.error(f"cannot read '{use.path.value}' (resolved to {path}): {reason}", use.path.span,
                                 f"a 'use' path is relative to {where}")
            else:
                self.diags.error(f"cannot read spec: {reason}", None, file=display)

        try:
            mode = os.stat(path).st_mode
            if stat.S_ISDIR(mode):
                if use is None and os.path.exists(os.path.join(path, "spec.json")):  # a run directory
                    self.diags.error("cannot read spec: it is a run directory", None,
                                     f"continue it with: apdspec run --resume {display}", file=display)
                else:
                    fail("it is a directory")
                return None
            if not stat.S_ISREG(mode):  # a device or a pipe (FIFO) could block or never end
                fail("not a regular file (a pipe or a device); give the path of a .apd file")
                return None
            with open(path, "rb") as fh:
                data = fh.read(MAX_BYTES + 1)
        except OSError as e:
            fail(e.strerror or str(e))
            return None
        except ValueError:  # a NUL or an unencodable character in a path given from Python
            fail("not a valid file name")
            return None
        if len(data) > MAX_BYTES:
            fail(f"larger than {MAX_BYTES // 1024} KB; not a spec file")
            return None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            line = data[: e.start].count(b"\n") + 1
            col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
            self.sources[display] = data.decode("utf-8", "replace")  # for the snippet
            self.diags.error("not a UTF-8 text file", A.Span(display, line, col, line, col + 1),
                             "an .apd spec is UTF-8 text")
            return None
        self.files.append(os.path.abspath(path))
        self.sources[display] = text
        return text

    def file_state(self, text: str, display: str, path: str, stack: tuple[str, ...]) -> State:
        # one token budget for the file and every file it uses: a `use` chain cannot multiply the parse time
        tree = parse(text, display, self.diags, max(MAX_TOKENS - self.tokens, 0))
        self.tokens += tokens_used()
        state = State()
        if tree is None:
            state.broken = True
            return state
        return self.eval_tree(tree, display, path, stack)

    def eval_tree(self, tree: A.File, display: str, path: str, stack: tuple[str, ...]) -> State:
        def load_base(use: A.Use) -> State | None:
            return self.base(use, display, path, stack)

        ev = FileEval(State(), self.diags, load_base)
        ev.run_file(tree)
        return ev.state

    def base(self, use: A.Use, display: str, path: str, stack: tuple[str, ...]) -> State | None:
        rel = use.path.value
        here = os.path.dirname(os.path.abspath(path)) if path else os.getcwd()
        target = os.path.normpath(os.path.join(here, rel))
        shown = os.path.normpath(os.path.join(os.path.dirname(display), rel)) if path else rel
        if target in stack:
            chain = " -> ".join(os.path.basename(p) for p in stack[stack.index(target):] + (target,))
            self.diags.error(f"'use' cycle: {chain}", use.path.span, "a file cannot build on itself")
            return None
        if len(stack) >= MAX_USE_DEPTH:  # each level recurses through the checker
            self.diags.error(f"'use' chain longer than {MAX_USE_DEPTH} files", use.path.span,
                             "build on a file nearer the base")
            return None
        text = self.read(shown, target, use)
        if text is None:
            return None
        state = self.file_state(text, shown, target, stack + (target,))
        return None if state.broken else state

    def overrides(self, state: State, overrides: Sequence[str]) -> State:
        for i, text in enumerate(overrides, 1):
            name = f"<override {i}>"
            self.sources[name] = text
            if "\n" in text:
                self.diags.error("an override is one line: path=value", A.Span(name, 1, 1, 1, 2))
                continue
            tree = parse_override(text, name, self.diags)
            if tree is not None:
                ev = FileEval(state, self.diags, override=True)
                ev.run_override(tree)
                state = ev.state
        return state

    def finish(self, state: State, display: str) -> LoadedSpec:
        checked = not state.broken and not self.diags.full  # not full: the rest was not read
        if checked and not state.target_failed and state.kind is None:
            missing_target(state, display, self.diags)
        resolved = None
        if checked and state.kind is not None and check_sweep_size(state, self.diags):
            exp = build(state, _default_name(display))
            resolved = check_experiment(state, exp, self.diags, display)
        if self.diags or resolved is None:
            if not self.diags:  # cannot happen: every failure above reports why
                self.diags.error("the spec could not be checked", None, file=display)
            if self.diags.full:
                self.diags.error(f"too many errors: stopped checking after {MAX_ERRORS}", None, file=display)
            raise SpecError(self.diags.diagnostics, self.sources)
        from .unparse import to_apd

        return LoadedSpec(resolved, to_apd(resolved), tuple(self.files), state, self.sources)


def _default_name(display: str) -> str:
    stem = os.path.splitext(os.path.basename(display))[0]
    return stem if re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", stem) else "experiment"


def read_source(path: str | os.PathLike) -> str:
    """The text of a spec file; SpecError (never OSError) when it cannot be read as UTF-8 text."""
    with safety_net(os.fspath(path)):
        ld = _Loader()
        text = ld.read(os.fspath(path), os.fspath(path), None)
        if text is None:
            raise SpecError(ld.diags.diagnostics, ld.sources)
        return text


def load(path: str | os.PathLike, overrides: Sequence[str] = ()) -> LoadedSpec:
    """Read, compose (use), override, check and resolve a spec file. Raises SpecError (only)."""
    display = os.fspath(path)
    with safety_net(display):
        ld = _Loader()
        text = ld.read(display, display, None)
        if text is None:
            raise SpecError(ld.diags.diagnostics, ld.sources)
        state = ld.file_state(text, display, display, (os.path.abspath(display),))
        state = ld.overrides(state, overrides)
        return ld.finish(state, display)


def loads(text: str, filename: str = "<string>", overrides: Sequence[str] = ()) -> LoadedSpec:
    """Like `load` for text in memory; `use` paths are relative to `filename`'s directory
    (the current directory for "<string>"). Raises SpecError (only)."""
    with safety_net(filename):
        ld = _Loader()
        ld.sources[filename] = text
        real = "" if filename.startswith("<") else filename
        stack = (os.path.abspath(real),) if real else ()
        state = ld.file_state(text, filename, real, stack)
        state = ld.overrides(state, overrides)
        return ld.finish(state, filename)


__all__ = ["LoadedSpec", "load", "loads"]
