"""Loss curves of a translation study: training loss per step, validation loss per epoch."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ... import figures, stats
from ...checkpoint import read_events
from ...labels import label

Row = dict[str, Any]


def loss_curves(rows: list[Row], run_dir: Callable[[str], Path], folder: Path) -> list[Path]:
    """One figure per setting (corpus, model, lr): mean over seeds with a min-max band."""
    written = []
    for i, (_, members) in enumerate(stats.group(rows, stats.SETTING).items()):
        fig, (ax_train, ax_valid) = figures.figure(2, width=5.5)
        for j, (_, config_rows) in enumerate(stats.group(members, stats.CONFIG).items()):
            train, valid = [], []
            for r in config_rows:
                events = read_events(run_dir(r["run_id"]))
                points = [(e["step"], e["loss"]) for e in events if e["event"] == "train"]
                epochs = [(e["epoch"], e["val_loss"]) for e in events if e["event"] == "valid"]
                if points:
                    train.append(([s for s, _ in points], [v for _, v in points]))
                if epochs:
                    valid.append(([s for s, _ in epochs], [v for _, v in epochs]))
            colour = figures.color(j)
            figures.band(ax_train, train, label(config_rows[0]), colour)
            figures.band(ax_valid, valid, label(config_rows[0]), colour)
        first = members[0]
        ax_train.set(xlabel="step", ylabel="training loss (label-smoothed, per token)",
                     yscale="log", title=f"{first['dataset']} · {first['model']}")
        ax_valid.set(xlabel="epoch", ylabel="validation loss (nats per token)", yscale="log",
                     title=f"lr={first['lr']:g} (seed band)")
        figures.legend(ax_valid, ax_train)
        written.append(figures.save(fig, folder / f"loss-curves-{i + 1}.png"))
    return written


__all__ = ["loss_curves"]
