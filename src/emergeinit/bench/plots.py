"""Figures for the report (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # the backend must be chosen first
import numpy as np

from . import stats
from .config import EMERGENCE_INITS
from .study import FINISHED, StudyDir, typed_rows

Row = dict[str, Any]


def _label(row: Row) -> str:
    from .report import label

    return label(row)


def _events(study: StudyDir, rid: str) -> list[dict[str, Any]]:
    path = study.run_dir(rid) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _band(ax: Any, curves: list[tuple[list[float], list[float]]], label: str, color: Any) -> None:
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
    ax.plot(steps, mean, label=f"{label} (n={len(curves)})", color=color)
    if len(curves) > 1:
        low = [min(by_step[t]) for t in steps]
        high = [max(by_step[t]) for t in steps]
        ax.fill_between(steps, low, high, alpha=0.2, color=color, lw=0)


def _curves(study: StudyDir, rows: list[Row], folder: Path) -> list[Path]:
    written = []
    for i, (_, members) in enumerate(stats.group(rows, stats.SETTING).items()):
        fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
        for j, (_, config_rows) in enumerate(stats.group(members, stats.CONFIG).items()):
            losses, accs = [], []
            for r in config_rows:
                events = _events(study, r["run_id"])
                train = [(e["step"], e["loss"]) for e in events if e["event"] == "train"]
                ev = [(e["step"], e["test_acc"]) for e in events if e["event"] == "eval"]
                if train:
                    losses.append(([s for s, _ in train], [v for _, v in train]))
                if ev:
                    accs.append(([s for s, _ in ev], [v for _, v in ev]))
            color = plt.cm.tab10(j % 10)
            _band(ax_loss, losses, _label(config_rows[0]), color)
            _band(ax_acc, accs, _label(config_rows[0]), color)
        first = members[0]
        ax_loss.set(
            xlabel="step",
            ylabel="training loss",
            yscale="log",
            title=f"{first['dataset']} · {first['model']}",
        )
        ax_acc.set(xlabel="step", ylabel="test accuracy", title=f"lr={first['lr']:g} (seed band)")
        ax_acc.legend(fontsize=7)
        fig.tight_layout()
        path = folder / f"curves-{i + 1}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def _mean_ci(values: list[float]) -> tuple[float, float]:
    s = stats.summarize(values)
    return s.mean, (s.high - s.mean) if s.n > 1 else 0.0


def _errorbars(ax: Any, line: list[Row], x: str, metric: str, label: str, color: Any) -> None:
    """Mean and confidence half-width of ``metric`` at each value of ``x`` along one line."""
    by_x = defaultdict(list)
    for r in line:
        if r[metric] is not None:
            by_x[r[x]].append(r[metric])
    xs = sorted(by_x)
    ys = [_mean_ci(by_x[v]) for v in xs]
    ax.errorbar(
        xs,
        [y for y, _ in ys],
        yerr=[e for _, e in ys],
        marker="o",
        capsize=3,
        label=label,
        color=color,
    )


def _vs_alpha(rows: list[Row], folder: Path, metric: str) -> Path | None:
    emergence = [r for r in rows if r["init"] in EMERGENCE_INITS]
    if len({r["alpha"] for r in emergence}) < 2:
        return None
    settings = stats.group(rows, stats.SETTING)
    fig, axes = plt.subplots(1, len(settings), figsize=(5 * len(settings), 4), squeeze=False)
    for ax, (_, members) in zip(axes[0], settings.items(), strict=True):
        keys = ("init", "base", "pivot", "head")
        for j, (_, line) in enumerate(stats.group(
            [r for r in members if r["init"] in EMERGENCE_INITS], keys
        ).items()):  # fmt: skip
            name = _label(line[0] | {"alpha": math.nan}).replace(" α=nan", "")
            _errorbars(ax, line, "alpha", metric, name, plt.cm.tab10(j % 10))
        for k, (_, base) in enumerate(stats.group(
            [r for r in members if r["init"] not in EMERGENCE_INITS], ("init",)
        ).items()):  # fmt: skip
            mean, _ = _mean_ci([r[metric] for r in base if r[metric] is not None])
            ax.axhline(mean, ls="--", lw=1, color=plt.cm.Dark2(k % 8), label=base[0]["init"])
        first = members[0]
        alphas = sorted({r["alpha"] for r in members if r["alpha"] is not None})
        ax.set(xlabel="alpha", ylabel=metric, title=f"{first['model']} lr={first['lr']:g}")
        _alpha_axis(ax, alphas)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = folder / "accuracy-vs-alpha.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _alpha_axis(ax: Any, values: list[float]) -> None:
    """Log scale only when alphas span a wide range; ticks at the alphas actually run."""
    if values and max(values) / min(values) > 4:
        ax.set_xscale("log")
    ax.set_xticks(values, [f"{v:g}" for v in values])
    ax.minorticks_off()


def _vs_lr(rows: list[Row], folder: Path, metric: str) -> Path | None:
    if len({r["lr"] for r in rows}) < 2:
        return None
    panels = stats.group(rows, ("dataset", "model", "optimizer"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, (key, members) in zip(axes[0], panels.items(), strict=True):
        for j, (_, line) in enumerate(stats.group(members, stats.INIT_KEYS).items()):
            _errorbars(ax, line, "lr", metric, _label(line[0]), plt.cm.tab10(j % 10))
        lrs = sorted({r["lr"] for r in members})
        ax.set(xscale="log", xlabel="learning rate", ylabel=metric, title=f"{key[1]} ({key[2]})")
        ax.set_xticks(lrs, [f"{v:g}" for v in lrs])
        ax.minorticks_off()
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = folder / "accuracy-vs-lr.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _emergence(rows: list[Row], folder: Path, metric: str) -> Path | None:
    measured = [r for r in rows if r["log10_e_init"] is not None and r[metric] is not None]
    if not measured:
        return None
    fig, (ax_a, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    # Colour says the init, the marker the model, so series stay distinct past ten of them.
    inits = list(dict.fromkeys(r["init"] for r in measured))
    models = list(dict.fromkeys(r["model"] for r in measured))
    markers = "osD^vP*X<>"
    for (model, init), members in stats.group(measured, ("model", "init")).items():
        style = {
            "s": 14,
            "color": plt.cm.tab10(inits.index(init) % 10),
            "marker": markers[models.index(model) % len(markers)],
            "label": f"{init} · {model}",
        }
        alphas = [r["alpha"] if r["alpha"] is not None else 1.0 for r in members]
        ax_a.scatter(alphas, [r["log10_e_init"] for r in members], **style)
        ax_acc.scatter([r["log10_e_init"] for r in members], [r[metric] for r in members], **style)
    ax_a.set(xlabel="alpha (baselines at 1)", ylabel="log10 E at init")
    _alpha_axis(ax_a, sorted({r["alpha"] if r["alpha"] is not None else 1.0 for r in measured}))
    ax_acc.set(xlabel="log10 E at init", ylabel=metric)
    ax_acc.legend(fontsize=6)
    fig.tight_layout()
    path = folder / "emergence.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def make_plots(study: StudyDir) -> list[str]:
    """Write every figure the results support; return their paths relative to the study."""
    rows = [r for r in typed_rows(study.results_path) if r["status"] in FINISHED]
    if not rows:
        return []
    folder = study.path / "plots"
    folder.mkdir(exist_ok=True)
    if rows[0]["task"] == "translation":  # issue 5: BLEU, and validation-loss curves
        from .translation.plots import loss_curves

        metric = "bleu"
        paths = loss_curves(study, rows, folder)
    else:
        metric = "test_acc_final"
        paths = _curves(study, rows, folder)
    for make in (_vs_alpha, _vs_lr, _emergence):
        path = make(rows, folder, metric)
        if path is not None:
            paths.append(path)
    return [str(p.relative_to(study.path)) for p in paths]
