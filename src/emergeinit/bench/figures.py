"""Drawing helpers for the study's figures: new figures, seed bands, error bars, saving.

A leaf of the bench wing: the generic plots (:mod:`.plots`) and every task's own figures use
it. Figures are built with matplotlib's object API (``matplotlib.figure.Figure``), never
``pyplot``: nothing chooses a backend or touches global state, so producing a report inside a
notebook leaves the notebook's own backend alone, and PNGs are rendered by Agg when saved.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import stats

__all__ = ["alpha_axis", "band", "color", "errorbars", "figure", "legend", "mean_ci", "save"]

Curve = tuple[Sequence[float], Sequence[float | None]]


def figure(ncols: int = 1, width: float = 5.0, height: float = 4.0) -> tuple[Any, list[Any]]:
    """A figure of ``ncols`` panels side by side, and the panels' axes."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height))
    axes = fig.subplots(1, ncols, squeeze=False)
    return fig, list(axes[0])


def save(fig: Any, path: Path) -> Path:
    """Lay out and write the figure as a PNG (110 dpi)."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def legend(*axes: Any, fontsize: float = 7) -> None:
    """A legend on the first of ``axes`` that has labelled artists (a panel can be empty, e.g.
    accuracy curves of runs that were never evaluated); none when no panel has any."""
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=fontsize)
            return


def color(index: int, palette: str = "tab10") -> Any:
    """The ``index``-th colour of a qualitative palette (cycling)."""
    from matplotlib import colormaps

    cmap = colormaps[palette]
    return cmap(index % cmap.N)


def band(ax: Any, curves: Sequence[Curve], label: str, colour: Any) -> None:
    """Mean over seeds with a min-max band. A seed that stopped early (diverged) leaves the
    later points to the seeds that went on, so its curve still shows where it broke."""
    by_step: dict[float, list[float]] = defaultdict(list)
    for steps, values in curves:
        for step, value in zip(steps, values, strict=True):
            if value is not None and math.isfinite(value):
                by_step[step].append(value)
    steps = sorted(by_step)
    if not steps:
        return
    mean = [float(np.mean(by_step[t])) for t in steps]
    ax.plot(steps, mean, label=f"{label} (n={len(curves)})", color=colour)
    if len(curves) > 1:
        low = [min(by_step[t]) for t in steps]
        high = [max(by_step[t]) for t in steps]
        ax.fill_between(steps, low, high, alpha=0.2, color=colour, lw=0)


def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its t-interval (0 for a single value)."""
    s = stats.summarize(values)
    return s.mean, (s.high - s.mean) if s.n > 1 else 0.0


def errorbars(
    ax: Any, line: list[dict[str, Any]], x: str, metric: str, label: str, colour: Any
) -> None:
    """Mean and confidence half-width of ``metric`` at each value of ``x`` along one line."""
    by_x: dict[Any, list[float]] = defaultdict(list)
    for r in line:
        if r[metric] is not None:
            by_x[r[x]].append(r[metric])
    xs = sorted(by_x)
    ys = [mean_ci(by_x[v]) for v in xs]
    ax.errorbar(
        xs, [y for y, _ in ys], yerr=[e for _, e in ys], marker="o", capsize=3, label=label,
        color=colour,
    )  # fmt: skip


def alpha_axis(ax: Any, values: list[float]) -> None:
    """Log scale only when alphas span a wide range; ticks at the alphas actually run."""
    if values and max(values) / min(values) > 4:
        ax.set_xscale("log")
    ax.set_xticks(values, [f"{v:g}" for v in values])
    ax.minorticks_off()
