"""Malformed specs: each error is reported at the exact line and column, with a useful message."""
import pytest

import apdspec
from apdspec import SpecError

BASE = """experiment t {
  target tms {
    features = 5
    hidden = 2
  }
  decompose {
    components = 5
    topk = batch(0.25)
    steps = 100
    batch = 64
  }
}
"""
OPEN = BASE.rstrip()[:-1]  # without the experiment's closing brace


def edit(old: str, new: str) -> str:
    assert old in BASE, old
    return BASE.replace(old, new, 1)


# (name, text, line, column, message substring, hint substring or "")
CASES = [
    # syntax
    ("missing '='", edit("steps = 100", "steps 100"), 9, 11, "expected '=' after 'steps', found number '100'", ""),
    ("unclosed block", BASE.rstrip()[:-1], 11, 4, "unexpected end of file: block 'experiment t' is not closed",
     "add '}'"),
    ("stray '}'", BASE + "}\n", 13, 1, "unexpected '}': no block is open here", ""),
    ("bad character", edit("steps = 100", "steps = @"), 9, 13, "unexpected character '@'", ""),
    ("unterminated string", edit("features = 5", 'features = "abc'), 3, 16, "unterminated string", ""),
    ("single quotes", edit("features = 5", "features = 'x'"), 3, 16, "unexpected character", "double quotes"),
    ("malformed number", edit("steps = 100", "steps = 1__00"), 9, 13, "malformed number '1__00'", "separate digits"),
    ("unknown suffix", edit("steps = 100", "steps = 2kb"), 9, 13, "malformed number '2kb'", "20k"),
    ("number too large", edit("steps = 100", "steps = 1e999"), 9, 13, "number '1e999' is too large", ""),
    ("reserved word as key", edit("    steps = 100", "    use = 3"), 9, 9, "'use' is a reserved word", ""),
    ("value without key", edit("    steps = 100", "    = 100"), 9, 5, "found '='", ""),
    ("unclosed list at EOF", "experiment t { x = [1, 2", 1, 25, "unexpected end of file", ""),
    # keys and blocks
    ("unknown key", edit("    steps = 100", "    stepz = 100"), 9, 5, "unknown key 'stepz' in block 'decompose'",
     "did you mean 'steps'?"),
    ("key from another config", edit("    steps = 100", "    lr = 3e-3"), 9, 5, "unknown key 'lr'", "optimizer = adam(lr"),
    ("unknown block", edit("  decompose {", "  decompse {"), 6, 3, "unknown block 'decompse'", "did you mean 'decompose'?"),
    ("key used as block", edit("    steps = 100", "    steps { x = 1 }"), 9, 5, "'steps' is a key, not a block", ""),
    ("block used as key", edit("    steps = 100", "    loss = 3"), 9, 5, "'loss' is a block, not a key", "loss {"),
    ("duplicate key", edit("    steps = 100", "    steps = 100\n    steps = 200"), 10, 5,
     "duplicate key 'steps': already set in this file", ""),
    ("duplicate via call", edit("    steps = 100", "    optimizer = adam(lr = 1)\n    optimizer.lr = 2"), 10, 5,
     "duplicate key 'optimizer.lr'", ""),
    ("duplicate block", OPEN + "  decompose { steps = 3 }\n}\n", 12, 3, "duplicate block 'decompose'", ""),
    ("missing target", "experiment t {\n  decompose { steps = 5 }\n}\n", 1, 1, "missing required block 'target'", ""),
    ("unknown target kind", edit("  target tms {", "  target tmss {"), 2, 10, "unknown target kind 'tmss'",
     "did you mean 'tms'?"),
    ("train in a gated target", "experiment t {\n  target gated {\n    train { steps = 5 }\n  }\n}\n", 3, 5,
     "unknown block 'train' for a gated target", ""),
    ("two experiments", BASE + "experiment u {\n}\n", 13, 1, "a file holds one experiment", ""),
    # types
    ("string for a number", edit("steps = 100", 'steps = "100"'), 9, 13, "expected a number for 'steps'", ""),
    ("list for a number", edit("steps = 100", "steps = [100, 200]"), 9, 13,
     "expected a number for 'steps', got a list", "sweep it: a line in the sweep block"),
    ("sweep axis outside a sweep", edit("steps = 100", "steps = grid(100, 200)"), 9, 13,
     "expected a number for 'steps', got grid(...)", "sweep { PATH = [...] }"),
    ("non-integer steps", edit("steps = 100", "steps = 20.5"), 9, 13, "expected an integer for 'steps', got 20.5",
     "never rounded"),
    ("non-integral scientific", edit("steps = 100", "steps = 1.5e0"), 9, 13, "expected an integer", ""),
    ("number for a bool", edit("hidden = 2", "hidden = 2\n    bias = 1"), 5, 12, "expected true or false for 'bias'", ""),
    ("enum typo", edit("    steps = 100", "    attribution = gradient(source = apdd)"), 9, 37,
     "unknown value 'apdd' for 'source'", "did you mean 'apd'?"),
    ("unknown call form", edit("batch(0.25)", "batc(0.25)"), 8, 12, "unknown topk 'batc'", "did you mean 'batch'?"),
    ("unknown argument", edit("    steps = 100", "    optimizer = adam(lrr = 1e-3)"), 9, 22,
     "unknown argument 'lrr' to adam()", "did you mean 'lr'?"),
    ("too many arguments", edit("batch(0.25)", "batch(0.25, 3)"), 8, 24, "too many arguments to batch()", ""),
    ("missing argument", edit("batch(0.25)", "batch()"), 8, 12, "batch() needs 1 argument", ""),
    ("none where not allowed", edit("    steps = 100", "    attribution = none"), 9, 19, "'attribution' cannot be none", ""),
    ("unknown metric", OPEN + "  report { metrics = [mmcs, mlr2] }\n}\n", 12, 29, "unknown metric 'mlr2'",
     "did you mean 'ml2r'?"),
    ("unknown paper key", OPEN + "  report { paper = tms52 }\n}\n", 12, 20, "unknown paper experiment 'tms52'",
     "did you mean 'tms_5_2'?"),
    # constants and arithmetic
    ("undefined constant", "let lr0 = 1e-3\n" + edit("    steps = 100", "    optimizer = adam(lr = $lr1)"), 10, 27,
     "undefined constant '$lr1'", "did you mean '$lr0'?"),
    ("constant redefined", "let a = 1\nlet a = 2\n" + BASE, 2, 5, "constant 'a' is already defined", ""),
    ("let inside a block", edit("    steps = 100", "    let x = 3"), 9, 5, "'let' is only allowed at the top level", ""),
    ("division by zero", edit("steps = 100", "steps = 100 / (2 - 2)"), 9, 20, "division by zero", ""),
    ("constant of the wrong type", 'let p = "x"\n' + edit("steps = 100", "steps = $p"), 10, 13,
     "expected a number for 'steps'", ""),
    # composition
    ("use after other statements", "let a = 1\nuse \"x.apd\"\n", 2, 1, "'use' must be the first statement", ""),
    ("use of a missing file", 'use "no_such_base.apd"\n', 1, 5, "cannot read 'no_such_base.apd'", ""),
    # expectations
    ("expect outside report", edit("    steps = 100", "    expect mmcs >= 1"), 9, 5, "'expect' belongs in the report block", ""),
    ("expect unknown metric", OPEN + "  report { expect mcs >= 0.9 }\n}\n", 12, 19, "unknown metric 'mcs' in expectation",
     "did you mean 'mmcs'?"),
    ("incomplete expect", OPEN + "  report { expect mmcs }\n}\n", 12, 12, "incomplete expectation 'expect mmcs'", ""),
    ("unknown reduction", OPEN + "  report { expect avg(mmcs) > 0.9 }\n}\n", 12, 19, "unknown reduction 'avg'", ""),
    # sweeps
    ("sweep over an unknown path", OPEN + "  sweep { decompose.stepz = grid(1, 2) }\n}\n", 12, 21,
     "unknown key 'stepz' in block 'decompose'", "did you mean 'steps'?"),
    ("sweep value of the wrong type", OPEN + "  sweep { decompose.steps = grid(10, 20.5) }\n}\n", 12, 38,
     "expected an integer for 'steps', got 20.5", ""),
    ("sweep over a block", OPEN + "  sweep { decompose.topk = [1, 2] }\n}\n", 12, 21, "'decompose.topk' is a block",
     "decompose.topk.value"),
    ("zip of unequal lengths", OPEN + "  sweep {\n    zip {\n      decompose.steps = [10, 20]\n"
     "      decompose.batch = [64]\n    }\n  }\n}\n", 15, 7, "zipped axes need the same number of values", ""),
    ("single sweep value", OPEN + "  sweep { seed = 3 }\n}\n", 12, 18, "a sweep axis needs several values", "grid("),
    # sweep points that do not validate: at the sweep value that made the point invalid
    ("sweep point with an invalid value", OPEN + "  sweep {\n    seed = seeds(2)\n    decompose.steps = grid(10, 0)\n"
     "  }\n}\n", 14, 32, "sweep point seed=0,decompose.steps=0: decompose.steps: must be > 0, got 0",
     "change or remove this value of 'decompose.steps'"),
    ("zip of incompatible values", OPEN + "  sweep {\n    zip {\n      decompose.topk.value = [0.25, 0.01]\n"
     "      decompose.batch = [64, 32]\n    }\n  }\n}\n", 14, 37,
     "sweep point decompose.topk.value=0.01,decompose.batch=32: decompose.topk: batch top-k 0.01 x batch 32 = 0.32 "
     "selects no component", "use topk >= 0.0312"),
    ("sweep value that breaks another field", OPEN + "  sweep { decompose.batch = grid(64, 2) }\n}\n", 12, 38,
     "sweep point decompose.batch=2: decompose.topk: batch top-k 0.25 x batch 2 = 0.5 selects no component",
     "use topk >= 0.5"),
    ("swept size the rank does not fit", edit("    components = 5", "    components = 5\n    rank = 3").rstrip()[:-1]
     + "  sweep { target.hidden = grid(2, 1) }\n}\n", 13, 35,
     "sweep point target.hidden=1: decompose.rank: rank 3 exceeds the largest rank", "use rank <= 2"),
    ("generated sweep values", OPEN + "  sweep { decompose.steps = range(-10, 30, 20) }\n}\n", 12, 29,
     "sweep point decompose.steps=-10: decompose.steps: must be > 0, got -10", "this value of 'decompose.steps'"),
    ("swept replicates below an expectation", OPEN + "  report { expect mmcs >= 0.9 for at least 3 replicates }\n"
     "  sweep { replicates = grid(3, 1) }\n}\n", 13, 32,
     "sweep point replicates=1: expect: 'for at least 3 replicates' cannot hold with replicates = 1", ""),
    # cross-field and range checks from runtime.spec.validate, mapped to the span that set the field
    ("probability out of range", edit("  decompose {", "  data { probability = 1.5 }\n  decompose {"), 6, 24,
     "data.probability: a probability must be in (0, 1]", "5%"),
    ("negative steps", edit("steps = 100", "steps = -5"), 9, 13, "decompose.steps: must be > 0, got -5", ""),
    ("zero batch (validate() divides by it)", edit("batch = 64", "batch = 0"), 10, 13,
     "decompose.batch: must be > 0, got 0", ""),
    ("absurd layer count", edit("hidden = 2", "hidden = 2\n    hidden_layers = 1e9"), 5, 21,
     "'hidden_layers' must be <= 1,000", ""),
    ("top-k too small for the batch", edit("batch(0.25)", "batch(0.001)"), 8, 12,
     "decompose.topk: batch top-k 0.001 x batch 64", ""),
    ("rank too large", edit("    components = 5", "    components = 5\n    rank = 9"), 8, 12,
     "decompose.rank: rank 9 exceeds", "rank <= 3"),
    ("n_active out of range", edit("  decompose {", "  data { mode = exactly_n_active(7) }\n  decompose {"), 6, 34,
     "data.n_active: n_active must be in [1, 5]", ""),
    ("synced index out of range", edit("  decompose {", "  data { synced = [[0, 9]] }\n  decompose {"), 6, 19,
     "data.synced: feature index 9 is out of range", ""),
    ("labels of a residual MLP", "experiment t {\n  target resid_mlp {\n    features = 4\n    d_embed = 8\n"
     "    d_mlp = 4\n    train { labels = identity }\n  }\n}\n", 6, 22, "target.train.labels:", ""),
    ("exponential without half-life", edit("    steps = 100", "    schedule = exponential\n    steps = 100"), 9, 16,
     "decompose.schedule.halflife: an exponential schedule needs a half-life", "halflife = 1000"),
    ("more replicates than exist", OPEN + "  report { expect mmcs >= 0.9 for at least 3 replicates }\n}\n", 12, 12,
     "expect: 'for at least 3 replicates' cannot hold with replicates = 1", ""),
    ("default field: points at the block header", "experiment t {\n  target tms { features = 5 }\n"
     "  decompose { topk = none }\n}\n", 3, 3, "decompose.loss.minimality: the minimality (top-k reconstruction) loss",
     ""),
    ("target file that does not exist", 'experiment t {\n  target file("no/such/target.npz")\n}\n', 2, 15,
     "cannot read target file", ""),
]


