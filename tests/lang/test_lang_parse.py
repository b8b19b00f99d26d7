"""The grammar, the number lexer and the position-carrying syntax tree."""
import importlib.util

import pytest
from lark import Lark

import apdspec
from apdspec import ast as A
from apdspec.errors import Collector
from apdspec.parser import LiteralError, grammar_text, parse, parse_number, parse_override, parse_string


@pytest.mark.parametrize("text,value", [
    ("0", 0), ("20_000", 20_000), ("1_000_000", 1_000_000), ("3e-2", 0.03), ("1e3", 1000.0), ("2.5", 2.5),
    (".5", 0.5), ("5%", 0.05), ("0.4%", 0.004), ("20k", 20_000), ("2M", 2_000_000), ("1.5k", 1500.0),
    ("1E-8", 1e-8), ("0123", 123),
])
def test_numbers(text, value):
    v = parse_number(text)
    assert v == value
    assert type(v) is type(value)  # ints stay ints; scientific notation and % are always floats


@pytest.mark.parametrize("text", ["1__0", "1_", "2kb", "5e", "1.2.3", "3x", "1_.5"])
def test_malformed_numbers(text):
    with pytest.raises(LiteralError):
        parse_number(text)


def test_strings_and_escapes():
    assert parse_string(r'"a\"b\\c\n"') == 'a"b\\c\n'
    with pytest.raises(LiteralError):
        parse_string(r'"\q"')


def _parse(text):
    diags = Collector()
    tree = parse(text, "f.apd", diags)
    assert not diags, diags.diagnostics
    return tree


def test_every_node_carries_its_span():
    tree = _parse("experiment x {\n  decompose { optimizer = adam(lr = 3e-2 * 2) }\n}\n")
    (exp,) = tree.items
    assert isinstance(exp, A.Block) and exp.name == "experiment"
    assert (exp.span.line, exp.span.column, exp.span.end_line, exp.span.end_column) == (1, 1, 3, 2)
    (dec,) = exp.body
    (assign,) = dec.body
    assert assign.path == ("optimizer",)
    assert (assign.span.line, assign.span.column) == (2, 15)
    call = assign.value
    assert isinstance(call, A.Call) and call.name == "adam"
    (arg,) = call.args
    assert arg.name == "lr" and (arg.name_span.line, arg.name_span.column) == (2, 32)
    prod = arg.value
    assert isinstance(prod, A.BinOp) and prod.op == "*"
    assert (prod.span.column, prod.span.end_column) == (37, 45)
    assert prod.left.value == 0.03 and prod.right.value == 2


def test_comments_are_captured_with_positions():
    tree = _parse("# head\nexperiment x { # open\n  seed = 1  # trailing\n}\n")
    assert [(c.text, c.span.line, c.span.column) for c in tree.comments] == [
        ("# head", 1, 1), ("# open", 2, 16), ("# trailing", 3, 13)]


def test_newlines_are_insignificant_and_semicolons_optional():
    a = apdspec.loads("experiment x { target tms { features = 5 hidden = 2 }; seed = 3 }")
    b = apdspec.loads("experiment x {\n  target tms {\n    features = 5\n    hidden = 2\n  }\n  seed = 3\n}\n")
    assert a.experiment == b.experiment


def test_contextual_keywords_are_ordinary_keys():
    # `replicates` is also a keyword of `expect ... for N replicates`; it must still work as a key,
    # including right after a value and right after an expectation
    spec = apdspec.loads("experiment x {\n  seed = 1 replicates = 4\n  target tms { features = 5 }\n"
                         "  report { expect mmcs >= 0.9 for at least 2 replicates paper = none }\n}\n")
    assert spec.experiment.replicates == 4
    assert spec.experiment.report.expect[0].at_least == 2


def test_expectation_forms():
    spec = apdspec.loads("let n = 2\nexperiment x {\n  replicates = 3\n  target tms { features = 5 }\n  report {\n"
                         "    expect mmcs >= 0.99\n    expect mean(ml2r) > 0.8\n    expect mmcs >= 0.9 for 2 replicates\n"
                         "    expect ml2r < 2 for at least $n replicates\n  }\n}\n")
    got = [(e.metric, e.op, e.value, e.reduce, e.at_least, e.text) for e in spec.experiment.report.expect]
    assert got == [
        ("mmcs", ">=", 0.99, "all", None, "mmcs >= 0.99"),
        ("ml2r", ">", 0.8, "mean", None, "mean(ml2r) > 0.8"),
        ("mmcs", ">=", 0.9, "all", 2, "mmcs >= 0.9 for at least 2 replicates"),
        ("ml2r", "<", 2.0, "all", 2, "ml2r < 2 for at least 2 replicates"),
    ]


def test_override_start_symbol():
    diags = Collector()
    a = parse_override("decompose.topk=batch(0.25)", "<override 1>", diags)
    assert not diags
    assert a.path == ("decompose", "topk") and a.value.name == "batch"
    assert parse_override("decompose.steps", "<override 1>", diags) is None
    (d,) = diags.diagnostics
    assert d.span.file == "<override 1>" and "end of override" in d.message


def test_arithmetic_and_constants():
    spec = apdspec.loads("let lr0 = 3e-2\nlet steps = 10k\nexperiment x {\n  target tms { features = 5 }\n"
                         "  decompose {\n    optimizer = adam(lr = $lr0 / 2)\n    steps = 2 * $steps + 1\n"
                         "    batch = steps / 20\n  }\n  data { values = [-1, 2 - 1] }\n}\n")
    d = spec.experiment.decompose
    assert d.optimizer.lr == 0.015
    assert d.steps == 20_001 and isinstance(d.steps, int)
    assert d.batch == 500 and isinstance(d.batch, int)  # a bare constant name works in a number
    assert spec.experiment.data.values == (-1.0, 1.0)


def test_pi_in_ranges():
    spec = apdspec.loads("experiment g { target gated { phase_range = [-pi, pi / 2] } }")
    import math

    assert spec.experiment.target.phase_range == (-math.pi, math.pi / 2)


@pytest.mark.skipif(importlib.util.find_spec("interegular") is None, reason="strict mode needs interegular")
def test_grammar_has_no_collisions_in_strict_mode():
    Lark(grammar_text(), parser="lalr", start=["start", "override"], strict=True)


def test_grammar_builds_without_conflicts():
    import logging

    from lark import logger

    records = []

    class Grab(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler = Grab()
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        Lark(grammar_text(), parser="lalr", start=["start", "override"], debug=True)
    finally:
        logger.setLevel(old)
        logger.removeHandler(handler)
    assert not [r for r in records if "conflict" in r.lower() or "collision" in r.lower()]
