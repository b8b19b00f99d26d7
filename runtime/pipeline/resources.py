"""Will a run fit in memory? The estimate of its peak, the machine's budget, and what would fit.

    est = estimate_memory(exp)             # exp: resolved (spec.check); nothing is allocated
    est.peak, est.peak_phase, est.describe()
    refusal = check_memory(exp, machine_budget())   # None: it fits
    refusal.drivers, refusal.fits          # the fields the peak grows with; the largest value of each that fits

The estimate adds up the parts each layer and slice states for its own arrays (engine/memory.py):
the kind's model (target parameters, target training), the method's engine (one decomposition
step), the method's analysis (evaluation) and the plots (report), per phase, plus the process
itself; the peak is the largest phase. It is a formula of the spec's fields, so the fields that
drive it are found by asking it: a field drives the peak by how much doubling it grows the peak
(an exponent: 1 for a linear factor), and the largest value that fits is found by bisection with
the other fields held. No field, kind or method is named here.

The budget is the memory the machine has available (MemAvailable in /proc/meminfo, or the free
pages `os.sysconf` reports, and a cgroup's limit where one is set), less HEADROOM for the rest of
the machine and the estimate's error; or an explicit limit (`apdspec check/run --max-memory 4G`, `limit_budget`).
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

from ..engine.memory import PHASES, Part
from ..engine.registry import engine_of, model_of
from ..spec import Experiment, architecture

PROCESS_BYTES = 120 * 2 ** 20  # the interpreter with NumPy, autograd, SciPy and matplotlib loaded (measured ~85 MiB)
HEADROOM = 0.9  # share of the available memory a run may plan to use
DRIVER_EXPONENT = 0.05  # a field whose doubling grows the peak by less than 2^0.05 (3.5 %) is not named
MAX_DRIVERS = 4


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    """The parts of a run's memory (engine/memory.py) and what they add up to per phase."""

    parts: tuple[Part, ...]

    def phase_bytes(self, phase: str) -> float:
        return PROCESS_BYTES + sum(p.bytes for p in self.parts if phase in p.phases)

    @property
    def peak_phase(self) -> str:
        return max(PHASES, key=self.phase_bytes)

    @property
    def peak(self) -> float:
        return self.phase_bytes(self.peak_phase)

    def peak_of(self, phases: tuple[str, ...]) -> float:
        return max(self.phase_bytes(p) for p in phases)

    def largest_parts(self, n: int = 3) -> list[Part]:
        """The largest parts of the peak phase."""
        phase = self.peak_phase
        return sorted((p for p in self.parts if phase in p.phases and p.bytes > 0), key=lambda p: -p.bytes)[:n]

    def describe(self) -> str:
        """E.g. '~1.11 TiB at its peak (decomposition: gradients and 2 Adam moments ... 837 GiB, ...)'."""
        parts = ", ".join(f"{p.what} {size_text(p.bytes)}" for p in self.largest_parts())
        return f"~{size_text(self.peak)} at its peak ({self.peak_phase}: {parts})"


def estimate_memory(exp: Experiment, arch: Any = None) -> MemoryEstimate:
    """The memory `apdspec run` needs for the resolved experiment `exp` (one run: a sweep point),
    from the parts every layer states; `arch`: the target's architecture if known (a file target's
    is read from its metadata otherwise)."""
    from ..analysis.core import ANALYSES
    from ..report.plots import memory_parts as plot_parts

    arch = architecture(exp) if arch is None else arch
    method = exp.decompose.method
    parts = (model_of(arch).memory_parts(exp, arch) + engine_of(method).memory_parts(exp, arch)
             + ANALYSES[method].memory_parts(exp, arch) + plot_parts(exp, arch))
    return MemoryEstimate(tuple(parts))


# ------------------------------------------------------------------------------------------
# The budget


@dataclasses.dataclass(frozen=True)
class Budget:
    """How much memory a run may use, and where that figure comes from (for messages)."""

    bytes: float
    source: str  # e.g. "--max-memory 4 GiB", "available on this machine (90% of MemAvailable 23.1 GiB)"


def _meminfo(path: str = "/proc/meminfo") -> dict[str, int]:
    out = {}
    try:
        with open(path) as f:
            for line in f:
                key, _, rest = line.partition(":")
                fields = rest.split()
                if fields and fields[0].isdigit():
                    out[key] = int(fields[0]) * (1024 if fields[1:2] == ["kB"] else 1)
    except OSError:
        pass
    return out


