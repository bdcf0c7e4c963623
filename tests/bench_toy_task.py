"""A third task, defined outside the package: which side of a hyperplane a point lies on.

Everything a task provides, in a few lines each: its own config table, its dataset, the data a
run needs, its training loop (on the shared skeleton, checkpointing through the template), its
metrics and its report section.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from emergeinit.bench.loop import LoopState, train_loop
from emergeinit.bench.optim import build_optimizer
from emergeinit.bench.runtime import generator
from emergeinit.bench.schema import Field
from emergeinit.bench.tasks import Prepared, RunContext, Task


class _Mean:
    def __init__(self) -> None:
        self.total, self.count = 0.0, 0

    def add(self, loss: torch.Tensor) -> bool:
        self.total, self.count = self.total + float(loss), self.count + 1
        return True

    def read(self) -> float:
        mean, self.total, self.count = self.total / self.count, 0.0, 0
        return mean


class ToyTask(Task):
    """Points in ``toy.dims`` dimensions, labelled by the side of a random hyperplane."""

    name = "toy"
    datasets = ("hyperplane",)
    plugins = frozenset({"init"})
    metrics = ("toy_acc", "toy_loss")
    columns = ("toy_acc", "toy_loss")
    report_metrics = ("toy_loss",)
    plot_metric = "toy_acc"

    def schema(self) -> dict[str, Any]:
        return {"toy": {"dims": Field("int", 4, low=1), "points": Field("int", 256, low=16)}}

    def data_table(self, cfg: dict[str, Any], dataset: str) -> dict[str, Any]:
        return {"dataset": dataset, "seed": cfg["data"]["seed"], **cfg["toy"]}

    def model_spec(self, cfg: dict[str, Any], dataset: str, template: str) -> str:
        return template.replace("{features}", str(cfg["toy"]["dims"])).replace("{classes}", "2")

    def prepare(
        self, run: dict[str, Any], device: torch.device, data_dir: Path | None,
        run_dir: Path | None,
    ) -> Prepared:  # fmt: skip
        table = run["data"]
        g = torch.Generator().manual_seed(table["seed"])
        x = torch.randn(table["points"], table["dims"], generator=g)
        y = (x @ torch.randn(table["dims"], generator=g) > 0).long()
        return Prepared(spec=run["model"], example=lambda: x[:8],
                        sample=lambda n: (x[:n], y[:n]), data=(x, y))  # fmt: skip

    def train(
        self, model: nn.Module, param_groups: list[dict[str, Any]] | None, prepared: Prepared,
        ctx: RunContext,
    ) -> tuple[dict[str, Any], dict[str, Any]]:  # fmt: skip
        x, y = prepared.data
        train = ctx.run["train"]
        optimizer = build_optimizer(param_groups or model.parameters(), train, train["lr"])
        order = generator(ctx.seed, "data-order")
        position, window = LoopState(), _Mean()
        if ctx.resume is not None:
            model.load_state_dict(ctx.resume["model"])
            optimizer.load_state_dict(ctx.resume["optimizer"])
            order.set_state(ctx.resume["generator"])
            position = LoopState(**ctx.resume["loop"])

        def state() -> dict[str, Any]:
            return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "generator": order.get_state(), "loop": vars(position).copy()}  # fmt: skip

        def step(perm: torch.Tensor, b: int) -> torch.Tensor:
            idx = perm[b * 32 : (b + 1) * 32]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            return loss.detach()

        save: Callable[[LoopState], None] | None = None
        if ctx.save is not None:
            saver = ctx.save
            save = lambda _: saver(state())  # noqa: E731
        result = train_loop(
            model, position, epochs=train["epochs"], per_epoch=len(y) // 32,
            draw_order=lambda: torch.randperm(len(y), generator=order), train_step=step,
            window=window, log_every=train["log_every"],
            on_log=lambda s, e, b, m: ctx.emit({"event": "train", "step": s, "loss": m}),
            on_progress=ctx.on_progress, checkpoint_every=train["checkpoint_every"],
            on_checkpoint=save,
        )  # fmt: skip
        with torch.no_grad():
            logits = model(x)
            acc = float((logits.argmax(1) == y).float().mean())
            loss = float(F.cross_entropy(logits, y))
        summary = {"status": "diverged" if result.diverged else "ok", "steps": result.steps,
                   "toy_acc": acc, "toy_loss": loss, "train_seconds": result.train_seconds}
        return summary, state()

    def report_section(
        self, cfg: dict[str, Any], rows: list[dict[str, Any]], run_dir: Callable[[str], Path]
    ) -> list[str]:
        return ["## The toy task", "", f"{len(rows)} runs on a {cfg['toy']['dims']}-d "
                "hyperplane.", ""]  # fmt: skip


TOY_STUDY: dict[str, Any] = {
    "study": {"name": "toy", "task": "toy"},
    "data": {"dataset": "hyperplane"},
    "model": {"spec": "mlp:{features}-8-{classes}"},
    "init": {"names": ["kaiming", "xavier", "bench_plugins:half_kaiming"]},
    "train": {"lr": 0.1, "epochs": 2, "seeds": [0, 1, 2], "log_every": 2, "checkpoint_every": 4},
    "measure": {"enabled": False},
    "stats": {"baseline": "kaiming", "primary": ["toy_acc"], "select_metric": "toy_acc"},
    "toy": {"dims": 3, "points": 128},
}
