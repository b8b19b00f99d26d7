"""The language schema covers the runtime contract, and docs/language.md is true to both."""
import dataclasses
import os
import re

import pytest

import apdspec
from apdspec import reference

from apdspec.schema import DECOMPOSE, EXPERIMENT, SPECIAL_FIELDS, TARGETS, TRAIN, Leaf, Obj, walk
from runtime import spec as S

from paths import ROOT  # noqa: E402  (the repository)
DOC = os.path.join(ROOT, "docs", "language.md")


def _schema_classes():
    """(runtime class, schema object) for every object the language can write; a block that merges
    several methods' classes (decompose, its loss) once per class."""
    roots = [EXPERIMENT, TRAIN, *TARGETS.values()]
    objs = list(roots) + [node for root in roots for _, node in walk(root) if isinstance(node, Obj)]
    out = []
    for obj in objs:
        out += [(cls, obj) for cls in obj.variants.values()] if obj.variants else [(obj.cls, obj)]
    return out


def test_every_runtime_field_has_syntax():
    """A field added to a runtime dataclass (a kind's, a method's) without language syntax fails here."""
    covered = set()
    for cls, obj in _schema_classes():
        for f in dataclasses.fields(cls):
            if not f.init:
                continue
            if f.name in obj.fields or (cls, f.name) in SPECIAL_FIELDS:
                covered.add((cls, f.name))
            else:
                pytest.fail(f"{cls.__name__}.{f.name} has no syntax in apdspec.schema")
    classes = {c for c, _ in covered}
    assert {spec.cls for spec in S.KINDS.values()} <= classes and {m.cls for m in S.METHODS.values()} <= classes
    assert {S.FileTarget, S.Training, S.Data, S.Optimizer, S.Schedule, S.Report, S.Experiment} <= classes


def test_schema_names_only_real_fields():
    for cls, obj in _schema_classes():
        names = {f.name for f in dataclasses.fields(cls)}
        for name, node in obj.fields.items():
            if isinstance(node, Obj) and node.rt:
                continue  # train: written inside the target block
            if obj.variants:  # a merged block: the key is some method's
                assert any(name in {f.name for f in dataclasses.fields(c)} for c in obj.variants.values()), name
            else:
                assert name in names, f"{cls.__name__} has no field {name}"
        owners = list(obj.variants.values()) or [cls]  # a merged block's forms are its methods' own
        for form in obj.forms.values():
            used = set(form.fixed) | set(form.positional) | set(form.keywords.values())
            assert any(used <= {f.name for f in dataclasses.fields(c)} for c in owners), used


def test_a_key_is_tagged_with_exactly_the_methods_whose_class_has_it():
    """Ownership is structural: a decompose (or loss) key belongs to the methods whose own class
    declares it, and the language says so (no second list to keep in step)."""
    for block in (DECOMPOSE, DECOMPOSE.fields["loss"]):
        for name, node in block.fields.items():
            owners = tuple(m for m, c in block.variants.items() if name in {f.name for f in dataclasses.fields(c)})
            shared = {f.name for f in dataclasses.fields(S.Decompose)} if block is DECOMPOSE else set()
            expected = () if (name in shared or len(owners) == len(block.variants)) else owners
            assert node.methods == expected, (name, node.methods, expected)


def test_docs_tables_are_generated_from_the_code():
    text = open(DOC, encoding="utf-8").read()
    assert sorted(reference.markers(text)) == sorted(m for m, *_ in reference.TABLES)
    assert reference.update(text) == text, "run: python -m apdspec.reference docs/language.md"


def test_docs_mention_every_key_and_form():
    text = open(DOC, encoding="utf-8").read()
    for root in [EXPERIMENT, TRAIN, *TARGETS.values()]:
        for path, node in walk(root):
            assert f"`{path[-1]}`" in text, path
            for form in getattr(node, "forms", {}):
                assert form in text, form
    for word in ("use", "let", "expect", "sweep", "zip", "grid", "seeds", "range", "logspace", "none", "file("):
        assert word in text


def test_docs_examples_load():
    text = open(DOC, encoding="utf-8").read()
    blocks = re.findall(r"```\n(.*?)```", text, re.S)
    first = blocks[0]
    assert apdspec.loads(first).experiment.name == "tms_5_2"
    composed = next(b for b in blocks if b.startswith('use "tms_5_2.apd"'))
    spec = apdspec.loads(composed, os.path.join(ROOT, "specs", "doc_example.apd"))
    assert spec.experiment.decompose.topk.value == 0.25 and spec.experiment.decompose.steps == 10_000
    assert [e.text for e in spec.experiment.report.expect] == ["mmcs >= 0.98"]
    sweep = next(b for b in blocks if b.startswith("sweep {"))
    axes = apdspec.loads("target tms { features = 5 }\n" + sweep).experiment.sweep.axes
    assert len(axes) == 6


_PROBES = {"> 0": 0, ">= 0": -1, ">= 1": 0, ">= 2": 1, "[0, 1)": 1, "(0, 1]": 0, "[0, 1]": 1.5}


@pytest.mark.parametrize("root,prefix,kind", [(EXPERIMENT, "", "tms"), (TRAIN, "train", "tms"),
                                              (TARGETS["tms"], "target", "tms"),
                                              (TARGETS["resid_mlp"], "target", "resid_mlp"),
                                              (TARGETS["gated"], "target", "gated")])
def test_documented_ranges_are_what_validate_enforces(root, prefix, kind):
    """For every simple documented range, a value just outside it makes validate() name that field
    (probed on an experiment of the field's decomposition method)."""
    # optional objects (decompose.revive, faithfulness_warmup) are off by default: switch them on
    # so that their ranges are probed too
    bases = {}
    for m, spec in S.METHODS.items():
        on = {f.name: S.nested_class(spec.cls, f.name)() for f in dataclasses.fields(spec.cls)
              if f.default is None and S.nested_class(spec.cls, f.name) is not None}
        bases[m] = S.resolve(S.Experiment(target=S.KINDS[kind].cls(), decompose=S.Decompose(method=m, **on)))
    assert all(S.validate(b) == [] for b in bases.values())
    methods = {path: node.methods for path, node in walk(root)}
    probed = 0
    for path, node in walk(root):
        if not isinstance(node, Leaf) or (root is not TRAIN and path[0] == "train"):
            continue
        owners = next((methods[path[:i]] for i in range(1, len(path) + 1) if methods.get(path[:i])), ())
        method = owners[0] if owners else S.DEFAULT_METHOD
        base = bases[method]
        valid = node.valid.split(";")[0].split(",")[0] if node.valid.startswith((">", "(")) else node.valid
        if valid not in _PROBES or node.kind.__class__.__name__ not in ("Int", "Float", "Optional"):
            continue
        rt = ".".join(((prefix,) if prefix else ()) + path)
        exp = _replace(base, rt, _PROBES[valid])
        issues = [i.path for i in S.validate(exp)]
        assert any(p == rt or p.startswith(rt + ".") for p in issues), (rt, valid, issues)
        probed += 1
    assert probed >= 3 or root is TARGETS["gated"]


def _replace(obj, path, value):
    head, _, rest = path.partition(".")
    if not rest:
        return dataclasses.replace(obj, **{head: value})
    return dataclasses.replace(obj, **{head: _replace(getattr(obj, head), rest, value)})