def _cgroup_free(root: str = "/sys/fs/cgroup") -> int | None:
    """Bytes left under this process's cgroup memory limit (v2 memory.max, v1 limit_in_bytes), if any."""
    for limit_name, usage_name in (("memory.max", "memory.current"),
                                   ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):
        limit_file, usage_file = os.path.join(root, limit_name), os.path.join(root, usage_name)
        try:
            with open(limit_file) as f:
                limit = f.read().strip()
            with open(usage_file) as f:
                usage = int(f.read().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 2 ** 60:  # "max" or a huge number: no limit
            return max(int(limit) - usage, 0)
    return None


def available_memory(meminfo: str = "/proc/meminfo", cgroup: str = "/sys/fs/cgroup") -> tuple[int, str] | None:
    """(bytes, where from) of the memory available to a new process now, or None if unknown."""
    info = _meminfo(meminfo)
    found: list[tuple[int, str]] = []
    if "MemAvailable" in info:
        found.append((info["MemAvailable"], "MemAvailable"))
    else:
        try:
            found.append((os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "free pages"))
        except (ValueError, OSError, AttributeError):
            pass
    left = _cgroup_free(cgroup)
    if left is not None:
        found.append((left, "what the cgroup's memory limit leaves"))
    return min(found) if found else None


def machine_budget() -> Budget | None:
    """HEADROOM of the memory available now (None if the system does not say)."""
    avail = available_memory()
    if avail is None:
        return None
    n, source = avail
    return Budget(HEADROOM * n, f"available on this machine ({HEADROOM:.0%} of {source} {size_text(n)})")


def limit_budget(limit: int) -> Budget:
    return Budget(float(limit), f"the --max-memory limit of {size_text(limit)}")


# ------------------------------------------------------------------------------------------
# What drives the peak, and what would fit


@dataclasses.dataclass(frozen=True)
class Driver:
    path: str  # runtime path, e.g. "decompose.components"
    value: int
    exponent: float  # log2(peak with the field doubled / peak): 1 for a linear factor


@dataclasses.dataclass(frozen=True)
class Refusal:
    """A run that does not fit: its estimate, the budget, the fields that drive the peak, and the
    largest value of each that fits with the others held (path, value; none when none does)."""

    estimate: MemoryEstimate
    budget: Budget
    drivers: tuple[Driver, ...]
    fits: tuple[tuple[str, int], ...]


def int_fields(obj: Any, prefix: str = "") -> list[tuple[str, int]]:
    """(dotted path, value) of every int field above 1 of the dataclass tree `obj` (no sweep)."""
    out = []
    for f in dataclasses.fields(obj):
        if not f.init or f.name == "sweep":
            continue
        v = getattr(obj, f.name)
        path = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(v):
            out += int_fields(v, path + ".")
        elif isinstance(v, int) and not isinstance(v, bool) and v > 1:  # 1 cannot be lowered
            out.append((path, v))
    return out


def _peak_with(exp: Experiment, arch: Any, path: str, value: int) -> float | None:
    """The peak with field `path` set to `value` (None if the estimate cannot be made for it)."""
    from .sweep import replace_path

    changed = replace_path(exp, path, value)
    try:
        return estimate_memory(changed, arch if not path.startswith("target.") else None).peak
    except (ArithmeticError, ValueError, TypeError, KeyError, IndexError):
        return None


def drivers(exp: Experiment, est: MemoryEstimate | None = None, arch: Any = None) -> list[Driver]:
    """The int fields above 1 the peak grows with, strongest first (at most MAX_DRIVERS)."""
    arch = architecture(exp) if arch is None else arch
    base = (est or estimate_memory(exp, arch)).peak
    found = []
    for path, v in int_fields(exp):
        doubled = _peak_with(exp, arch, path, 2 * v)
        if doubled is not None and doubled > base:
            e = math.log2(doubled / base)
            if e >= DRIVER_EXPONENT:
                found.append(Driver(path, v, e))
    # equal exponents (two linear factors): the larger value first, the likelier one to lower
    return sorted(found, key=lambda d: (-round(d.exponent, 1), -d.value))[:MAX_DRIVERS]


def largest_fitting(exp: Experiment, path: str, value: int, limit: float, arch: Any = None) -> int | None:
    """The largest value below `value` of field `path` at which the peak is within `limit`, the
    others held; None if not even 1 fits."""
    arch = architecture(exp) if arch is None and not path.startswith("target.") else arch
    fits = lambda v: (p := _peak_with(exp, arch, path, v)) is not None and p <= limit  # noqa: E731
    if not fits(1):
        return None
    lo, hi = 1, value  # fits(lo), not fits(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def check_memory(exp: Experiment, budget: Budget, est: MemoryEstimate | None = None) -> Refusal | None:
    """None if the run's estimated peak is within `budget`; else why not and what would fit."""
    arch = architecture(exp)
    est = est or estimate_memory(exp, arch)
    if est.peak <= budget.bytes:
        return None
    found = drivers(exp, est, arch)
    fits = []
    for d in found:
        v = largest_fitting(exp, d.path, d.value, budget.bytes, arch)
        if v is not None:
            fits.append((d.path, v))
    return Refusal(est, budget, tuple(found), tuple(fits))


def size_text(n: float) -> str:
    """Bytes in binary units, 3 significant digits: '38.2 KiB', '3.3 GiB', '1.11 TiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1000 or unit == "TiB":
            return f"{n:.3g} {unit}" if abs(n) < 999.5 else f"{n:,.0f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")  # pragma: no cover
