"""The papers' reference results per experiment, keyed by `report.paper`: each method's slice
registers its paper's (APD: Braun et al. 2025; SPD, under "spd_*": Bushnaq, Braun & Sharkey 2025).

Numbers are Table 1; everything else is the paper's qualitative result, turned into a metric
comparison where one exists. The operational thresholds (e.g. "scrubbed << anti-scrubbed" read as
scrub_ratio >= 10) are ours, not the paper's, and are labelled as such in the report.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass

_OPS = {">=": operator.ge, "<=": operator.le, "==": operator.eq, "~": None}


@dataclass(frozen=True)
class PaperValue:
    """One comparable result: `metric` `op` `value` (op "~": within `tolerance`)."""

    metric: str
    value: float
    op: str = "~"
    std: float | None = None  # the paper's +- (Table 1: std over features of one run, notes §11.3 #19)
    tolerance: float = 0.0
    text: str = ""  # how the paper states it, with its source

    def agrees(self, observed: float | None) -> bool | None:
        """Whether a value agrees with the paper (None when there is no value; inf compares)."""
        if observed is None or math.isnan(observed):
            return None
        if self.op == "~":
            return abs(observed - self.value) <= self.tolerance
        return bool(_OPS[self.op](observed, self.value))

    def shown(self) -> str:
        if self.op == "~":
            pm = f" +- {self.std:.3f}" if self.std is not None else ""
            return f"{self.value:g}{pm}"
        return f"{self.op} {self.value:g}"


@dataclass(frozen=True)
class PaperResult:
    key: str
    title: str
    source: str  # sections / figures / tables
    values: tuple[PaperValue, ...] = ()
    claims: tuple[str, ...] = ()  # qualitative results to compare with the plots
    setup_notes: tuple[str, ...] = ()  # where the paper's run differs from its text / the reference config

    def value(self, metric: str) -> PaperValue | None:
        return next((v for v in self.values if v.metric == metric), None)


# key -> result; each method's slice registers its paper's (runtime/methods/<method>/paper.py)
PAPER: dict[str, PaperResult] = {}


def lookup(key: str | None) -> PaperResult | None:
    return PAPER.get(key) if key else None
