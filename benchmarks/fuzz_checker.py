"""Fuzz the spec checker: only `SpecError` may escape `apdspec.load`, and every spec checks quickly.

    python benchmarks/fuzz_checker.py                      # 10 000 cases, seed 0, 2 workers
    python benchmarks/fuzz_checker.py --cases 500 --seed 3 --save /tmp/fuzz   # failing cases -> files
    python benchmarks/fuzz_checker.py --replay 1234        # run one case in this process, print the outcome

Each case is a spec file (bytes), optional extra files it may `use`, and optional `-s` overrides,
built deterministically from (seed, case index): byte flips/inserts/deletes, token replacements
with interesting tokens (huge and non-finite numbers, suffixes, reserved words), deep nesting, very
long lines, NUL and invalid UTF-8, unterminated strings, constant chains and cycles, `use` of
missing, self-referencing and deeply chained files, sweep blow-ups, and grammar-aware generation
from the schema and by recombining blocks of the seed specs (`specs/*.apd`).

Cases run in worker subprocesses with a watchdog: a case that takes longer than --timeout seconds
(counted from the moment it is generated: the generator's own cost on a big case does not count)
is a hang (the worker is killed and replaced). Per case the worker calls `apdspec.load` (timed),
then `apdspec.format_text` on the text, `explain` on a spec that loads (and reloads its canonical
text, which must give the same experiment), and every tenth case the CLI `apdspec check` (exit 3 is
an internal error). Anything but SpecError from any of them is counted by exception type.
SpecErrors made by the last-resort safety net (`SpecError.internal`) are counted separately: they
are bugs the net hid, and the target is 0.

Stdlib only (plus the project). Deterministic for a given --seed and --cases (not in timing).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import re
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

SPEC_DIR = os.path.join(ROOT, "specs")
SEEDS: dict[str, str] = {}  # seed spec name -> text


def _seeds() -> dict[str, str]:
    if not SEEDS:
        for name in sorted(os.listdir(SPEC_DIR)):
            if name.endswith(".apd"):
                with open(os.path.join(SPEC_DIR, name), encoding="utf-8") as fh:
                    SEEDS[name] = fh.read()
    return SEEDS


# ------------------------------------------------------------------------------------------
# Cases


@dataclass
class Case:
    index: int
    mutators: list[str]
    main: bytes
    extra: dict[str, bytes] = field(default_factory=dict)  # other files next to the spec (name -> bytes)
    overrides: list[str] = field(default_factory=list)


MAIN = "case.apd"

# Interesting tokens for token-level replacement.
NUMBERS = ["0", "-0", "1", "-1", "2", "0.5", ".5", "2.", "1e999", "-1e999", "1e308", "1.7976931348623157e308",
           "1e-400", "5e-324", "inf", "nan", "-inf", "NaN", "9223372036854775807", "9223372036854775808",
           "-9223372036854775809", "18446744073709551616", "1" + "0" * 400, "9" * 4400, "1" + "0" * 5000,
           "1k", "1M", "999999999999999M", "1e15M", "2.5k", "1e308k", "5%", "1e308%", "0%", "100%",
           "1_000_000_000_000_000_000", "1__0", "1_", "_1", "0x10", "1e", "1e+", "2kb", "1.2.3", "00", "0123",
           "10000", "10001", "1001", "1000", "4097", "1e4", "1e9", "1e18", "1e19", "1e300"]
WORDS = ["none", "true", "false", "all", "pi", "use", "let", "expect", "for", "at", "least", "replicates",
         "experiment", "target", "sweep", "zip", "file", "tms", "resid_mlp", "gated", "grid", "seeds", "range",
         "logspace", "decompose", "loss", "train", "report", "data", "topk", "batch", "sample", "exact",
         "optimizer", "schedule", "adam", "adamw", "cosine", "exponential", "schatten", "lp", "uniform",
         "exactly_n_active", "revive", "split", "rank", "layers", "hidden_layers", "features", "components",
         "steps", "seed", "metrics", "plots", "paper", "mean", "min", "max", "median", "$x", "$a", "$lr",
         "a" * 300, "é", "λ", "_", "x" * 20_000]
PUNCT = ["{", "}", "(", ")", "[", "]", "=", ",", ".", ";", "-", "+", "*", "/", ">=", "<=", "==", ">", "<", "%",
         "$", "#", '"', "'", "\\", "@", "`", "\t", "\n", "\r", "\r\n", "\x00", "\x0b", "\x1b", "\u2028", "\ufeff"]
STRINGS = ['"', '"unterminated', '""', '"\\q"', '"a\\"', '"\\', '"x\x00y"', '"' + "s" * 5000 + '"', '"case.apd"',
           '"."', '"/"', '"/dev/null"', '"/dev/zero"', '"/dev/stdin"', '"/proc/self/fd/0"', '"missing.apd"',
           '"../specs/tms_5_2.apd"', '"tms_5_2.apd"', '"\\n"', '"é"']
BYTES = [b"\x00", b"\xff", b"\xfe", b"\xc3", b"\x80", b"\xc3\x28", b"\xed\xa0\x80", b"\xef\xbb\xbf", b"\xf4\x90\x80\x80",
         b"\r", b"\t", b"\x0c", b"\x7f", b"{", b"}", b'"', b"#", b"$", b"\n", b"\\"]

_TOKEN = re.compile(r'"(?:[^"\\\n]|\\.)*"?|#[^\n]*|\$?[A-Za-z_][A-Za-z0-9_]*|(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)'
                    r'(?:[eE][+-]?[\d_]+)?[A-Za-z0-9_%]*|>=|<=|==|\S')
_NUM_TOKEN = re.compile(r"(?:\d|\.\d)")


def _tokens(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in _TOKEN.finditer(text)]


def _interesting(rng: random.Random) -> str:
    pool = rng.choice([NUMBERS, NUMBERS, WORDS, PUNCT, STRINGS])
    return rng.choice(pool)


def _pos(rng: random.Random, n: int) -> int:
    return rng.randint(0, max(n, 0))


# -- byte level


def m_byte_flip(rng, text: str, case: Case) -> str:
    data = bytearray(text.encode("utf-8", "surrogateescape"))
    for _ in range(rng.randint(1, 8)):
        if data:
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
    return data.decode("utf-8", "surrogateescape")


def m_byte_insert(rng, text: str, case: Case) -> str:
    data = text.encode("utf-8", "surrogateescape")
    for _ in range(rng.randint(1, 4)):
        i = _pos(rng, len(data))
        b = rng.choice(BYTES) if rng.random() < 0.7 else bytes([rng.randrange(256)])
        data = data[:i] + b * rng.choice([1, 1, 2, 3]) + data[i:]
    return data.decode("utf-8", "surrogateescape")


def m_byte_delete(rng, text: str, case: Case) -> str:
    data = text.encode("utf-8", "surrogateescape")
    for _ in range(rng.randint(1, 3)):
        i = _pos(rng, len(data))
        data = data[:i] + data[i + rng.randint(1, 16):]
    return data.decode("utf-8", "surrogateescape")


def m_truncate(rng, text: str, case: Case) -> str:
    return text[:_pos(rng, len(text))]


def m_splice(rng, text: str, case: Case) -> str:
    """Copy a chunk of this or another seed spec to a random place."""
    src = rng.choice(list(_seeds().values())) if rng.random() < 0.5 else text
    a = _pos(rng, len(src))
    chunk = src[a:a + rng.randint(1, 200)]
    i = _pos(rng, len(text))
    return text[:i] + chunk + text[i:]


def m_line_ops(rng, text: str, case: Case) -> str:
    lines = text.splitlines(keepends=True) or [""]
    i = rng.randrange(len(lines))
    op = rng.choice(["dup", "del", "swap", "crlf", "cr"])
    if op == "dup":
        lines.insert(i, lines[i])
    elif op == "del":
        del lines[i]
    elif op == "swap":
        j = rng.randrange(len(lines))
        lines[i], lines[j] = lines[j], lines[i]
    elif op == "crlf":
        return text.replace("\n", "\r\n")
    else:
        return text.replace("\n", "\r")
    return "".join(lines)


# -- token level


def m_token_replace(rng, text: str, case: Case) -> str:
    toks = _tokens(text)
    for _ in range(rng.randint(1, 3)):
        if not toks:
            break
        a, b = rng.choice(toks)
        new = _interesting(rng)
        text = text[:a] + new + text[b:]
        toks = _tokens(text)
    return text


def m_number_replace(rng, text: str, case: Case) -> str:
    """Replace number tokens with huge, tiny, non-finite, suffixed or malformed numbers."""
    toks = [(a, b) for a, b in _tokens(text) if _NUM_TOKEN.match(text, a)]
    rng.shuffle(toks)
    for a, b in sorted(toks[: rng.randint(1, 4)], reverse=True):
        new = rng.choice(NUMBERS)
        if rng.random() < 0.2:
            new = f"{new} {rng.choice(['*', '+', '-', '/'])} {rng.choice(NUMBERS)}"
        text = text[:a] + new + text[b:]
    return text


def m_token_insert(rng, text: str, case: Case) -> str:
    toks = _tokens(text)
    for _ in range(rng.randint(1, 3)):
        i = rng.choice(toks)[rng.randrange(2)] if toks else 0
        text = text[:i] + " " + _interesting(rng) + " " + text[i:]
        toks = _tokens(text)
    return text


def m_token_delete(rng, text: str, case: Case) -> str:
    toks = _tokens(text)
    for _ in range(rng.randint(1, 3)):
        if not toks:
            break
        a, b = rng.choice(toks)
        text = text[:a] + text[b:]
        toks = _tokens(text)
    return text


def m_drop_equal(rng, text: str, case: Case) -> str:
    """The typo the error messages should catch: `key value`, a missing '=' or '}'."""
    spots = [m.start() for m in re.finditer(r" = |\}", text)]
    if spots:
        i = rng.choice(spots)
        text = text[:i] + (" " if text[i] == " " else "") + text[i + (3 if text[i] == " " else 1):]
    return text


# -- structure


def m_deep_nesting(rng, text: str, case: Case) -> str:
    n = rng.choice([40, 64, 100, 200, 500, 1000, 5000, 50_000])
    opener = rng.choice(["(", "[", "{", "x {", "a(", "-", "- ", "$a + ", "1 + ", "1 * ", "((1 + "])
    closer = {"(": ")", "[": "]", "{": "}", "x {": "}", "a(": ")", "((1 + ": "1))"}.get(opener, "")
    closed = rng.random() < 0.5
    body = opener * n + "1" + (closer * n if closed else "")
    where = rng.choice(["value", "top", "anywhere"])
    if where == "value":
        m = list(re.finditer(r"= ([^\n#]*)", text))
        if m:
            s = rng.choice(m)
            return text[:s.start(1)] + body + text[s.end(1):]
    if where == "top":
        return "let a = 1\nx = " + body + "\n" + text
    i = _pos(rng, len(text))
    return text[:i] + body + text[i:]


def m_long_line(rng, text: str, case: Case) -> str:
    n = rng.choice([1000, 4096, 10_000, 100_000, 1_000_000, 5_000_000])
    kind = rng.choice(["name", "number", "string", "comment", "sum", "list", "spaces", "braces", "ustring", "quotes"])
    unit = {"name": "a", "number": "1", "string": "s", "comment": "#", "sum": "1 + ", "list": "1, ", "spaces": " ",
            "braces": "{}", "ustring": "é", "quotes": '"'}[kind]
    body = unit * (n // len(unit))
    if kind == "string":
        body = '"' + body + '"'
    elif kind == "sum":
        body += "1"
    elif kind == "list":
        body = "[" + body + "1]"
    i = rng.choice([m.end() for m in re.finditer(r"= ", text)] or [0])
    return text[:i] + body + text[i:]


def m_nul_utf8(rng, text: str, case: Case) -> str:
    choice = rng.choice(["nul", "bom", "invalid", "surrogate", "latin1", "utf16"])
    i = _pos(rng, len(text))
    if choice == "nul":
        return text[:i] + "\x00" + text[i:]
    if choice == "bom":
        return "\ufeff" + text
    if choice == "invalid":
        return text[:i] + rng.choice(["\udcff", "\udcc3(", "\udced\udca0\udc80"]) + text[i:]
    if choice == "surrogate":  # a UTF-8 encoded surrogate (invalid UTF-8)
        return text[:i] + "\udced\udca0\udc80" + text[i:]
    if choice == "latin1":
        return text.replace("e", "\udce9", 3)
    return text.encode("utf-16", "surrogatepass").decode("utf-8", "surrogateescape")


def m_unterminated(rng, text: str, case: Case) -> str:
    i = rng.choice([m.end() for m in re.finditer(r"= |\(|\[|use ", text)] or [0])
    return text[:i] + rng.choice(['"abc', '"', '"a\\', '"a\\"']) + text[i:]


def m_refs(rng, text: str, case: Case) -> str:
    """Constants: cycles, self-reference, long chains, exponential doubling, undefined, redefinition."""
    kind = rng.choice(["cycle", "self", "chain", "double", "undefined", "redefine", "bare", "nonnum"])
    n = rng.choice([10, 100, 1000, 5000])
    if kind == "cycle":
        pre = "let a = $b\nlet b = $a\n"
    elif kind == "self":
        pre = "let a = $a + 1\n"
    elif kind == "chain":
        pre = "let a0 = 1\n" + "".join(f"let a{i} = {rng.choice(['$', '', '-$', '$'])}a{i - 1}"
                                        f"{rng.choice(['', ' + 1', ' * 1'])}\n" for i in range(1, n))
    elif kind == "double":
        pre = "let a0 = 1\n" + "".join(f"let a{i} = $a{i - 1} + $a{i - 1}\n" for i in range(1, rng.choice([30, 64, 100])))
    elif kind == "undefined":
        pre = "let a = $zz * 2\n"
    elif kind == "redefine":
        pre = "let a = 1\nlet a = 2\n"
    elif kind == "bare":
        pre = "let a = 3\nlet b = a + a\n"
    else:
        pre = "let a = " + rng.choice(["relu", "[mmcs]", "adam(lr = 1)", '"s"', "none", "true", "[[0, 1]]"]) + "\n"
    last = "a" if kind not in ("chain", "double") else ("a%d" % (n - 1) if kind == "chain" else "a0")
    if kind == "double":
        last = re.findall(r"let (a\d+)", pre)[-1]
    nums = [(a, b) for a, b in _tokens(text) if _NUM_TOKEN.match(text, a)]
    for a, b in sorted(rng.sample(nums, min(len(nums), rng.randint(1, 3))), reverse=True):
        text = text[:a] + rng.choice(["$", "$", ""]) + last + text[b:]
    lines = text.split("\n")
    use = [i for i, l in enumerate(lines) if l.startswith("use ")]
    at = use[-1] + 1 if use else 0
    return "\n".join(lines[:at]) + ("\n" if at else "") + pre + "\n".join(lines[at:])


def m_use(rng, text: str, case: Case) -> str:
    """`use` of missing, self-referencing, cyclic, deeply chained, non-text and special files."""
    kind = rng.choice(["self", "missing", "dir", "cycle", "chain", "special", "garbage", "mid", "empty", "abs"])
    text = re.sub(r'^use "[^"\n]*"\n', "", text, flags=re.M)
    if kind == "self":
        return f'use "{MAIN}"\n' + text
    if kind == "missing":
        return f'use "{rng.choice(["missing.apd", "sub/missing.apd", "../nope/x.apd", "missing"])}"\n' + text
    if kind == "dir":
        return f'use "{rng.choice([".", "..", "/", "sub"])}"\n' + text
    if kind == "cycle":
        case.extra["b.apd"] = b'use "c.apd"\n'
        case.extra["c.apd"] = f'use "{MAIN}"\n'.encode()
        return 'use "b.apd"\n' + text
    if kind == "chain":
        n = rng.choice([10, 50, 200, 1000])
        for i in range(n):
            case.extra[f"u{i}.apd"] = (f'use "u{i + 1}.apd"\n' if i < n - 1 else 'use "tms_5_2.apd"\n').encode()
        return 'use "u0.apd"\n' + text
    if kind == "special":
        return f'use "{rng.choice(["/dev/null", "/dev/zero", "/dev/stdin", "/proc/self/fd/0", "/dev/urandom", "/proc/self/status"])}"\n' + text
    if kind == "garbage":
        case.extra["g.apd"] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 400)))
        return 'use "g.apd"\n' + text
    if kind == "mid":
        lines = text.split("\n")
        i = _pos(rng, len(lines))
        return "\n".join(lines[:i] + ['use "tms_5_2.apd"'] + lines[i:])
    if kind == "empty":
        return 'use ""\n' + text
    return f'use "{os.path.join(SPEC_DIR, rng.choice(sorted(_seeds())))}"\n' + text


def m_target_file(rng, text: str, case: Case) -> str:
    path = rng.choice(["missing.npz", MAIN, ".", "/dev/zero", "/dev/stdin", "", "x\\ty", "/dev/null", "g.npz"])
    if path == "g.npz":
        case.extra["g.npz"] = b"PK\x03\x04" + bytes(rng.randrange(256) for _ in range(200))
    new = f'target file("{path}")'
    m = re.search(r"target \w+ \{", text)
    if not m:
        return text + "\n" + new + "\n"
    # drop the target block's body (braces matched naively) and replace it with the call
    depth, j = 0, m.end() - 1
    for j in range(m.end() - 1, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            break
    return text[:m.start()] + new + text[j + 1:]


def m_sweep(rng, text: str, case: Case) -> str:
    axes = []
    for _ in range(rng.randint(1, 4)):
        path = rng.choice(["seed", "decompose.steps", "decompose.optimizer.lr", "data.probability", "replicates",
                           "decompose.components", "target.features", "decompose.topk", "decompose.rank", "nope"])
        fn = rng.choice([f"seeds({rng.choice(['10000', '2000', '2001', '100', '0', '-1', '1e999', '2.5', 'inf'])})",
                         f"range({rng.choice(NUMBERS)}, {rng.choice(NUMBERS)}, {rng.choice(NUMBERS)})",
                         f"range(0, {rng.choice(['10000', '1e308', '1e300', '9223372036854775807'])})",
                         f"logspace({rng.choice(NUMBERS)}, {rng.choice(NUMBERS)}, {rng.choice(['2', '10000', '3'])})",
                         "grid(" + ", ".join(rng.choice(NUMBERS) for _ in range(rng.randint(0, 5))) + ")",
                         "[" + ", ".join(str(i) for i in range(rng.choice([1, 3, 1000]))) + "]",
                         "grid(batch(0.5), none)"])
        axes.append(f"{path} = {fn}")
    if rng.random() < 0.3:
        axes = ["zip { " + "  ".join(axes) + " }"]
    block = "sweep {\n  " + "\n  ".join(axes) + "\n}\n"
    if rng.random() < 0.3:
        case.overrides.append(f"{rng.choice(['seed', 'decompose.steps'])}={rng.choice(['seeds(10000)', 'seeds(2000)', 'grid(1, 2)', 'range(0, 100)'])}")
    i = text.rfind("}")
    return text[:i] + block + text[i:] if i >= 0 else text + block


def m_overrides(rng, text: str, case: Case) -> str:
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(["seed", "decompose.steps", "decompose.optimizer.lr", "target.features", "decompose",
                           "x.y.z", "", "decompose.topk", "report.metrics", "sweep.seed", "target"])
        value = rng.choice(NUMBERS + WORDS[:30] + STRINGS + ["batch(1)", "grid(1, 2)", "[", "(", "seeds(10000)"])
        ov = f"{path}={value}"
        if rng.random() < 0.2:
            ov = m_byte_flip(rng, ov, case) if rng.random() < 0.5 else ov + rng.choice(["\n", "\x00", "\udcff", "}"])
        case.overrides.append(ov)
    return text


# -- grammar-aware generation


def _value_for(rng, kind) -> str:
    from apdspec import values as V

    if isinstance(kind, V.Optional):
        return "none" if rng.random() < 0.2 else _value_for(rng, kind.inner)
    if isinstance(kind, V.Int):
        return rng.choice(["1", "2", "3", "5", "10", "100", "1k", "0", "-1", "1e3", "2.5", "1000", "1001"] +
                          ([rng.choice(NUMBERS)] if rng.random() < 0.1 else []))
    if isinstance(kind, V.Float):
        return rng.choice(["0.5", "1", "1e-3", "5%", "3e-2", "0", "-1", "2 * pi", "1 / 3", "$c", "(1 + 2) * 3"] +
                          ([rng.choice(NUMBERS)] if rng.random() < 0.1 else []))
    if isinstance(kind, V.Bool):
        return rng.choice(["true", "false", "1"])
    if isinstance(kind, V.Enum):
        return rng.choice(list(kind.choices) + ["relux"])
    if isinstance(kind, V.Range):
        a, b = sorted(rng.sample(range(-5, 6), 2))
        return rng.choice([f"[{a}, {b}]", f"uniform({a}, {b})", f"[{b}, {a}]", "[1]", "[-pi, pi]"])
    if isinstance(kind, V.Groups):
        return rng.choice(["[[0, 1], [2, 3]]", "[[0, 0]]", "[]", "[[99]]", "[0]"])
    if isinstance(kind, V.Names):
        names = list(kind.registry())
        return rng.choice(["all", "[" + ", ".join(rng.sample(names, rng.randint(0, min(3, len(names))))) + "]", "[x]"])
    if isinstance(kind, V.Key):
        return rng.choice(["tms_5_2", "gated", "nope", '"tms_5_2"'])
    if isinstance(kind, V.PerFeature):
        return rng.choice(["0.05", "[0.1, 0.2]", "[0.1, 0.1, 0.1, 0.1, 0.1]", "zipf(0.1)", "geometric(1, ratio = 0.9)",
                           "zipf(exponent = 2)", "geometric(0.5, ratio = -1)", "zipff(1)", "[]"])
    if isinstance(kind, V.Path):
        return rng.choice(['"x.npz"', '""', '"/dev/null"', "x"])
    if isinstance(kind, V.Str):
        return rng.choice(['"x"', '""', "x"])
    return "1"


def _form_call(rng, name: str, form, fields) -> str:
    from apdspec.schema import Leaf

    args = []
    for i, f in enumerate(form.positional):
        if i < form.required or rng.random() < 0.5:
            node = fields.get(f)
            args.append(_value_for(rng, node.kind) if isinstance(node, Leaf) else "1")
    for kw, f in form.keywords.items():
        if rng.random() < 0.3:
            node = fields.get(f)
            args.append(f"{kw} = " + (_value_for(rng, node.kind) if isinstance(node, Leaf) else "1"))
    if not args and rng.random() < 0.5:
        return name
    return f"{name}({', '.join(args)})"


def _gen_obj(rng, obj, indent: str, depth: int) -> list[str]:
    from apdspec.schema import Leaf, Obj

    out = []
    for name, node in obj.fields.items():
        if rng.random() < 0.5:
            continue
        if isinstance(node, Leaf):
            if node.forms and rng.random() < 0.4:
                fname, form = rng.choice(list(node.forms.items()))
                out.append(f"{indent}{name} = {_form_call(rng, fname, form, obj.fields)}")
            else:
                out.append(f"{indent}{name} = {_value_for(rng, node.kind)}")
        elif isinstance(node, Obj):
            if node.forms and rng.random() < 0.6:
                fname, form = rng.choice(list(node.forms.items()))
                out.append(f"{indent}{name} = {_form_call(rng, fname, form, node.fields)}")
            elif depth < 4:
                out.append(f"{indent}{name} {{")
                out += _gen_obj(rng, node, indent + "  ", depth + 1)
                out.append(f"{indent}}}")
    return out


def m_generate(rng, text: str, case: Case) -> str:
    """A spec generated from the schema (keys, kinds and call forms), ignoring `text`."""
    from apdspec.schema import DATA, DECOMPOSE, EXPERIMENT, REPORT, TARGETS

    kind = rng.choice(["tms", "tms", "resid_mlp", "gated"])
    out = ["let c = 0.5"] if rng.random() < 0.5 else []
    out.append(f"experiment g{rng.randrange(100)} {{")
    for name in ("seed", "replicates", "dtype"):
        if rng.random() < 0.5:
            out.append(f"  {name} = {_value_for(rng, EXPERIMENT.fields[name].kind)}")
    out.append(f"  target {kind} {{")
    out += _gen_obj(rng, TARGETS[kind], "    ", 1)
    out.append("  }")
    for name, obj in (("data", DATA), ("decompose", DECOMPOSE), ("report", REPORT)):
        if rng.random() < 0.8:
            out.append(f"  {name} {{")
            out += _gen_obj(rng, obj, "    ", 1)
            if name == "report" and rng.random() < 0.5:
                out.append(f"    expect {rng.choice(['mmcs', 'mean(ml2r)', 'min(mmcs)', 'nope'])} "
                           f"{rng.choice(['>=', '<', '=='])} {rng.choice(['0.9', '1e999', '$c', '-1'])}"
                           + rng.choice(["", " for at least 1 replicates", " for 3 replicates", " for $c replicates"]))
            out.append("  }")
    if rng.random() < 0.2:
        out.append("  sweep { seed = seeds(3) }")
    out.append("}")
    return "\n".join(out) + "\n"


def _blocks(text: str) -> list[tuple[int, int]]:
    """(start, end) of every `name {` ... `}` block at depth 1 (inside the experiment), naively."""
    out, depth, start = [], 0, None
    for m in re.finditer(r"[{}]|#[^\n]*|\"(?:[^\"\\\n]|\\.)*\"", text):
        c = m.group(0)
        if c == "{":
            depth += 1
            if depth == 2:
                start = text.rfind("\n", 0, m.start()) + 1
        elif c == "}":
            if depth == 2 and start is not None:
                out.append((start, m.end()))
            depth -= 1
    return out


def m_recombine(rng, text: str, case: Case) -> str:
    """Swap one top-level block of the experiment for a block of another seed spec, or add one."""
    other = rng.choice(list(_seeds().values()))
    mine, theirs = _blocks(text), _blocks(other)
    if not theirs:
        return text
    a, b = rng.choice(theirs)
    block = other[a:b]
    if mine and rng.random() < 0.7:
        s, e = rng.choice(mine)
        return text[:s] + block + text[e:]
    i = text.rfind("}")
    return text[:i] + block + "\n" + text[i:] if i >= 0 else text + block


MUTATORS = {
    "byte_flip": (m_byte_flip, 6), "byte_insert": (m_byte_insert, 6), "byte_delete": (m_byte_delete, 5),
    "truncate": (m_truncate, 3), "splice": (m_splice, 3), "line_ops": (m_line_ops, 3),
    "token_replace": (m_token_replace, 8), "number_replace": (m_number_replace, 10), "token_insert": (m_token_insert, 5),
    "token_delete": (m_token_delete, 4), "drop_equal": (m_drop_equal, 3), "deep_nesting": (m_deep_nesting, 4),
    "long_line": (m_long_line, 3), "nul_utf8": (m_nul_utf8, 3), "unterminated": (m_unterminated, 2),
    "refs": (m_refs, 5), "use": (m_use, 5), "target_file": (m_target_file, 2), "sweep": (m_sweep, 5),
    "overrides": (m_overrides, 4), "generate": (m_generate, 8), "recombine": (m_recombine, 4),
}
_NAMES = list(MUTATORS)
_WEIGHTS = [MUTATORS[n][1] for n in _NAMES]


def make_case(seed: int, index: int) -> Case:
    """Case `index` of the run with `seed`: a seed spec with 1-3 mutations (deterministic)."""
    rng = random.Random(f"apdspec-fuzz:{seed}:{index}")
    seeds = _seeds()
    text = seeds[rng.choice(sorted(seeds))]
    case = Case(index, [], b"")
    names = [rng.choices(_NAMES, _WEIGHTS)[0] for _ in range(rng.choices([1, 2, 3], [6, 3, 1])[0])]
    # the multi-megabyte line last: token-level mutators on a 10 MB text took the generator ~20 s
    for name in sorted(names, key=lambda n: n == "long_line"):
        case.mutators.append(name)
        text = MUTATORS[name][0](rng, text, case)
    case.main = text.encode("utf-8", "surrogateescape")
    return case


# ------------------------------------------------------------------------------------------
# Running one case (in a worker)


def _describe_exc(e: BaseException) -> dict:
    tb = traceback.extract_tb(e.__traceback__)
    frames = [f for f in tb if "apdspec" in f.filename or "runtime" in f.filename] or tb
    where = f"{os.path.relpath(frames[-1].filename, ROOT)}:{frames[-1].lineno}" if frames else "?"
    return {"type": type(e).__name__, "message": str(e)[:300], "where": where}


def _located(err) -> bool:
    """Every diagnostic has a file and, unless it is about a whole file, a line and column >= 1."""
    for d in err.diagnostics:
        if d.span is None:
            if not d.file:
                return False
        elif d.span.line < 1 or d.span.column < 1 or not d.span.file:
            return False
    return True


def run_case(case: Case, workdir: str, cli: bool) -> dict:
    """Load the case's spec from `workdir` and classify the outcome (never raises)."""
    import apdspec
    from apdspec import SpecError
    from apdspec.explain import explain

    path = os.path.join(workdir, MAIN)
    written = []
    for name, data in [(MAIN, case.main), *case.extra.items()]:
        with open(os.path.join(workdir, name), "wb") as fh:
            fh.write(data)
        written.append(name)
    out: dict = {"index": case.index, "errors": []}
    try:
        t0 = time.perf_counter()
        spec = None
        try:
            spec = apdspec.load(path, case.overrides)
            out["status"] = "ok"
        except SpecError as e:
            out["status"] = "spec_error"
            out["internal"] = bool(getattr(e, "internal", False))
            out["located"] = _located(e)
            out["first"] = str(e).split("\n", 1)[0][:200]
        except (Exception, RecursionError) as e:
            out["status"] = "exception"
            out["errors"].append({"stage": "load", **_describe_exc(e)})
        out["time"] = time.perf_counter() - t0
        # secondary entry points: fmt on the text, explain and the canonical text of a spec that loads
        try:
            apdspec.format_text(case.main.decode("utf-8", "surrogateescape"), path)
        except SpecError:
            pass
        except (Exception, RecursionError) as e:
            out["errors"].append({"stage": "fmt", **_describe_exc(e)})
        if spec is not None:
            try:
                explain(spec)
                explain(spec, "decompose.stepz")
            except SpecError:
                pass
            except (Exception, RecursionError) as e:
                out["errors"].append({"stage": "explain", **_describe_exc(e)})
            try:
                again = apdspec.loads(spec.text)
                if again.experiment != spec.experiment:
                    out["errors"].append({"stage": "roundtrip", "type": "Mismatch", "message": "", "where": ""})
            except (Exception, RecursionError) as e:
                out["errors"].append({"stage": "roundtrip", **_describe_exc(e)})
        if cli:
            from apdspec.cli import main

            buf = io.StringIO()
            try:
                with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
                    args = ["check", path] + [a for o in case.overrides for a in ("-s", o)]
                    code = main(args)
            except SystemExit as e:  # argparse rejects e.g. an override starting with '-'
                code = e.code
            except (Exception, RecursionError) as e:
                out["errors"].append({"stage": "cli", **_describe_exc(e)})
                code = None
            if code not in (0, 2, None):
                out["errors"].append({"stage": "cli", "type": f"exit {code}",
                                      "message": buf.getvalue()[-300:], "where": ""})
    finally:
        for name in written:
            with contextlib.suppress(OSError):
                os.remove(os.path.join(workdir, name))
    return out


