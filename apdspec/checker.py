"""Statements -> settings: the checker of one file (or one command-line override).

Each statement is checked against the closed schema (unknown keys and blocks, types, call forms,
duplicates, constants, expectations, sweep axes) and applied to a `State`. Building the runtime
`Experiment` from the state and running the contract's `resolve()`/`validate()` is `build.py`.
"""
from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from typing import Any, Callable

from runtime import spec as S

from . import ast as A
from .errors import Collector, Note, did_you_mean
from .schema import EXPERIMENT, REDUCTIONS, REPORT, TARGETS, Form, Leaf, Obj
from .state import NONE, RESET, Setting, State, TargetKind, join_path, lang_path
from .sweeps import generated
from .unparse import format_number
from .values import SWEEP_FUNCTIONS, Bad, Float, Int, Str, describe, value_parts

# ------------------------------------------------------------------------------------------
# Scopes

# Hints for keys people bring from other APD configs (notes §8) or from the paper's symbols.
ALIASES = {
    "lr": "the learning rate is an optimizer argument: optimizer = adam(lr = 1e-3)",
    "learning_rate": "the learning rate is an optimizer argument: optimizer = adam(lr = 1e-3)",
    "batch_size": "did you mean 'batch'?",
    "n_components": "did you mean 'components'?",
    "c": "the number of components C is 'components'",
    "m": "the inner rank m is 'rank'",
    "k": "top-k is 'topk = batch(0.25)' or 'topk = sample(2)'",
    "n_features": "did you mean 'features'?",
    "n_hidden": "did you mean 'hidden'?",
    "n_instances": "did you mean 'replicates'?",
    "instances": "did you mean 'replicates'?",
    "warmup": "warmup is a schedule argument: schedule = cosine(warmup = 5%)",
    "lr_warmup_pct": "warmup is a schedule argument: schedule = cosine(warmup = 5%)",
    "weight_decay": "weight decay is an optimizer argument: optimizer = adamw(lr = 5e-3, weight_decay = 0.01)",
    "feature_probability": "did you mean 'probability'?",
    "schatten_coeff": "write simplicity = schatten(0.7, p = 1) in the loss block",
    "schatten_pnorm": "write simplicity = schatten(0.7, p = 1) in the loss block",
    "param_match_coeff": "the param-match loss is 'faithfulness' in the loss block",
    "topk_recon_coeff": "the top-k reconstruction loss is 'minimality' in the loss block",
    "act_recon_coeff": "write act_recon = 1 in the loss block",
    "lp_sparsity_coeff": "write sparsity = lp(7, p = 0.9) in the loss block",
    "unit_norm_matrices": "did you mean 'unit_norm'?",
    "train": "target training is written inside the target block: target tms { train { ... } }",
    "expect": "expectations are statements in the report block: expect mmcs >= 0.99",
    "name": "the experiment is named in its header: experiment NAME { ... }",
    "target": "write target KIND { ... }, e.g. target tms { features = 5 }",
    "sweep": "write sweep { seed = seeds(5) }",
    "correlated": "features that fire together are 'synced' groups: synced = [[0, 1], [2, 3]]",
    "anti_correlated": "did you mean 'anticorrelated'?",
    "feature_importance": "per-feature importances are 'importance' in the target's train block",
    "data_file": 'write data file("path.npz"), or file = "path.npz" in the data block',
    "path": 'write data file("path.npz"), or file = "path.npz" in the data block',
}


# Aliases whose hint beats a near name ('correlated' is nearest to 'anticorrelated', its opposite).
_PREFERRED_ALIASES = ("correlated",)


@dataclass(frozen=True)
class Scope:
    kind: str  # experiment | object | target | sweep | zip
    obj: Obj | None
    lang: tuple[str, ...]  # language path of the block
    rt: str  # runtime path prefix
    top: bool = False  # the top level of a file (use / let / experiment allowed)
    group: int | None = None  # zip group

    @property
    def title(self) -> str:
        return ".".join(self.lang) if self.lang else "experiment"


TOP = Scope("experiment", EXPERIMENT, (), "", top=True)
EXP = Scope("experiment", EXPERIMENT, (), "")


def _fields(scope: Scope, state: State) -> dict[str, Leaf | Obj]:
    if scope.kind == "target":
        return TARGETS[state.kind].fields if state.kind else {}
    if scope.kind == "experiment":
        return EXPERIMENT.fields
    return scope.obj.fields if scope.obj is not None else {}