@pytest.mark.parametrize("name,text,line,col,message,hint", CASES, ids=[c[0] for c in CASES])
def test_error_location_and_message(name, text, line, col, message, hint):
    with pytest.raises(SpecError) as info:
        apdspec.loads(text, "t.apd")
    diags = info.value.diagnostics
    located = [d for d in diags if d.span is not None and (d.span.line, d.span.column) == (line, col)]
    assert located, f"no error at {line}:{col}; got:\n{info.value.render()}"
    d = next((d for d in located if message in d.message), None)
    assert d is not None, f"no '{message}' at {line}:{col}; got:\n{info.value.render()}"
    assert d.span.file == "t.apd"
    assert hint in d.hint


def test_there_are_at_least_30_cases():
    assert len(CASES) >= 30


def test_rendering_format_is_exact():
    text = "experiment t {\n  target tms { features = 5 }\n  decompose {\n    components = 5\n    stepz = 3\n  }\n}\n"
    with pytest.raises(SpecError) as info:
        apdspec.loads(text, "specs/foo.apd")
    assert str(info.value) == (
        "specs/foo.apd:5:5: error: unknown key 'stepz' in block 'decompose'\n"
        "    5 |     stepz = 3\n"
        "      |     ^^^^^\n"
        "hint: did you mean 'steps'?"
    )