def worker(seed: int, cmd_fd: int, res_fd: int) -> None:
    import resource

    with contextlib.suppress(ValueError, OSError):  # a runaway case fails with MemoryError, not the machine
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
    import apdspec.loader  # noqa: F401  (import time is not case time)

    workdir = tempfile.mkdtemp(prefix="apdfuzz-")
    for name, text in _seeds().items():
        with open(os.path.join(workdir, name), "w", encoding="utf-8") as fh:
            fh.write(text)
    os.makedirs(os.path.join(workdir, "sub"), exist_ok=True)
    cmds = os.fdopen(cmd_fd, "r")
    res = os.fdopen(res_fd, "w")
    try:
        for line in cmds:
            index = int(line)
            case = make_case(seed, index)
            res.write(json.dumps({"started": index}) + "\n")  # the watchdog times the checker, not the generator
            res.flush()
            out = run_case(case, workdir, cli=index % 10 == 0)
            out["mutators"] = case.mutators
            res.write(json.dumps(out) + "\n")
            res.flush()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# ------------------------------------------------------------------------------------------
# The parent: workers with a watchdog


GENERATE_S = 120.0  # the generator's own time allowance per case (a 10 MB case takes ~5 s on a busy core)


class Worker:
    def __init__(self, seed: int):
        cmd_r, self.cmd_w = os.pipe()
        self.res_r, res_w = os.pipe()
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--worker", str(seed), str(cmd_r), str(res_w)],
            pass_fds=(cmd_r, res_w), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": ROOT, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"})
        os.close(cmd_r)
        os.close(res_w)
        self.buf = b""
        self.index: int | None = None
        self.started = 0.0

    def send(self, index: int) -> None:
        # until the worker says the case is generated (read_line), allow GENERATE_S more for generating it
        self.index, self.started = index, time.monotonic() + GENERATE_S
        os.write(self.cmd_w, f"{index}\n".encode())

    def read_line(self) -> dict | None:
        """The case's result once it is complete; None while it runs. The worker's "started" line
        (sent once the case is generated) restarts the watchdog's clock."""
        chunk = os.read(self.res_r, 1 << 16)
        if not chunk:
            raise EOFError
        self.buf += chunk
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            msg = json.loads(line)
            if "started" not in msg:
                return msg
            self.started = time.monotonic()
        return None

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.kill()
        self.proc.wait()
        for fd in (self.cmd_w, self.res_r):
            with contextlib.suppress(OSError):
                os.close(fd)


