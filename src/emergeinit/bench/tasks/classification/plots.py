"""Training curves of a classification study: training loss and test accuracy per step."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ... import figures, stats
from ...checkpoint import read_events
from ...labels import label

Row = dict[str, Any]


def curves(rows: list[Row], run_dir: Callable[[str], Path], folder: Path) -> list[Path]:
    """One figure per setting: each configuration's mean over seeds with a min-max band."""
    written = []
    for i, (_, members) in enumerate(stats.group(rows, stats.SETTING).items()):
        fig, (ax_loss, ax_acc) = figures.figure(2, width=5.5)
        for j, (_, config_rows) in enumerate(stats.group(members, stats.CONFIG).items()):
            losses, accs = [], []
            for r in config_rows:
                events = read_events(run_dir(r["run_id"]))
                train = [(e["step"], e["loss"]) for e in events if e["event"] == "train"]
                ev = [(e["step"], e["test_acc"]) for e in events if e["event"] == "eval"]
                if train:
                    losses.append(([s for s, _ in train], [v for _, v in train]))
                if ev:
                    accs.append(([s for s, _ in ev], [v for _, v in ev]))
            colour = figures.color(j)
            figures.band(ax_loss, losses, label(config_rows[0]), colour)
            figures.band(ax_acc, accs, label(config_rows[0]), colour)
        first = members[0]
        ax_loss.set(
            xlabel="step",
            ylabel="training loss",
            yscale="log",
            title=f"{first['dataset']} · {first['model']}",
        )
        ax_acc.set(xlabel="step", ylabel="test accuracy", title=f"lr={first['lr']:g} (seed band)")
        figures.legend(ax_acc, ax_loss)
        written.append(figures.save(fig, folder / f"curves-{i + 1}.png"))
    return written


__all__ = ["curves"]