def test_all_errors_are_collected_and_sorted():
    text = ("experiment t {\n  target tms { features = 5  hiden = 2 }\n  decompose {\n    steps = 2.5\n"
            "    topk = batc(1)\n  }\n  data { probability = 2 }\n}\n")
    with pytest.raises(SpecError) as info:
        apdspec.loads(text, "t.apd")
    where = [(d.span.line, d.span.column) for d in info.value.diagnostics]
    assert where == sorted(where)
    messages = " | ".join(d.message for d in info.value.diagnostics)
    for part in ("unknown key 'hiden'", "expected an integer for 'steps'", "unknown topk 'batc'", "data.probability"):
        assert part in messages
    assert len(info.value.diagnostics) == 4


def test_cross_field_error_names_the_other_setting():
    text = BASE.replace("batch(0.25)", "batch(0.001)")
    with pytest.raises(SpecError) as info:
        apdspec.loads(text, "t.apd")
    (d,) = info.value.diagnostics
    assert [(n.span.line, n.span.column) for n in d.notes] == [(10, 13)]  # batch = 64
    assert "'decompose.batch' is set here" in str(info.value)


def test_unreadable_files_are_spec_errors(tmp_path):
    with pytest.raises(SpecError, match="No such file"):
        apdspec.load(tmp_path / "missing.apd")
    with pytest.raises(SpecError, match="it is a directory"):
        apdspec.load(tmp_path)
    binary = tmp_path / "garbage.apd"
    binary.write_bytes(b"experiment t {\n \xff\xfe\x00 }\n")
    with pytest.raises(SpecError) as info:
        apdspec.load(binary)
    (d,) = info.value.diagnostics
    assert (d.span.line, d.span.column, d.message) == (2, 2, "not a UTF-8 text file")