def run_all(seed: int, n: int, jobs: int, timeout: float, on_result) -> None:
    pending = list(range(n - 1, -1, -1))
    workers = [Worker(seed) for _ in range(min(jobs, n))]
    for w in workers:
        if pending:
            w.send(pending.pop())
    while any(w.index is not None for w in workers):
        busy = [w for w in workers if w.index is not None]
        now = time.monotonic()
        wait = max(0.01, min(w.started + timeout - now for w in busy))
        ready, _, _ = select.select([w.res_r for w in busy], [], [], wait)
        for i, w in enumerate(workers):
            if w.index is None:
                continue
            res = None
            if w.res_r in ready:
                try:
                    res = w.read_line()
                except EOFError:  # the worker died (e.g. a segfault or the memory limit)
                    res = {"index": w.index, "status": "crash", "time": time.monotonic() - w.started, "errors": []}
                    w.kill()
                    workers[i] = w = _replace(w, seed)
            elif time.monotonic() - w.started > timeout:
                res = {"index": w.index, "status": "hang", "time": timeout, "errors": []}
                w.kill()
                workers[i] = w = _replace(w, seed)
            if res is not None:
                on_result(res)
                w.index = None
                if pending:
                    w.send(pending.pop())
    for w in workers:
        w.kill()


def _replace(old: Worker, seed: int) -> Worker:
    return Worker(seed)


