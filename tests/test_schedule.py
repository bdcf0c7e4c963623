"""The exponent schedule (docs/method.md, "The rule"): tables, parity, pivots, validation."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emergeinit import exponents
from emergeinit.errors import ConfigError
from emergeinit.schedule import check_alpha, scales

TABLE = {
    1: [0],
    2: [-1, 1],
    3: [-1, 0, 1],
    4: [-2, -1, 1, 2],
    5: [-2, -1, 0, 1, 2],
    6: [-3, -2, -1, 1, 2, 3],
    7: [-3, -2, -1, 0, 1, 2, 3],
    8: [-4, -3, -2, -1, 1, 2, 3, 4],
    9: [-4, -3, -2, -1, 0, 1, 2, 3, 4],
    10: [-5, -4, -3, -2, -1, 1, 2, 3, 4, 5],
    11: [-5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5],
    12: [-6, -5, -4, -3, -2, -1, 1, 2, 3, 4, 5, 6],
}


@pytest.mark.parametrize("num_units", sorted(TABLE))
def test_default_table(num_units: int) -> None:
    assert exponents(num_units) == [float(e) for e in TABLE[num_units]]


@pytest.mark.parametrize("num_units", range(1, 13))
def test_half_mode(num_units: int) -> None:
    got = exponents(num_units, even="half")
    if num_units % 2:  # a middle unit exists: "half" changes nothing
        assert got == exponents(num_units)
    else:
        n = num_units // 2
        assert got == [i - n + 0.5 for i in range(num_units)]


@pytest.mark.parametrize(
    ("num_units", "pivot", "expected"),
    [
        (5, 0.25, [-1, 0, 1, 2, 3]),
        (5, 0.75, [-3, -2, -1, 0, 1]),
        (9, 0.25, [-2, -1, 0, 1, 2, 3, 4, 5, 6]),
        (3, 0.25, [-1, 1, 2]),  # c = 0.5: half-way, no unit unchanged
        (6, 0.3, [-2, -1, 1, 2, 3, 4]),  # c = 1.5 (0.3 * 5 in binary is judged half-way)
        (4, 0.1, [0, 1, 2, 3]),  # c = 0.3 rounds to unit 0
        (4, 0.9, [-3, -2, -1, 0]),
        (12, 0.75, [-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3]),  # c = 8.25 -> unit 8
    ],
)
def test_pivots(num_units: int, pivot: float, expected: list[int]) -> None:
    assert exponents(num_units, pivot=pivot) == [float(e) for e in expected]


def test_half_mode_with_pivot() -> None:
    assert exponents(3, pivot=0.25, even="half") == [-0.5, 0.5, 1.5]


@given(st.integers(1, 200), st.sampled_from(["integer", "half"]))
def test_default_pivot_sums_to_zero_and_is_antisymmetric(num_units: int, even: str) -> None:
    e = exponents(num_units, even=even)  # type: ignore[arg-type]
    assert sum(e) == 0
    assert e == [-x for x in reversed(e)]
    assert all(b - a >= 1 for a, b in itertools.pairwise(e))


@given(st.integers(1, 60), st.floats(0.01, 0.99))
def test_any_pivot_has_unit_steps_and_turns_near_pivot(num_units: int, pivot: float) -> None:
    e = exponents(num_units, pivot=pivot)
    steps = [b - a for a, b in itertools.pairwise(e)]
    assert all(s in (1.0, 2.0) for s in steps)
    assert steps.count(2.0) <= 1  # only the half-way case skips 0
    turning = pivot * (num_units - 1)
    assert min(range(num_units), key=lambda i: abs(e[i])) in (
        math.floor(turning),
        math.ceil(turning),
    )


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "3", None])
def test_bad_num_units(bad: object) -> None:
    with pytest.raises(ConfigError, match="num_units"):
        exponents(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.2, 1.5, float("nan"), "0.5", True])
def test_bad_pivot(bad: object) -> None:
    with pytest.raises(ConfigError, match="pivot"):
        exponents(4, pivot=bad)  # type: ignore[arg-type]


def test_bad_even() -> None:
    with pytest.raises(ConfigError, match="even"):
        exponents(4, even="odd")  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "2", True, 1 + 1j, None])
def test_bad_alpha(bad: object) -> None:
    with pytest.raises(ConfigError, match="alpha"):
        check_alpha(bad)


def test_scales() -> None:
    assert scales([-2.0, -1.0, 0.0, 1.0, 2.0], 2) == [0.25, 0.5, 1.0, 2.0, 4.0]