def test_nul_bytes_are_an_error_at_their_position():
    with pytest.raises(SpecError, match="NUL character") as info:
        apdspec.loads("experiment t {\x00}")
    (d,) = info.value.diagnostics
    assert (d.span.line, d.span.column) == (1, 15)


# ------------------------------------------------------------------------------------------
# sweep points


def _diags(text, overrides=()):
    with pytest.raises(SpecError) as info:
        apdspec.loads(text, "t.apd", overrides)
    return info.value


def test_sweep_point_error_rendering_is_exact():
    err = _diags(OPEN + "  sweep {\n    seed = seeds(3)\n    decompose.steps = grid(10, 0)\n  }\n}\n")
    assert str(err) == (
        "t.apd:14:32: error: sweep point seed=0,decompose.steps=0: decompose.steps: must be > 0, got 0\n"
        "   14 |     decompose.steps = grid(10, 0)\n"
        "      |                                ^\n"
        "hint: every sweep point must be a valid experiment: change or remove this value of 'decompose.steps'\n"
        "note: the same error in 2 more points: seed=1,decompose.steps=0; seed=2,decompose.steps=0"
    )


def test_sweep_point_errors_are_all_collected_with_notes():
    text = (edit("    components = 5", "    components = 5\n    rank = 3").rstrip()[:-1]
            + "  sweep {\n    zip {\n      decompose.topk.value = [0.25, 0.01]\n      decompose.batch = [64, 32]\n"
              "    }\n    target.hidden = grid(2, 1)\n  }\n}\n")
    err = _diags(text, ["decompose.optimizer.lr=grid(1e-3, -1)"])
    got = [(d.span.file, d.span.line, d.span.column, d.message.split(": ")[1]) for d in err.diagnostics]
    assert got == [("t.apd", 15, 37, "decompose.topk"), ("t.apd", 18, 29, "decompose.rank"),
                   ("<override 1>", 1, 35, "decompose.optimizer.lr")]
    topk, rank, lr = err.diagnostics
    assert topk.message.startswith("sweep point decompose.topk.value=0.01,decompose.batch=32,target.hidden=2,"
                                   "decompose.optimizer.lr=0.001: ")
    # the other swept field of a cross-field problem, and the set field a swept size breaks, are noted
    assert [(n.message, n.span.line, n.span.column) for n in topk.notes[:1]] == [
        ("'decompose.batch' is 32 in this point", 16, 30)]
    assert [(n.message, n.span.line, n.span.column) for n in rank.notes[:1]] == [("'decompose.rank' is set here", 8, 12)]
    assert rank.notes[-1].message.startswith("the same error in 3 more points: ")
    assert lr.message.endswith("decompose.optimizer.lr: must be > 0, got -1.0")
    assert "Traceback" not in str(err)