# ------------------------------------------------------------------------------------------
# Report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds after which a case is a hang (default 10)")
    p.add_argument("--slow", type=float, default=1.0, help="load time above which a case is counted slow (default 1 s)")
    p.add_argument("--save", metavar="DIR", help="write every failing case (and its overrides) to DIR")
    p.add_argument("--json", metavar="FILE", help="write the counts as JSON")
    p.add_argument("--replay", type=int, metavar="INDEX", help="run one case in this process and print the outcome")
    p.add_argument("--worker", nargs=3, type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(*args.worker)
        return 0
    if args.replay is not None:
        case = make_case(args.seed, args.replay)
        workdir = tempfile.mkdtemp(prefix="apdfuzz-")
        for name, text in _seeds().items():
            with open(os.path.join(workdir, name), "w", encoding="utf-8") as fh:
                fh.write(text)
        print(f"case {case.index}: {'+'.join(case.mutators)}; {len(case.main)} bytes, overrides {case.overrides!r}")
        print(json.dumps(run_case(case, workdir, cli=True), indent=2))
        shutil.rmtree(workdir, ignore_errors=True)
        return 0

    results: list[dict] = []
    t_start = time.monotonic()

    def on_result(res: dict) -> None:
        results.append(res)
        if len(results) % 1000 == 0:
            print(f"  {len(results)} / {args.cases} cases ({time.monotonic() - t_start:.0f} s)", file=sys.stderr, flush=True)

    run_all(args.seed, args.cases, args.jobs, args.timeout, on_result)
    wall = time.monotonic() - t_start
    results.sort(key=lambda r: r["index"])

    status = {}
    for r in results:
        status[r["status"]] = status.get(r["status"], 0) + 1
    other: dict[str, list[int]] = {}
    for r in results:
        for e in r["errors"]:
            other.setdefault(f"{e['stage']}: {e['type']} at {e['where']}", []).append(r["index"])
    by_type: dict[str, int] = {}
    for r in results:
        for e in r["errors"]:
            by_type[e["type"]] = by_type.get(e["type"], 0) + 1
    net = sum(1 for r in results if r.get("internal"))
    unlocated = sum(1 for r in results if r["status"] == "spec_error" and not r.get("located", True))
    times = [r["time"] for r in results if r["status"] in ("ok", "spec_error", "exception")]
    slow = [r for r in results if r["status"] in ("ok", "spec_error", "exception") and r["time"] > args.slow]
    slowest = max(results, key=lambda r: r["time"] if r["status"] != "hang" else -1, default=None)
    n_other = sum(len(v) for v in other.values())

    print(f"apdspec checker fuzz: {len(results)} cases, seed {args.seed}, {args.jobs} workers, "
          f"hang = over {args.timeout:g} s; {wall:.0f} s wall")
    print(f"  cases                {len(results)}")
    print(f"  SpecError            {status.get('spec_error', 0)}   (safety net: {net}; without file:line:col: {unlocated})")
    print(f"  ok                   {status.get('ok', 0)}")
    print(f"  other exceptions     {n_other}   (in {sum(1 for r in results if r['errors'])} cases; "
          f"{len(other)} distinct: stage, type, place)")
    for t, c in sorted(by_type.items(), key=lambda kv: -kv[1]):
        print(f"    {t:<22} {c}")
    for key, idx in sorted(other.items(), key=lambda kv: -len(kv[1])):
        print(f"      {len(idx):>5}  {key}  (e.g. case {idx[0]})")
    print(f"  hangs                {status.get('hang', 0)}")
    print(f"  worker crashes       {status.get('crash', 0)}")
    print(f"  slow (> {args.slow:g} s)         {len(slow)}")
    if times:
        print(f"  load time per case   max {max(times) * 1000:.0f} ms (case {slowest['index']}, "
              f"{'+'.join(slowest.get('mutators', []))}), median {statistics.median(times) * 1000:.1f} ms, "
              f"p99 {sorted(times)[int(0.99 * (len(times) - 1))] * 1000:.0f} ms")
        top = sorted((r for r in results if r["status"] in ("ok", "spec_error", "exception")), key=lambda r: -r["time"])[:5]
        print("  slowest cases        " + ", ".join(f"{r['index']} ({r['time'] * 1000:.0f} ms, "
                                                   f"{'+'.join(r.get('mutators', []))})" for r in top))
    def failing(r: dict) -> bool:  # anything but a located SpecError from the checker itself, or ok
        return (bool(r["errors"]) or r["status"] in ("hang", "crash") or bool(r.get("internal"))
                or (r["status"] == "spec_error" and not r.get("located", True)))

    muts: dict[str, list[int]] = {}
    for r in results:
        for m in set(r.get("mutators", [])):
            c = muts.setdefault(m, [0, 0])
            c[0] += 1
            c[1] += failing(r)
    print("  by mutator (cases / failing): " + ", ".join(f"{m} {c[0]}/{c[1]}" for m, c in sorted(muts.items())))
    for what, sel in (("hang/crash", lambda r: r["status"] in ("hang", "crash")),
                      ("unlocated or safety-net", lambda r: r.get("internal") or (r["status"] == "spec_error"
                                                                                  and not r.get("located", True)))):
        idx = [r["index"] for r in results if sel(r)]
        if idx:
            print(f"  {what} cases: {idx[:20]}{' ...' if len(idx) > 20 else ''}")

    if args.save:
        os.makedirs(args.save, exist_ok=True)
        for r in results:
            if failing(r):
                case = make_case(args.seed, r["index"])
                with open(os.path.join(args.save, f"case{r['index']:05d}.apd"), "wb") as fh:
                    fh.write(case.main)
                with open(os.path.join(args.save, f"case{r['index']:05d}.json"), "w") as fh:
                    json.dump({**r, "overrides": case.overrides, "extra": sorted(case.extra)}, fh, indent=1)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"cases": len(results), "status": status, "safety_net": net, "unlocated": unlocated,
                       "other": {k: len(v) for k, v in other.items()}, "slow": len(slow),
                       "max_time": max(times, default=0), "median_time": statistics.median(times) if times else 0,
                       "wall": wall}, fh, indent=1)
    failed = n_other or status.get("hang", 0) or status.get("crash", 0) or net
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
