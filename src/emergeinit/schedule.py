"""The exponent schedule of the emergence-promoting rule (docs/method.md, "The rule"). No torch.

Unit ``i`` of ``L`` depth units has its weight multiplied by ``alpha ** e_i``; the paper writes
this as ``W~_{-n} = W / alpha^n`` before the middle and ``W~_n = W * alpha^n`` after it.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Literal, get_args

from .errors import ConfigError

EvenMode = Literal["integer", "half"]

# Pivots are floats, so ``pivot * (L - 1)`` is rarely exactly half-way in binary (0.3 * 5).
# A turning point within this distance of half-way is treated as half-way, as a user means it.
_HALFWAY_TOLERANCE = 1e-9


def check_alpha(alpha: object) -> float:
    """Return ``alpha`` as a float, or raise :class:`ConfigError` unless it is a finite real > 0."""
    if isinstance(alpha, bool) or not isinstance(alpha, Real):
        raise ConfigError(
            f"alpha must be a real number > 0, got {alpha!r} of type {type(alpha).__name__}; "
            "pass e.g. alpha=1.5 (alpha=1 reproduces the base init)."
        )
    value = float(alpha)
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(
            f"alpha must be a finite real number > 0, got {alpha!r}; "
            "alpha=1 reproduces the base init, alpha > 1 promotes emergence."
        )
    return value


def check_pivot(pivot: object) -> float:
    """Return ``pivot`` as a float, or raise :class:`ConfigError` unless it lies in (0, 1)."""
    if isinstance(pivot, bool) or not isinstance(pivot, Real):
        raise ConfigError(f"pivot must be a real number in (0, 1), got {pivot!r}.")
    value = float(pivot)
    if not (0.0 < value < 1.0):
        raise ConfigError(
            f"pivot must lie strictly between 0 and 1 (0.5 = the middle unit), got {pivot!r}."
        )
    return value


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    """Raise :class:`ConfigError` naming the allowed values unless ``value`` is one of them."""
    if not isinstance(value, str) or value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise ConfigError(f"{name} must be one of {allowed}; got {value!r}.")
    return value


def exponents(num_units: int, *, pivot: float = 0.5, even: EvenMode = "integer") -> list[float]:
    r"""The exponent ``e_i`` of each of ``num_units`` depth units, in depth order.

    With ``c = pivot * (L - 1)``:

    * when ``c`` is not half-way between two units, ``e_i = i - floor(c + 0.5)``;
      at the default pivot and odd ``L = 2N + 1`` this is ``-N, ..., -1, 0, 1, ..., N``
      (the middle unit is unchanged);
    * when ``c`` is half-way (every even ``L = 2N`` at the default pivot), no unit is unchanged:
      ``even="integer"`` gives ``-N, ..., -1, 1, ..., N`` and ``even="half"`` gives
      ``i - c``, i.e. ``-N + 1/2, ..., N - 1/2``.

    At the default pivot the exponents sum to zero. Half-way is judged to within 1e-9.

    Args:
        num_units: number of depth units ``L >= 1``.
        pivot: turning point as a fraction of the depth, in (0, 1); 0.5 is the middle.
        even: what to do when the turning point falls between two units.

    Example:
        >>> exponents(5)
        [-2.0, -1.0, 0.0, 1.0, 2.0]
        >>> exponents(4)
        [-2.0, -1.0, 1.0, 2.0]
        >>> exponents(4, even="half")
        [-1.5, -0.5, 0.5, 1.5]
        >>> exponents(5, pivot=0.25)
        [-1.0, 0.0, 1.0, 2.0, 3.0]
    """
    if isinstance(num_units, bool) or not isinstance(num_units, int) or num_units < 1:
        raise ConfigError(f"num_units must be an integer >= 1, got {num_units!r}.")
    pivot = check_pivot(pivot)
    check_choice("even", even, get_args(EvenMode))

    centre = pivot * (num_units - 1)
    lower = math.floor(centre)
    if abs(centre - lower - 0.5) > _HALFWAY_TOLERANCE:
        middle = math.floor(centre + 0.5)
        return [float(i - middle) for i in range(num_units)]
    if even == "half":
        halfway = lower + 0.5
        return [i - halfway for i in range(num_units)]
    return [float(i - lower - 1) if i <= lower else float(i - lower) for i in range(num_units)]


def scales(unit_exponents: list[float], alpha: float) -> list[float]:
    """``alpha ** e`` for each exponent, as Python floats (float64)."""
    alpha = check_alpha(alpha)
    return [alpha**e for e in unit_exponents]


__all__ = ["EvenMode", "check_alpha", "check_choice", "check_pivot", "exponents", "scales"]