def test_an_error_of_every_point_is_reported_once_as_the_spec_s():
    err = _diags(edit("steps = 100", "steps = -5").rstrip()[:-1] + "  sweep { seed = seeds(4) }\n}\n")
    (d,) = err.diagnostics
    assert (d.span.line, d.span.column, d.message) == (9, 13, "decompose.steps: must be > 0, got -5")


def test_a_swept_field_s_value_outside_the_sweep_is_not_checked():
    # replicates defaults to 1, too few for the expectation, but every point sets it
    text = OPEN + "  report { expect mmcs >= 0.9 for at least 3 replicates }\n  sweep { replicates = grid(3, 5) }\n}\n"
    assert [a.values for a in apdspec.loads(text, "t.apd").experiment.sweep.axes] == [(3, 5)]
    # the same for a top-k that only the base batch makes invalid
    text = edit("batch(0.25)", "batch(0.001)").rstrip()[:-1] + "  sweep { decompose.batch = grid(1000, 2000) }\n}\n"
    apdspec.loads(text, "t.apd")


# ------------------------------------------------------------------------------------------
# several syntax errors in one file: each reported, none invented


def _where(text: str) -> list[tuple[int, int, str]]:
    err = _diags(text)
    return [(d.span.line, d.span.column, d.message) for d in err.diagnostics]


def test_every_syntax_error_of_a_file_is_reported_with_its_position():
    text = edit("features = 5", "features 5").replace("steps = 100", "steps = 100 )").replace(
        "batch = 64", "batch = @")
    assert _where(text) == [(3, 14, "expected '=' after 'features', found number '5'"),
                            (9, 17, "expected '}' or a name, found ')'"),
                            (10, 13, "unexpected character '@'")]


def test_a_broken_statement_does_not_hide_a_literal_error_after_it():
    text = edit("features = 5", "features 5").replace("steps = 100", "steps = 1__00")
    assert [(line, col) for line, col, _ in _where(text)] == [(3, 14), (9, 13)]
    assert "malformed number '1__00'" in _where(text)[1][2]


def test_a_name_then_a_statement_on_the_next_line_is_one_error():
    # `seed zero` fails only at the next line's first token: that line still parses
    text = edit("  target tms {", "  seed zero\n  target tms {").replace("steps = 100", "steps 100")
    assert _where(text) == [(2, 8, "expected '=' after 'seed', found name 'zero'"),
                            (10, 11, "expected '=' after 'steps', found number '100'")]


def test_a_block_without_its_brace_is_one_error_not_a_cascade():
    # the block's '}' then closes `experiment`, and the experiment's own '}' finds none open
    text = edit("  decompose {", "  decompose")
    assert _where(text) == [(6, 12, "expected '=' or '{' after 'decompose', found a new statement on the next line")]


def test_an_unclosed_bracket_is_reported_where_the_next_statement_starts():
    text = edit("topk = batch(0.25)", "topk = batch(0.25").replace("batch = 64", "batch 64")
    assert [(line, col) for line, col, _ in _where(text)] == [(9, 5), (10, 11)]


