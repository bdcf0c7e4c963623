"""Markdown cells and tables for ``report.md``, shared by the report and every task's section.

A leaf of the bench wing (it imports nothing from it): numbers are printed one way everywhere.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

__all__ = ["num", "pvalue", "summary", "table"]


class _Interval(Protocol):
    @property
    def n(self) -> int: ...
    @property
    def mean(self) -> float: ...
    @property
    def std(self) -> float: ...
    @property
    def low(self) -> float: ...
    @property
    def high(self) -> float: ...


def num(x: Any, digits: int = 4) -> str:
    """A number with ``digits`` decimals; ``–`` for a missing value or NaN.

    >>> num(0.123456), num(None), num(float("inf"))
    ('0.1235', '–', '∞')
    """
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, float) and math.isinf(x):
        return "∞" if x > 0 else "-∞"
    return f"{x:.{digits}f}"


def pvalue(p: float) -> str:
    """A p-value: four decimals, ``<0.0001`` below that, ``–`` for NaN."""
    if math.isnan(p):
        return "–"
    return "<0.0001" if p < 1e-4 else f"{p:.4f}"


def summary(s: _Interval, digits: int = 4) -> str:
    """``mean ± std [low, high]`` of a summary over seeds; never a bare single-seed number."""
    if s.n == 0:
        return "–"
    if s.n == 1:
        return f"{num(s.mean, digits)} (n=1, no interval)"
    interval = f"[{num(s.low, digits)}, {num(s.high, digits)}]"
    return f"{num(s.mean, digits)} ± {num(s.std, digits)} {interval}"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table as lines, with a blank line after it."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return [*lines, ""]
