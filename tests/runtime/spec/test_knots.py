"""Piecewise coefficient schedules (runtime/spec/knots.py) at their knots and between."""
import math

import pytest

from runtime.spec.knots import (Knots as Schedule, constant, cosine, linear, progress, value_at,
                                warmup_then_constant)


def test_linear_segments_at_knots_and_between():
    s = Schedule(((0.0, 0.0), (0.5, 2.0), (1.0, 1.0)))
    assert [s.at(t) for t in (0.0, 0.5, 1.0)] == [0.0, 2.0, 1.0]
    assert s.at(0.25) == pytest.approx(1.0) and s.at(0.75) == pytest.approx(1.5)


def test_cosine_segment():
    s = cosine(1.0, 0.1)  # the main lr multiplier
    assert s.at(0.0) == 1.0 and s.at(1.0) == pytest.approx(0.1)
    assert s.at(0.5) == pytest.approx(0.55)
    assert s.at(0.25) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)))


def test_hold_jumps_at_its_end_knot():
    s = Schedule(((0.0, 3.0), (0.4, 5.0), (1.0, 5.0)), ("hold", "linear"))
    assert s.at(0.0) == 3.0 and s.at(0.39999) == 3.0
    assert s.at(0.4) == 5.0 and s.at(0.7) == 5.0


def test_outside_the_knots():
    s = Schedule(((0.2, 1.0), (0.6, 3.0)))
    assert s.at(0.0) == 1.0 and s.at(0.1) == 1.0  # first value before the first knot
    assert s.at(0.9) == 3.0  # last value after the last knot
    assert s.at(-1.0) == 1.0 and s.at(7.0) == 3.0  # t clamped to [0, 1]


def test_constant_and_floats():
    assert constant(0.3).at(0.77) == 0.3
    assert value_at(0.25, 10, 100) == 0.25
    assert value_at(linear(0.0, 1.0), 25, 101) == pytest.approx(0.25)


def test_progress_ends_on_the_last_update():
    assert progress(0, 11) == 0.0 and progress(5, 11) == 0.5 and progress(10, 11) == 1.0
    assert progress(11, 11) == 1.0  # the one-past-the-end log step
    assert progress(0, 1) == 0.0 and progress(1, 1) == 1.0


def test_source_lr_warmup():
    s, steps = warmup_then_constant(0.01, 0.025), 401  # warmup ends at step 10
    assert value_at(s, 0, steps) == 0.0
    assert value_at(s, 5, steps) == pytest.approx(0.005)
    assert value_at(s, 10, steps) == pytest.approx(0.01) and value_at(s, 300, steps) == pytest.approx(0.01)
    assert warmup_then_constant(0.01, 0.0).at(0.0) == 0.01


@pytest.mark.parametrize("knots, interp", [
    ((), ()),
    (((0.0, 1.0), (1.0, 2.0)), ("linear", "linear")),  # one interpolation too many
    (((0.0, 1.0), (1.0, 2.0)), ("spline",)),
    (((0.5, 1.0), (0.2, 2.0)), ("linear",)),  # decreasing
    (((0.0, 1.0), (1.5, 2.0)), ("linear",)),  # outside [0, 1]
])
def test_invalid(knots, interp):
    with pytest.raises(ValueError):
        Schedule(knots, interp)
