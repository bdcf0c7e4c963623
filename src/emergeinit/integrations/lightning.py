"""A Lightning callback that records the emergence of the model while it trains.

Needs the ``lightning`` package (``pip install emergeinit[lightning]``); the rest of emergeinit
never imports it. See docs/measure.md, "With Lightning".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..measure.network import Activity, Form, Granularity
from ..measure.tracker import EmergenceTracker

try:
    import lightning.pytorch as pl
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "emergeinit.integrations.lightning needs the 'lightning' package: "
        "pip install 'emergeinit[lightning]'"
    ) from error


class EmergenceCallback(pl.Callback):
    """Measure the emergence of the trained model on a fixed probe batch every ``every`` steps.

    At the start of each training batch whose ``trainer.global_step`` is a multiple of
    ``every`` (step 0 included, before the first optimizer step), the model is measured with
    :func:`~emergeinit.measure.measure_emergence` in the mode Lightning has it in (training
    mode), its state untouched, and the record is kept in :attr:`history`. With ``log=True``
    ``log10_e_mean``, ``log10_e_std`` and ``log10_relative`` are logged under ``prefix``. The
    history is saved in checkpoints and restored on resume (steps already recorded are not
    measured again).

    Args:
        probe: the probe batch: a tensor, a tuple of positional tensors or a dict of keyword
            inputs of the measured module's ``forward``.
        every: record when ``global_step % every == 0``.
        module: the attribute path of the submodule to measure (e.g. ``"net"``); ``None``
            (default) measures the LightningModule itself through its ``forward``.
        log: log the summary values with ``LightningModule.log``.
        prefix: the name prefix of the logged values.
        tau, form, activity, granularity, keep_per_sample: as for
            :class:`~emergeinit.measure.EmergenceTracker`.

    Example:
        >>> import torch
        >>> callback = EmergenceCallback(torch.randn(32, 3, 16, 16), every=50, module="net")
        >>> # lightning.pytorch.Trainer(callbacks=[callback]).fit(model); then callback.history
    """

    def __init__(
        self,
        probe: torch.Tensor | Sequence[torch.Tensor] | Mapping[str, Any],
        *,
        every: int = 100,
        module: str | None = None,
        log: bool = True,
        prefix: str = "emergence/",
        tau: float = 0.05,
        form: Form = "cross",
        activity: Activity = "per_sample",
        granularity: Granularity = "neuron",
        keep_per_sample: bool = False,
    ) -> None:
        super().__init__()
        if module is not None and not isinstance(module, str):
            raise ConfigError(f"module must be an attribute path (a string) or None, got "
                              f"{module!r}.")  # fmt: skip
        self.tracker = EmergenceTracker(
            probe, every=every, tau=tau, form=form, activity=activity, granularity=granularity,
            keep_per_sample=keep_per_sample,
        )  # fmt: skip
        self.module = module
        self.log_values = bool(log)
        self.prefix = str(prefix)

    @property
    def history(self) -> list[dict[str, Any]]:
        """The records so far (see :class:`~emergeinit.measure.EmergenceTracker`)."""
        return self.tracker.history

    @property
    def state_key(self) -> str:
        return self._generate_state_key(module=self.module, prefix=self.prefix)

    def measured(self, pl_module: pl.LightningModule) -> nn.Module:
        if self.module is None:
            return pl_module
        try:
            return pl_module.get_submodule(self.module)
        except AttributeError as error:
            raise ConfigError(
                f"the LightningModule has no submodule {self.module!r}; pass module=None to "
                "measure the LightningModule itself."
            ) from error

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        record = self.tracker.step(self.measured(pl_module), trainer.global_step)
        if record is not None and self.log_values:
            pl_module.log_dict(
                {
                    f"{self.prefix}{key}": float(record[key])
                    for key in ("log10_e_mean", "log10_e_std", "log10_relative")
                },
                on_step=True,
                on_epoch=False,
            )

    def state_dict(self) -> dict[str, Any]:
        return self.tracker.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.tracker.load_state_dict(state_dict)


__all__ = ["EmergenceCallback"]
