"""Figures for the report: the task's own (e.g. training curves), then accuracy vs alpha,
accuracy vs learning rate, and log10 E at init vs alpha and vs the metric.

Built with matplotlib's object API through :mod:`.figures` (no pyplot, no backend chosen, no
global state touched). The report calls :func:`make_plots`; nothing here imports the report.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any

from . import figures, stats, tasks
from .labels import EMERGENCE_INITS, label
from .store import FINISHED
from .study import StudyDir

Row = dict[str, Any]

__all__ = ["make_plots"]


def _vs_alpha(rows: list[Row], folder: Path, metric: str) -> Path | None:
    emergence = [r for r in rows if r["init"] in EMERGENCE_INITS]
    if len({r["alpha"] for r in emergence}) < 2:
        return None
    settings = stats.group(rows, stats.SETTING)
    fig, axes = figures.figure(len(settings))
    for ax, (_, members) in zip(axes, settings.items(), strict=True):
        keys = stats.BUT_ALPHA
        for j, (_, line) in enumerate(stats.group(
            [r for r in members if r["init"] in EMERGENCE_INITS], keys
        ).items()):  # fmt: skip
            name = label(line[0] | {"alpha": math.nan}).replace(" α=nan", "")
            figures.errorbars(ax, line, "alpha", metric, name, figures.color(j))
        for k, (_, base) in enumerate(stats.group(
            [r for r in members if r["init"] not in EMERGENCE_INITS], ("init",)
        ).items()):  # fmt: skip
            mean, _ = figures.mean_ci([r[metric] for r in base if r[metric] is not None])
            ax.axhline(
                mean, ls="--", lw=1, color=figures.color(k, "Dark2"), label=base[0]["init"]
            )
        first = members[0]
        alphas = sorted({r["alpha"] for r in members if r["alpha"] is not None})
        ax.set(xlabel="alpha", ylabel=metric, title=f"{first['model']} lr={first['lr']:g}")
        figures.alpha_axis(ax, alphas)
        figures.legend(ax)
    return figures.save(fig, folder / "accuracy-vs-alpha.png")


def _vs_lr(rows: list[Row], folder: Path, metric: str) -> Path | None:
    if len({r["lr"] for r in rows}) < 2:
        return None
    panels = stats.group(rows, ("dataset", "model", "optimizer"))
    fig, axes = figures.figure(len(panels))
    for ax, (key, members) in zip(axes, panels.items(), strict=True):
        for j, (_, line) in enumerate(stats.group(members, stats.INIT_KEYS).items()):
            figures.errorbars(ax, line, "lr", metric, label(line[0]), figures.color(j))
        lrs = sorted({r["lr"] for r in members})
        ax.set(xscale="log", xlabel="learning rate", ylabel=metric, title=f"{key[1]} ({key[2]})")
        ax.set_xticks(lrs, [f"{v:g}" for v in lrs])
        ax.minorticks_off()
        figures.legend(ax)
    return figures.save(fig, folder / "accuracy-vs-lr.png")


def _emergence(rows: list[Row], folder: Path, metric: str) -> Path | None:
    measured = [
        r for r in rows if r.get("log10_e_init") is not None and r.get(metric) is not None
    ]
    if not measured:
        return None
    fig, (ax_a, ax_acc) = figures.figure(2, width=5.5)
    # Colour says the init, the marker the model, so series stay distinct past ten of them.
    inits = list(dict.fromkeys(r["init"] for r in measured))
    models = list(dict.fromkeys(r["model"] for r in measured))
    markers = "osD^vP*X<>"
    for (model, init), members in stats.group(measured, ("model", "init")).items():
        style = {
            "s": 14,
            "color": figures.color(inits.index(init)),
            "marker": markers[models.index(model) % len(markers)],
            "label": f"{init} · {model}",
        }
        alphas = [r["alpha"] if r["alpha"] is not None else 1.0 for r in members]
        ax_a.scatter(alphas, [r["log10_e_init"] for r in members], **style)
        ax_acc.scatter([r["log10_e_init"] for r in members], [r[metric] for r in members], **style)
    ax_a.set(xlabel="alpha (baselines at 1)", ylabel="log10 E at init")
    figures.alpha_axis(
        ax_a, sorted({r["alpha"] if r["alpha"] is not None else 1.0 for r in measured})
    )
    ax_acc.set(xlabel="log10 E at init", ylabel=metric)
    figures.legend(ax_acc, fontsize=6)
    return figures.save(fig, folder / "emergence.png")


def make_plots(study: StudyDir, rows: list[Row] | None = None) -> list[str]:
    """Write every figure the results support; return their paths relative to the study.

    ``rows``: results.csv's rows as loaded (default: :meth:`.study.StudyDir.results`). The
    ``plots/`` folder belongs to the report: a figure of an earlier report that these rows no
    longer support (all of them, when no run has finished) is removed.
    """
    if rows is None:
        rows = study.results(study.load_config()).rows
    rows = [r for r in rows if r["status"] in FINISHED]
    folder = study.path / "plots"
    paths: list[Path] = []
    if rows:
        folder.mkdir(exist_ok=True)
        task = tasks.get(rows[0]["task"])
        paths = task.plots(rows, study.run_dir, folder)
        metric = task.plot_metric
        if metric:
            for make in (_vs_alpha, _vs_lr, _emergence):
                path = make(rows, folder, metric)
                if path is not None:
                    paths.append(path)
    _remove_stale(folder, paths)
    return [str(p.relative_to(study.path)) for p in paths]


def _remove_stale(folder: Path, kept: list[Path]) -> None:
    """Remove the figures in ``folder`` this report did not write (and the folder, if empty)."""
    if not folder.is_dir():
        return
    keep = {p.resolve() for p in kept}
    for old in folder.glob("*.png"):
        if old.resolve() not in keep:
            old.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # not empty: a file of the user's own
        folder.rmdir()
