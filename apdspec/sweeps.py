"""Values of the generated sweep axes: seeds(n), range(start, stop[, step]), logspace(low, high, n)."""
from __future__ import annotations

import math

from . import ast as A
from .limits import MAX_SWEEP_POINTS as MAX
from .values import Bad, Env, Int, number


def generated(node: A.Call, args: list[A.Value], env: Env) -> list:
    """Values of seeds(n), range(start, stop[, step]) and logspace(low, high, n)."""
    nums = [_num(a, env) for a in args]
    name = node.name
    if name == "seeds":
        if len(nums) != 1:
            raise Bad(node.span, "write seeds(n) for the seeds 0 .. n-1")
        n = Int().coerce(args[0], env)
        if not 1 <= n <= MAX:
            raise Bad(args[0].span, f"seeds(n) needs 1 <= n <= {MAX}, got {n}")
        return list(range(n))
    if name == "range":
        if len(nums) not in (2, 3):
            raise Bad(node.span, "write range(start, stop) or range(start, stop, step); stop is excluded")
        start, stop = nums[0], nums[1]
        step = nums[2] if len(nums) == 3 else 1
        if step == 0:
            raise Bad(args[2].span, "range step must not be 0")
        try:
            steps = (stop - start) / step
        except OverflowError:
            steps = math.inf
        if not math.isfinite(steps) or steps > MAX:  # before ceil(), which cannot take inf
            raise Bad(node.span, f"range(...) has more than {MAX} values")
        count = math.ceil(steps)
        if count < 1:
            raise Bad(node.span, f"range({', '.join(f'{x:g}' for x in nums)}) is empty")
        ints = all(isinstance(x, int) for x in (start, stop, step))
        return _finite(node, [start + i * step if ints else float(f"{start + i * step:.12g}") for i in range(count)])
    # logspace
    if len(nums) != 3:
        raise Bad(node.span, "write logspace(low, high, n): n values from low to high, evenly spaced in log")
    try:
        lo, hi = float(nums[0]), float(nums[1])
    except OverflowError:
        raise Bad(node.span, "number is too large") from None
    n = Int().coerce(args[2], env)
    if lo <= 0 or hi <= 0:
        raise Bad(node.span, "logspace(low, high, n) needs low > 0 and high > 0")
    if not 2 <= n <= MAX:
        raise Bad(args[2].span, f"logspace needs 2 <= n <= {MAX}, got {n}")
    try:
        return _finite(node, [float(f"{lo * (hi / lo) ** (i / (n - 1)):.12g}") for i in range(n)])
    except OverflowError:
        raise Bad(node.span, "logspace(...) values are too large") from None


def _finite(node: A.Call, values: list) -> list:
    if not all(math.isfinite(v) for v in values):
        raise Bad(node.span, f"{node.name}(...) values are too large")
    return values


def _num(node: A.Value, env: Env) -> int | float:
    try:
        return number(node, env)
    except Bad as e:
        raise Bad(e.span, e.message.replace("{key}", "sweep"), e.hint) from None