def _names(scope: Scope, state: State) -> list[str]:
    names = list(_fields(scope, state))
    if scope.kind == "experiment":
        names += ["target", "sweep"]
    return names


# ------------------------------------------------------------------------------------------
# Evaluating one file (or one override)


class FileEval:
    """Applies one file's statements to `state`, reporting problems to `diags`.

    `load_base(use, stack)` returns the state of a used file (or None)."""

    def __init__(self, state: State, diags: Collector, load_base: Callable[[A.Use], State | None] | None = None,
                 override: bool = False):
        self.state = state
        self.diags = diags
        self.load_base = load_base
        self.override = override
        self.seen: dict[str, A.Span] = {}  # runtime paths set by this file -> span
        self.seen_blocks: dict[tuple, A.Span] = {}
        self.experiment_block: A.Span | None = None

    # -- entry points
    def run_file(self, f: A.File) -> None:
        first = True
        for item in f.items:
            if self.diags.full:
                return
            if isinstance(item, A.Use):
                if not first:
                    self.diags.error("'use' must be the first statement of a file", item.span,
                                     "a file builds on at most one other file, named before anything else")
                elif self.load_base is not None:
                    base = self.load_base(item)
                    if base is None:
                        self.state.broken = True
                    else:
                        self.state = base.copy()
            else:
                self.stmt(item, TOP)
            first = False

    def run_override(self, a: A.Assign) -> None:
        self.assign(a, EXP)

    # -- diagnostics
    def bad(self, e: Bad, key: str) -> None:
        if e.span is not None:
            self.diags.error(e.message.replace("{key}", key), e.span, e.hint)

    def unknown(self, what: str, name: str, span: A.Span, scope: Scope) -> None:
        names = _names(scope, self.state)
        near = did_you_mean(name, names)
        if name.lower() in ALIASES and name.lower() in _PREFERRED_ALIASES:
            hint = ALIASES[name.lower()]
        elif near:
            hint = f"did you mean '{near}'?"
        elif scope.kind == "target" and name == "train":
            hint = f"{self.state.kind} targets are not trained"
        elif name.lower() in ALIASES:
            hint = ALIASES[name.lower()]
        else:
            hint = "known here: " + ", ".join(names) if names else ""
        where = f"for a {self.state.kind} target" if scope.kind == "target" else f"in block '{scope.title}'"
        self.diags.error(f"unknown {what} '{name}' {where}", span, hint)

    def mark(self, rt: str, span: A.Span, key: str) -> bool:
        """Record that this file sets `rt`; report a duplicate (same path, or one inside the other)."""
        for other, first in self.seen.items():
            if other == rt or other.startswith(rt + ".") or rt.startswith(other + "."):
                what = "set" if other == rt else f"set by '{lang_path(other)}'"
                self.diags.error(f"duplicate key '{key}': already {what} in this file", span,
                                 notes=(Note("first set here", first),))
                return False
        self.seen[rt] = span
        return True

    # -- statements
    def stmt(self, s: A.Stmt, scope: Scope) -> None:
        if isinstance(s, A.Assign):
            self.assign(s, scope)
        elif isinstance(s, A.Block):
            self.block(s, scope)
        elif isinstance(s, A.Let):
            if scope.top:
                self.let(s)
            else:
                self.diags.error("'let' is only allowed at the top level of a file", s.span,
                                 "move the constant before the experiment block")
        elif isinstance(s, A.Use):
            self.diags.error("'use' must be the first statement of a file", s.span)
        elif isinstance(s, (A.Expect, A.ExpectBare)):
            if scope.obj is REPORT:
                self.expect(s)
            else:
                self.diags.error("'expect' belongs in the report block", s.span,
                                 "write report { expect mmcs >= 0.99 }")

    def let(self, s: A.Let) -> None:
        consts = self.state.env.consts
        if s.name in ("none", "true", "false", "all", "pi"):
            self.diags.error(f"'{s.name}' is a reserved value and cannot name a constant", s.name_span)
            return
        if s.name in consts:
            first = consts[s.name].span
            inherited = first.file != s.span.file
            self.diags.error(f"constant '{s.name}' is already defined" + (" in a used file" if inherited else ""),
                             s.name_span, "constants are evaluated where they are used; override the field instead"
                             if inherited else "", notes=(Note("defined here", first),))
            return
        for ref in _refs(s.value):
            if ref.name not in consts:
                near = did_you_mean(ref.name, consts)
                self.diags.error(f"undefined constant '${ref.name}'", ref.span,
                                 f"did you mean '${near}'?" if near else "define it first: let NAME = value")
                return
        self.state.env.define(s.name, s.value, s.span)

    def block(self, b: A.Block, scope: Scope) -> None:
        key = scope.lang + (b.name,)
        node = _fields(scope, self.state).get(b.name) if scope.kind not in ("sweep", "zip") else None
        if isinstance(node, Obj) and isinstance(b.label, A.Call) and node.call_blocks:
            return self.call_block(b, scope, node)
        if b.body is None and b.name not in ("target", "experiment"):  # `topk batch(0.25)`: no "="
            call = b.label.name if isinstance(b.label, A.Call) else "..."
            self.diags.error(f"expected '=' after '{b.name}', found {call}(...)", b.label.span,
                             f"write {b.name} = {call}(...)")
            return
        if b.name == "experiment":
            return self.experiment(b, scope)
        if b.name == "zip" and scope.kind == "sweep":
            if b.body is None or b.label is not None:
                self.diags.error("write zip { path = [values] ... }", b.header_span)
                return
            inner = Scope("zip", None, key, scope.rt, group=self.state.groups)
            self.state.groups += 1
            self.body(b.body, inner)
            self.check_zip(inner)
            return
        if key in self.seen_blocks:
            self.diags.error(f"duplicate block '{'.'.join(key)}' in this file", b.header_span,
                             "merge the two blocks", notes=(Note("first block here", self.seen_blocks[key]),))
            return
        self.seen_blocks[key] = b.header_span
        if scope.kind == "experiment" and b.name == "target":
            return self.target_block(b)
        inner = self.enter(scope, b.name, b.name_span, "block")
        if inner is None:
            return
        if b.label is not None:
            self.diags.error(f"block '{b.name}' takes no label", b.label.span, f"write {b.name} {{ ... }}")
        if inner.kind != "sweep":
            self.state.blocks[inner.rt] = b.header_span
        if b.body is None:
            self.diags.error(f"'{b.name}' needs a body in braces", b.header_span, f"write {b.name} {{ ... }}")
            return
        self.body(b.body, inner)

    def call_block(self, b: A.Block, scope: Scope, node: Obj) -> None:
        """`data file("x.npz")`: the object given by a call, as `data = file("x.npz")` (like
        `target file(...)`, the call names what the block is)."""
        call = b.label
        if b.body is not None:
            self.diags.error(f"'{b.name} {call.name}(...)' takes its settings as arguments, not a body", b.header_span,
                             f"write {b.name} {call.name}(...) with arguments, e.g. "
                             f"{b.name} {call.name}(\"data.npz\", labels = none), or {b.name} {{ ... }}")
            return
        rt = node.rt or join_path(scope.rt, b.name)
        self.state.blocks[rt] = b.header_span
        self.set_object(node, rt, call, b.name, b.header_span)

    def body(self, items: tuple[A.Stmt, ...], scope: Scope) -> None:
        for s in items:
            if self.diags.full:
                return
            self.stmt(s, scope)

    def experiment(self, b: A.Block, scope: Scope) -> None:
        if not scope.top:
            self.diags.error("an experiment block must be at the top level of a file", b.header_span)
            return
        if self.experiment_block is not None:
            self.diags.error("a file holds one experiment", b.header_span,
                             "put variants in their own files, built on this one with use",
                             notes=(Note("first experiment here", self.experiment_block),))
            return
        self.experiment_block = b.header_span
        self.state.header = b.header_span
        if b.label is not None:
            label = b.label
            if isinstance(label, A.Ident):
                self.state.name = (label.name, label.span)
            elif isinstance(label, A.String) and re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", label.value):
                self.state.name = (label.value, label.span)
            else:
                self.diags.error("an experiment name is a word of letters, digits, '_', '-' or '.'", label.span,
                                 "e.g. experiment tms_5_2 { ... }")
        if b.body is None:
            self.diags.error("an experiment needs a body in braces", b.header_span)
            return
        self.body(b.body, EXP)

    def target_block(self, b: A.Block) -> None:
        n_errors = len(self.diags.diagnostics)
        self._target_block(b)
        if len(self.diags.diagnostics) > n_errors and self.state.kind is None:
            self.state.target_failed = True

    def _target_block(self, b: A.Block) -> None:
        label = b.label
        if label is None:
            if self.state.kind is None:
                self.diags.error("the target needs a kind", b.header_span,
                                 "write target tms { ... }, target resid_mlp { ... }, target gated { ... } "
                                 'or target file("path/target.npz")')
                return
        elif isinstance(label, A.Ident):
            if label.name not in TARGETS or label.name == "file":
                near = did_you_mean(label.name, [k for k in TARGETS if k != "file"])
                self.diags.error(f"unknown target kind '{label.name}'", label.span,
                                 f"did you mean '{near}'?" if near else f"one of: {_kinds_text()}")
                return
            if self.mark("target:kind", label.span, "target"):
                if self.state.kind != label.name:
                    self.state.set("target", TargetKind(label.name), label.span)
                else:  # same kind as the used file: merge into it, but remember who named it
                    self.state.values["target"] = Setting(TargetKind(label.name), label.span)
        elif isinstance(label, A.Call) and label.name == "file":
            self.file_target(label)
        else:
            self.diags.error("expected a target kind", label.span,
                             f"one of: {_kinds_text()}")
            return
        self.state.blocks["target"] = b.header_span
        if b.body is not None:
            self.body(b.body, Scope("target", None, ("target",), "target"))

    def file_target(self, call: A.Call) -> None:
        if len(call.args) != 1 or call.args[0].name is not None:
            self.diags.error('write target file("path/target.npz")', call.span)
            return
        try:
            path = Str().coerce(call.args[0].value, self.state.env)
        except Bad as e:
            return self.bad(e, "file")
        if not path:
            self.diags.error("the target file path is empty", call.args[0].span)
            return
        base = call.span.file
        if not self.mark("target:kind", call.span, "target"):
            return
        if not os.path.isabs(path):
            here = os.path.dirname(os.path.abspath(base)) if not base.startswith("<") else os.getcwd()
            path = os.path.normpath(os.path.join(here, path))
        if os.path.exists(path) and not (os.path.isfile(path) or os.path.isdir(path)):
            # a device or a pipe: reading it could block forever (a directory the runtime reports)
            self.diags.error(f"the target file {path} is not a regular file", call.args[0].span,
                             'give the path of a target.npz written by `apdspec run`')
            return
        self.state.set("target", TargetKind("file"), call.span)
        self.state.set("target.path", path, call.args[0].span)

    def target_assign(self, value: A.Value, span: A.Span) -> None:
        """`target = file("T.npz")`: a command-line override replacing the target by a file
        (in a spec file the target is a block: `target file("T.npz")`)."""
        try:
            node = self.state.env.deref(value)
        except Bad as e:
            return self.bad(e, "target")
        is_file = isinstance(node, A.Call) and node.name == "file"
        if self.override and is_file:
            self.file_target(node)
            if self.state.kind == "file":
                self.state.blocks["target"] = span
            return
        if is_file:
            self.diags.error("'target' is a block, not a key", span,
                             "write target file(\"path/target.npz\") without '=' (on the command line: "
                             "-s 'target = file(\"path/target.npz\")')")
        elif self.override:
            self.diags.error("on the command line only a target file can replace the target", span,
                             "write -s 'target = file(\"path/target.npz\")'; to change a field of the target, "
                             "-s target.features=10")
        else:
            self.diags.error("'target' is a block, not a key", span, ALIASES["target"])

    def enter(self, scope: Scope, name: str, span: A.Span, what: str) -> Scope | None:
        """The scope of sub-block `name` of `scope` (for a block statement or a dotted path)."""
        if scope.kind in ("sweep", "zip"):
            self.diags.error(f"'{name}' is not a block of a sweep", span, "a sweep holds path = values lines and zip blocks")
            return None
        if scope.kind == "experiment":
            if name == "target":
                if self.state.kind is None:
                    self.diags.error("the target kind is not set yet", span, "write target tms { ... } first")
                    return None
                return Scope("target", None, ("target",), "target")
            if name == "sweep":
                return Scope("sweep", None, ("sweep",), "")
        node = _fields(scope, self.state).get(name)
        if isinstance(node, Obj):
            rt = node.rt or join_path(scope.rt, name)
            return Scope("object", node, scope.lang + (name,), rt)
        if isinstance(node, Leaf):
            self.diags.error(f"'{name}' is a key, not a block", span, f"write {name} = ...")
            return None
        self.unknown("block" if what == "block" else "key", name, span, scope)
        return None

    # -- assignments
    def assign(self, s: A.Assign, scope: Scope) -> None:
        path, spans = s.path, s.path_spans
        if scope.kind in ("sweep", "zip"):
            return self.sweep_axis(path, spans, s.value, scope)
        if self.override and isinstance(s.value, A.Call) and s.value.name in SWEEP_FUNCTIONS:
            return self.sweep_axis(path, spans, s.value, Scope("sweep", None, ("sweep",), ""))
        for i, seg in enumerate(path[:-1]):
            inner = self.enter(scope, seg, spans[i], "key")
            if inner is None:
                return
            if inner.kind == "sweep":
                return self.sweep_axis(path[i + 1:], spans[i + 1:], s.value, inner)
            scope = inner
        self.set_field(scope, path[-1], spans[-1], s.value, ".".join(path), s.key_span)

    def set_field(self, scope: Scope, name: str, span: A.Span, value: A.Value, key: str, key_span: A.Span) -> None:
        """`key = value` where `name` (at `span`) is the last segment of `key` (at `key_span`)."""
        fields = _fields(scope, self.state)
        node = fields.get(name)
        if node is None and scope.obj is REPORT and name == "expect":
            return self.drop_expectations(value)
        if node is None:
            if scope.kind == "experiment" and name == "target":
                return self.target_assign(value, span)
            if scope.kind == "experiment" and name == "sweep":
                self.diags.error(f"'{name}' is a block, not a key", span, ALIASES[name])
            else:
                self.unknown("key", name, span, scope)
            return
        rt = (node.rt if isinstance(node, Obj) and node.rt else None) or join_path(scope.rt, name)
        if isinstance(node, Obj):
            if not node.forms:
                self.diags.error(f"'{name}' is a block, not a key", span, f"write {name} {{ ... }}")
                return
            return self.set_object(node, rt, value, key, key_span)
        try:
            target = self.state.env.deref(value)
        except Bad as e:
            return self.bad(e, name)
        if isinstance(target, A.Call) and target.name in node.forms:
            return self.apply_form(node.forms[target.name], fields, scope.rt, target, key, siblings=True)
        try:
            v = node.kind.coerce(value, self.state.env)
        except Bad as e:
            return self.bad(e, name)
        if self.mark(rt, key_span, key):
            self.state.set(rt, v, value.span)
            self.state.parts.update(value_parts(node.kind, value, self.state.env, rt))

    def set_object(self, obj: Obj, rt: str, value: A.Value, key: str, key_span: A.Span) -> None:
        try:
            node = self.state.env.deref(value)
        except Bad as e:
            return self.bad(e, key)
        name = key.split(".")[-1]
        if isinstance(node, A.Ident) and node.name == "none":
            if not obj.optional:
                self.diags.error(f"'{key}' cannot be none", node.span, _forms_hint(obj))
            elif self.mark(rt, key_span, key):
                self.state.set(rt, NONE, node.span)
            return
        if isinstance(node, A.Ident):
            call = A.Call(node.span, node.name, node.span, ())
        elif isinstance(node, A.Call):
            call = node
        else:
            hint = _forms_hint(obj)
            if isinstance(node, A.String) and obj.call_blocks:  # data = "x.npz"
                hint = f"write {name} {obj.call_blocks[0]}({node.text})"
            self.diags.error(f"expected {_forms_hint(obj, short=True)} for '{name}', got {describe(node)}",
                             node.span, hint)
            return
        form = obj.forms.get(call.name)
        if form is None:
            near = did_you_mean(call.name, obj.forms)
            self.diags.error(f"unknown {name} '{call.name}'", call.name_span,
                             f"did you mean '{near}'?" if near else _forms_hint(obj))
            return
        if not self.mark(rt, key_span, key):
            return
        self.state.set(rt, RESET, call.span)
        self.apply_form(form, obj.fields, rt, call, key, siblings=False)

    def apply_form(self, form: Form, fields: dict[str, Leaf | Obj], prefix: str, call: A.Call, key: str,
                   siblings: bool) -> None:
        """Set the fields a call form names. `prefix` is the runtime path of the object holding them."""
        settings: list[tuple[str, Any, A.Span]] = [(f, v, call.span) for f, v in form.fixed.items()]
        given: dict[str, A.Span] = {}
        ok = True
        n_pos = 0
        for arg in call.args:
            if arg.name is None:
                if n_pos >= len(form.positional):
                    n = len(form.positional)
                    self.diags.error(f"too many arguments to {call.name}(): it takes {n} positional argument"
                                     f"{'' if n == 1 else 's'}", arg.span, _form_usage(call.name, form))
                    ok = False
                    continue
                fname = form.positional[n_pos]
                n_pos += 1
            else:
                if arg.name not in form.keywords:
                    near = did_you_mean(arg.name, form.keywords)
                    self.diags.error(f"unknown argument '{arg.name}' to {call.name}()", arg.name_span,
                                     f"did you mean '{near}'?" if near else _form_usage(call.name, form))
                    ok = False
                    continue
                fname = form.keywords[arg.name]
            if fname in given:
                self.diags.error(f"argument '{arg.name or fname}' given twice to {call.name}()", arg.span)
                ok = False
                continue
            given[fname] = arg.span
            try:
                v = fields[fname].kind.coerce(arg.value, self.state.env)
            except Bad as e:
                self.bad(e, arg.name or fname)
                ok = False
                continue
            settings.append((fname, v, arg.value.span))
        if n_pos < form.required:
            self.diags.error(f"{call.name}() needs {form.required} argument{'' if form.required == 1 else 's'}",
                             call.span, _form_usage(call.name, form))
            ok = False
        if not ok:
            return
        for fname, v, span in settings:
            rt = join_path(prefix, fname)
            if siblings and not self.mark(rt, span, join_path(".".join(key.split(".")[:-1]), fname)):
                continue
            self.state.set(rt, v, span)

    # -- report.expect
    def drop_expectations(self, value: A.Value) -> None:
        """`report.expect = none` (or `[]`), e.g. `-s 'report.expect = none'`: no expectations, those of
        a used file included (in a file, `expect none` says the same)."""
        if (isinstance(value, A.Ident) and value.name == "none") or (isinstance(value, A.ListValue) and not value.items):
            self.state.expects.clear()
            return
        self.diags.error("report.expect takes only 'none' here (it drops every expectation)", value.span,
                         "write -s 'report.expect = none'; add an expectation in the report block: "
                         "expect mmcs >= 0.99")

    def expect(self, e: A.Expect | A.ExpectBare) -> None:
        if isinstance(e, A.ExpectBare):
            if e.name == "none":
                self.state.expects.clear()
            else:
                self.diags.error(f"incomplete expectation 'expect {e.name}'", e.span,
                                 f"write e.g. expect {e.name} >= 0.99, or expect none to drop inherited ones")
            return
        ok = True
        if e.reduce is not None and e.reduce not in REDUCTIONS:
            near = did_you_mean(e.reduce, REDUCTIONS)
            self.diags.error(f"unknown reduction '{e.reduce}'", e.reduce_span,
                             f"did you mean '{near}'?" if near else "one of: " + ", ".join(REDUCTIONS))
            ok = False
        if e.metric not in S.METRICS:
            near = did_you_mean(e.metric, S.METRICS)
            self.diags.error(f"unknown metric '{e.metric}' in expectation", e.metric_span,
                             f"did you mean '{near}'?" if near else "known: " + ", ".join(S.METRICS))
            ok = False
        try:
            value = Float().coerce(e.value, self.state.env)
        except Bad as b:
            self.bad(b, "expect")
            ok = False
        at_least = None
        if e.at_least is not None:
            try:
                at_least = Int().coerce(e.at_least, self.state.env)
            except Bad as b:
                self.bad(b, "replicates")
                ok = False
            if e.reduce is not None:
                self.diags.error("an expectation takes a reduction or 'for at least N replicates', not both",
                                 e.at_least.span)
                ok = False
        if ok:
            x = S.Expectation(e.metric, e.op, value, e.reduce or "all", at_least, "")
            self.state.expects.append((dataclasses.replace(x, text=expectation_text(x)), e.span))

    # -- sweeps
    def sweep_axis(self, path: tuple[str, ...], spans: tuple[A.Span, ...], value: A.Value, scope: Scope) -> None:
        if not path:
            self.diags.error("a sweep line names a field: path = grid(...)", value.span)
            return
        leaf, rt = self.resolve_leaf(path, spans)
        if leaf is None:
            return
        key = ".".join(path)
        try:
            values, value_spans = self.sweep_values(value, leaf)
        except Bad as e:
            return self.bad(e, path[-1])
        if not self.mark("sweep:" + rt, spans[0].to(spans[-1]), "sweep " + key):
            return
        axis = S.SweepAxis(rt, tuple(values), scope.group)
        self.state.axes[rt] = (axis, spans[0].to(spans[-1]))
        self.state.axis_values[rt] = value_spans

    def resolve_leaf(self, path: tuple[str, ...], spans: tuple[A.Span, ...]) -> tuple[Leaf | None, str]:
        scope = EXP
        for i, seg in enumerate(path[:-1]):
            if seg == "sweep" and scope.kind == "experiment":
                self.diags.error("a sweep cannot sweep itself", spans[i])
                return None, ""
            inner = self.enter(scope, seg, spans[i], "key")
            if inner is None:
                return None, ""
            scope = inner
        fields = _fields(scope, self.state)
        node = fields.get(path[-1])
        if node is None:
            self.unknown("key", path[-1], spans[-1], scope)
            return None, ""
        if isinstance(node, Obj):
            leaves = [n for n, f in node.fields.items() if isinstance(f, Leaf)]
            self.diags.error(f"a sweep varies one field; '{'.'.join(path)}' is a block", spans[-1],
                             f"sweep one of its fields, e.g. {'.'.join(path)}.{leaves[-1] if leaves else '...'}")
            return None, ""
        return node, join_path(scope.rt, path[-1])

    def sweep_values(self, value: A.Value, leaf: Leaf) -> tuple[list, tuple[A.Span, ...]]:
        """The axis's values, and the span of each (of seeds/range/logspace: the whole call)."""
        env = self.state.env
        node = env.deref(value)
        if isinstance(node, A.ListValue):
            items = node.items
        elif isinstance(node, A.Call) and node.name in SWEEP_FUNCTIONS:
            if any(a.name is not None for a in node.args):
                raise Bad(node.span, f"{node.name}() takes positional arguments only")
            args = [a.value for a in node.args]
            if node.name == "grid":
                items = tuple(args)
            else:
                items = tuple(A.Number(node.span, repr(v), v) for v in generated(node, args, env))
        else:
            raise Bad(node.span, f"a sweep axis needs several values for '{{key}}', got {describe(node)}",
                      "write grid(a, b, c), [a, b, c], seeds(n), range(start, stop, step) or logspace(low, high, n)")
        if not items:
            raise Bad(node.span, "a sweep axis needs at least one value")
        return [leaf.kind.coerce(v, env) for v in items], tuple(v.span for v in items)

    def check_zip(self, scope: Scope) -> None:
        axes = [(a, s) for a, s in self.state.axes.values() if a.group == scope.group]
        for a, s in axes[1:]:
            a0, s0 = axes[0]
            if len(a.values) != len(a0.values):
                self.diags.error(f"zipped axes need the same number of values: '{lang_path(a.path)}' has "
                                 f"{len(a.values)}, '{lang_path(a0.path)}' has {len(a0.values)}", s,
                                 notes=(Note("the first axis of this zip", s0),))


