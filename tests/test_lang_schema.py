"""The language schema covers the runtime contract, and docs/language.md is true to both."""
import dataclasses
import os
import re

import pytest

import apdspec
from apdspec import reference

from apdspec.schema import EXPERIMENT, SPECIAL_FIELDS, TARGETS, TRAIN, Leaf, Obj, walk
from runtime import spec as S

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "language.md")


def _schema_classes():
    """(runtime class, schema object) for every object the language can write."""
    out = [(EXPERIMENT.cls, EXPERIMENT), (TRAIN.cls, TRAIN)]
    out += [(obj.cls, obj) for obj in TARGETS.values()]
    for root in [EXPERIMENT, TRAIN, *TARGETS.values()]:
        out += [(node.cls, node) for _, node in walk(root) if isinstance(node, Obj)]
    return out


def test_every_runtime_field_has_syntax():
    """A field added to runtime.spec without language syntax fails here (the contract may grow)."""
    covered = set()
    for cls, obj in _schema_classes():
        for f in dataclasses.fields(cls):
            if not f.init:
                continue
            if f.name in obj.fields or (cls, f.name) in SPECIAL_FIELDS:
                covered.add((cls, f.name))
            else:
                pytest.fail(f"{cls.__name__}.{f.name} has no syntax in apdspec.schema")
    assert {S.TmsTarget, S.ResidMlpTarget, S.GatedTarget, S.FileTarget, S.Training, S.Data, S.Decompose, S.TopK,
            S.Attribution, S.Losses, S.Optimizer, S.Schedule, S.Report, S.Experiment} <= {c for c, _ in covered}


def test_schema_names_only_real_fields():
    for cls, obj in _schema_classes():
        names = {f.name for f in dataclasses.fields(cls)}
        for name, node in obj.fields.items():
            if isinstance(node, Obj) and node.rt:
                continue  # train: written inside the target block
            assert name in names, f"{cls.__name__} has no field {name}"
        for form in obj.forms.values():
            for f in list(form.fixed) + list(form.positional) + list(form.keywords.values()):
                assert f in names


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
    # decompose.revive is off (None) by default: switch it on so that its ranges are probed too
    bases = {"apd": S.resolve(S.Experiment(target=S.TARGET_KINDS[kind](), decompose=S.Decompose(revive=S.Revive()))),
             "spd": S.resolve(S.Experiment(target=S.TARGET_KINDS[kind](),
                                           decompose=S.Decompose(method="spd", faithfulness_warmup=S.FaithfulnessWarmup())))}
    assert all(S.validate(b) == [] for b in bases.values())
    methods = {path: node.method for path, node in walk(root)}
    probed = 0
    for path, node in walk(root):
        if not isinstance(node, Leaf) or (root is not TRAIN and path[0] == "train"):
            continue
        method = next((methods[path[:i]] for i in range(1, len(path) + 1) if methods.get(path[:i])), "apd")
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