@pytest.mark.parametrize("spec", ["quickstart.apd", "tms_5_2.apd", "spd_tms_5_2.apd", "resid_mlp_1l.apd", "gated.apd"])
def test_two_broken_assignments_in_a_shipped_spec_are_exactly_two_errors(spec):
    """Dropping the '=' of any two assignments far apart gives those two errors, at those places."""
    import re

    from paths import ROOT

    with open(f"{ROOT}/specs/{spec}") as f:
        lines = f.read().split("\n")
    assigns = [i for i, line in enumerate(lines) if re.match(r"\s+\w+ = [\w\d\"]", line) and "{" not in line
               and "(" not in line and "[" not in line]
    for a, b in [(assigns[0], assigns[-1]), (assigns[1], assigns[len(assigns) // 2])]:
        broken = list(lines)
        for i in (a, b):
            broken[i] = broken[i].replace(" = ", " ", 1)
        got = _where("\n".join(broken))
        assert [line for line, _, _ in got] == [a + 1, b + 1], got


# ------------------------------------------------------------------------------------------
# expectations that cannot hold, and dropping them from the command line

RESID = """experiment r {
  target resid_mlp { features = 10  d_embed = 100  d_mlp = 10 }
  decompose { components = 10  topk = batch(1)  steps = 10  batch = 8 }
  report { expect dedicated_features >= 9  expect mmcs_fake_free_metric >= 1 }
}
""".replace("  expect mmcs_fake_free_metric >= 1", "")


@pytest.mark.parametrize("clause,why", [
    ("dedicated_features >= 90", "dedicated_features lies in [0, 10] here (it counts features, of which there are 10)"),
    ("dedicated_features > 10", "lies in [0, 10]"),
    ("scrub_ratio < 0", "lies in [0, inf] here (it is never negative)"),
    ("mono_components == 11", "lies in [0, 10]"),
])
def test_an_expectation_outside_its_metric_s_range_is_an_error(clause, why):
    err = _diags(RESID.replace("dedicated_features >= 9", clause))
    (d,) = err.diagnostics
    assert (d.span.line, d.span.column) == (4, 12)
    assert d.message == f"expect: '{clause}' cannot hold: {why}" or why in d.message
    assert "cannot hold" in d.message and "report.expect = none" in d.hint


def test_expectations_at_their_metric_s_bounds_are_accepted():
    for clause in ("dedicated_features >= 10", "dedicated_features <= 0", "scrub_ratio >= 0", "mono_components == 10"):
        apdspec.loads(RESID.replace("dedicated_features >= 9", clause), "r.apd")
    tms = edit("  decompose {", "  report { expect mmcs >= 1  expect ml2r >= 5  expect matched_rows >= 5 }\n  decompose {")
    apdspec.loads(tms, "t.apd")
    (d,) = _diags(tms.replace("mmcs >= 1", "mmcs > 1")).diagnostics
    assert "it is a cosine similarity" in d.message


def test_too_few_replicates_for_an_inherited_expectation_says_what_to_change(tmp_path):
    base = tmp_path / "base.apd"
    base.write_text(OPEN + "  replicates = 5\n  report { expect mmcs >= 0.99 for at least 4 replicates }\n}\n")
    child = tmp_path / "child.apd"
    child.write_text('use "base.apd"\nexperiment c { replicates = 2 }\n')
    with pytest.raises(SpecError) as info:
        apdspec.load(child)
    (d,) = info.value.diagnostics
    assert d.span.file.endswith("base.apd") and (d.span.line, d.span.column) == (13, 12)
    assert d.message == "expect: 'for at least 4 replicates' cannot hold with replicates = 2"
    assert d.hint == ("run at least 4 replicates, or lower the count in the expectation; or drop the spec's "
                      "expectations with -s 'report.expect = none'")
    assert [n.message for n in d.notes] == ["'replicates' is set here"] and d.notes[0].span.file.endswith("child.apd")
    # what the hint says works: the count, or dropping them
    assert apdspec.load(child, ["replicates=4"]).experiment.replicates == 4
    assert apdspec.load(child, ["report.expect = none"]).experiment.report.expect == ()
    assert apdspec.load(child, ["report.expect=[]"]).experiment.report.expect == ()


def test_report_expect_takes_only_none():
    err = _diags(BASE, ["report.expect = 3"])
    (d,) = err.diagnostics
    assert (d.span.file, d.span.column) == ("<override 1>", 17) and "takes only 'none'" in d.message
