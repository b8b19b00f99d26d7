"""A one-line progress display for long runs: step, steps/s, ETA and current losses.

Rewrites one stderr line at most every `interval` seconds when stderr is a terminal; stays quiet
otherwise (logs and CI get metrics.jsonl instead). APDSPEC_PROGRESS=1 forces it on, 0 off.
"""
from __future__ import annotations

import os
import sys
import time


def _fmt_time(s: float) -> str:
    s = int(max(s, 0))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m:02d}:{sec:02d}"


class ProgressLine:
    def __init__(self, stream=None, interval: float = 0.5, enabled: bool | None = None):
        self.stream = stream or sys.stderr
        env = os.environ.get("APDSPEC_PROGRESS")
        if enabled is None:
            enabled = env == "1" if env in ("0", "1") else self.stream.isatty()
        self.enabled = enabled
        self.interval = interval
        self.t0 = time.perf_counter()
        self.last = 0.0
        self.width = 0

    def __call__(self, step: int, steps: int, entry: dict) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self.last < self.interval and step < steps:
            return
        self.last = now
        rate = step / max(now - self.t0, 1e-9)
        eta = (steps - step) / rate if rate > 0 else 0.0
        losses = " ".join(f"{k}={v:.3g}" for k, v in entry.items()
                          if k not in ("step", "lr") and isinstance(v, float))
        line = f"step {step}/{steps}  {rate:.1f} steps/s  ETA {_fmt_time(eta)}  {losses}"
        self.stream.write("\r" + line.ljust(self.width))
        self.width = len(line)
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.width:
            self.stream.write("\n")
            self.stream.flush()