def _kinds_text() -> str:
    return ", ".join([k for k in TARGETS if k != "file"] + ['file("path/target.npz")'])


def _refs(node: A.Value):
    if isinstance(node, A.Ref):
        yield node
    elif isinstance(node, A.Call):
        for a in node.args:
            yield from _refs(a.value)
    elif isinstance(node, A.ListValue):
        for v in node.items:
            yield from _refs(v)
    elif isinstance(node, A.BinOp):
        yield from _refs(node.left)
        yield from _refs(node.right)
    elif isinstance(node, A.Neg):
        yield from _refs(node.operand)


def _form_usage(name: str, form: Form) -> str:
    parts = list(form.positional) + [f"{k} = ..." for k in form.keywords]
    return f"write {name}({', '.join(parts)})"


def _forms_hint(obj: Obj, short: bool = False) -> str:
    names = [f"{n}(...)" if (f.positional or f.keywords) else n for n, f in obj.forms.items()]
    if obj.optional:
        names.append("none")
    if short and len(names) == 1:
        return names[0]
    return ("one of " if short else "one of: ") + ", ".join(names)


def expectation_text(e: S.Expectation) -> str:
    """The canonical text of an expectation (also what `Expectation.text` holds)."""
    metric = e.metric if e.reduce == "all" else f"{e.reduce}({e.metric})"
    out = f"{metric} {e.op} {format_number(e.value)}"
    if e.at_least is not None:
        out += f" for at least {e.at_least} replicates"
    return out
