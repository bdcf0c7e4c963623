"""Loss curves of a translation study: training loss per step, validation loss per epoch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt

from .. import stats
from ..plots import _band, _events, _label
from ..study import StudyDir

Row = dict[str, Any]


def loss_curves(study: StudyDir, rows: list[Row], folder: Path) -> list[Path]:
    """One figure per setting (corpus, model, lr): mean over seeds with a min-max band."""
    written = []
    for i, (_, members) in enumerate(stats.group(rows, stats.SETTING).items()):
        fig, (ax_train, ax_valid) = plt.subplots(1, 2, figsize=(11, 4))
        for j, (_, config_rows) in enumerate(stats.group(members, stats.CONFIG).items()):
            train, valid = [], []
            for r in config_rows:
                events = _events(study, r["run_id"])
                points = [(e["step"], e["loss"]) for e in events if e["event"] == "train"]
                epochs = [(e["epoch"], e["val_loss"]) for e in events if e["event"] == "valid"]
                if points:
                    train.append(([s for s, _ in points], [v for _, v in points]))
                if epochs:
                    valid.append(([s for s, _ in epochs], [v for _, v in epochs]))
            color = plt.cm.tab10(j % 10)
            _band(ax_train, train, _label(config_rows[0]), color)
            _band(ax_valid, valid, _label(config_rows[0]), color)
        first = members[0]
        ax_train.set(xlabel="step", ylabel="training loss (label-smoothed, per token)",
                     yscale="log", title=f"{first['dataset']} · {first['model']}")
        ax_valid.set(xlabel="epoch", ylabel="validation loss (nats per token)", yscale="log",
                     title=f"lr={first['lr']:g} (seed band)")
        ax_valid.legend(fontsize=7)
        fig.tight_layout()
        path = folder / f"loss-curves-{i + 1}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


__all__ = ["loss_curves"]
