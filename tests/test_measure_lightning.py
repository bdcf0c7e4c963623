"""EmergenceCallback with the real Lightning package: a tiny CNN trained a few steps.

Importing Lightning takes seconds, so the whole module is in the slow lane and imports it only
when its tests run (not when the fast lane collects them).
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn

from emergeinit.measure import measure_emergence

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread_per_module")]


@pytest.fixture(scope="module")
def lit() -> SimpleNamespace:
    """lightning.pytorch (``Trainer``), a tiny CNN module and the callback."""
    pl = pytest.importorskip("lightning.pytorch")
    from emergeinit.integrations.lightning import EmergenceCallback

    return SimpleNamespace(
        Trainer=pl.Trainer, TinyCNN=tiny_cnn_class(pl), EmergenceCallback=EmergenceCallback
    )


def tiny_cnn_class(pl: Any) -> type:
    class TinyCNN(pl.LightningModule):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(
                nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                nn.Flatten(), nn.Linear(4 * 4 * 4, 3),
            )  # fmt: skip

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

        def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
            x, y = batch
            return nn.functional.cross_entropy(self(x), y)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.5)

    return TinyCNN


def loader() -> torch.utils.data.DataLoader[tuple[torch.Tensor, ...]]:
    gen = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(
        torch.randn(64, 1, 8, 8, generator=gen), torch.randint(0, 3, (64,), generator=gen)
    )
    return torch.utils.data.DataLoader(data, batch_size=8)


def trainer(lit: SimpleNamespace, root: Path, steps: int, callback: Any) -> Any:
    return lit.Trainer(
        max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=root, callbacks=[callback],
        enable_checkpointing=False,
    )  # fmt: skip


def test_callback_records_logs_and_resumes_from_a_checkpoint(
    lit: SimpleNamespace, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    model = lit.TinyCNN()
    initial = copy.deepcopy(model)
    probe = torch.randn(16, 1, 8, 8)
    callback = lit.EmergenceCallback(probe, every=2, module="net")
    run = trainer(lit, tmp_path, 5, callback)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's advice on workers and logging intervals
        run.fit(model, loader())
    assert [r["step"] for r in callback.history] == [0, 2, 4]
    # step 0 is measured before the first optimizer step: the initial model, in training mode
    expected = measure_emergence(initial.net.train(), probe)
    assert callback.history[0]["log10_e_mean"] == pytest.approx(expected.log10_e_mean, abs=1e-9)
    assert callback.history[2]["log10_e_mean"] != callback.history[0]["log10_e_mean"]
    assert "emergence/log10_e_mean" in run.callback_metrics

    path = tmp_path / "step5.ckpt"
    run.save_checkpoint(path)
    resumed = lit.EmergenceCallback(probe, every=2, module="net")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer(lit, tmp_path, 9, resumed).fit(lit.TinyCNN(), loader(), ckpt_path=path)
    assert [r["step"] for r in resumed.history] == [0, 2, 4, 6, 8]
    assert resumed.history[:3] == callback.history


def test_callback_options_are_checked(lit: SimpleNamespace) -> None:
    from emergeinit.errors import ConfigError

    with pytest.raises(ConfigError, match="every"):
        lit.EmergenceCallback(torch.randn(2, 3), every=0)
    with pytest.raises(ConfigError, match="module must be"):
        lit.EmergenceCallback(torch.randn(2, 3), module=3)
    callback = lit.EmergenceCallback({"x": torch.randn(2, 3)}, module="missing")
    with pytest.raises(ConfigError, match="no submodule 'missing'"):
        callback.measured(lit.TinyCNN())
    callback = lit.EmergenceCallback(torch.randn(2, 1, 8, 8))  # the LightningModule itself
    assert callback.measured(model := lit.TinyCNN()) is model


def test_the_core_does_not_import_lightning() -> None:
    import subprocess
    import sys

    code = "import sys, emergeinit, emergeinit.measure; print('lightning' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
