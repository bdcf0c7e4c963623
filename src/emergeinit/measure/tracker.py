"""Emergence during training: :func:`measure_emergence` on a fixed probe batch every k steps.

See docs/measure.md, "During training".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, get_args

import torch
from torch import nn

from ..errors import ConfigError
from ..schedule import check_choice
from .capture import ModelInputs, model_inputs
from .network import (
    Activity,
    EmergenceResult,
    Form,
    Granularity,
    _check_tau,
    measure_emergence,
)

_STATE_VERSION = 1


class EmergenceTracker:
    """Record the emergence of a model on a fixed probe batch every ``every`` steps.

    Each record is a plain dict: ``step``, ``log10_e_mean``, ``log10_e_std``, ``log10_relative``,
    ``active_fraction`` (per layer) and, with ``keep_per_sample=True``, ``log10_e`` (a list).
    The model is measured in whatever mode it is in, with its state untouched (see
    :func:`measure_emergence`), so the tracker can sit inside a training loop. ``state_dict()``
    is plain data, for a training checkpoint; ``load_state_dict`` resumes the history.

    Args:
        probe: the probe batch: a tensor, a tuple of positional tensors or a dict of keyword
            inputs (as for :func:`measure_emergence`); a copy is kept, moved to the model's
            device when measuring.
        every: record when ``step % every == 0`` (step 0 included).
        tau, form, activity, granularity: passed to :func:`measure_emergence`.
        keep_per_sample: also store every sample's ``log10 E``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> tracker = EmergenceTracker(torch.randn(32, 4), every=10)
        >>> for step in range(25):
        ...     _ = tracker.step(net, step)  # an optimizer step would go here
        >>> [record["step"] for record in tracker.history]
        [0, 10, 20]
    """

    def __init__(
        self,
        probe: torch.Tensor | Sequence[torch.Tensor] | Mapping[str, Any],
        *,
        every: int = 100,
        tau: float = 0.05,
        form: Form = "cross",
        activity: Activity = "per_sample",
        granularity: Granularity = "neuron",
        keep_per_sample: bool = False,
    ) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ConfigError(f"every must be an integer >= 1, got {every!r}.")
        check_choice("form", form, get_args(Form))
        check_choice("activity", activity, get_args(Activity))
        check_choice("granularity", granularity, get_args(Granularity))
        tau = _check_tau(tau)
        try:
            checked = model_inputs(probe)
        except ConfigError as error:
            raise ConfigError(f"bad probe batch: {error}") from None
        self._probe = checked.map_tensors(lambda t: t.detach().clone())
        self._on_device: ModelInputs = self._probe
        self.every = every
        self.options: dict[str, Any] = {
            "tau": tau,
            "form": form,
            "activity": activity,
            "granularity": granularity,
        }
        self.keep_per_sample = bool(keep_per_sample)
        self.history: list[dict[str, Any]] = []

    def __len__(self) -> int:
        return len(self.history)

    @property
    def last(self) -> dict[str, Any] | None:
        """The latest record, or ``None``."""
        return self.history[-1] if self.history else None

    def due(self, step: int) -> bool:
        """Whether ``step`` is a recording step not yet recorded (so a resumed run skips it)."""
        if step % self.every != 0:
            return False
        return not self.history or step > self.history[-1]["step"]

    def step(self, model: nn.Module, step: int) -> dict[str, Any] | None:
        """Measure and record when :meth:`due`; return the new record or ``None``."""
        return self.record(model, step) if self.due(step) else None

    def record(self, model: nn.Module, step: int) -> dict[str, Any]:
        """Measure now, whatever the step, and append the record."""
        result = self.measure(model)
        entry: dict[str, Any] = {
            "step": int(step),
            "log10_e_mean": result.log10_e_mean,
            "log10_e_std": result.log10_e_std,
            "log10_relative": result.log10_relative,
            "active_fraction": dict(result.active_fraction),
        }
        if self.keep_per_sample:
            entry["log10_e"] = [float(v) for v in result.log10_e.tolist()]
        self.history.append(entry)
        return entry

    def measure(self, model: nn.Module) -> EmergenceResult:
        """The full :class:`EmergenceResult` on the probe batch, without recording it."""
        device = _device_of(model)
        if device is not None and self._on_device.device != device:
            self._on_device = self._probe.map_tensors(lambda t: t.to(device))
        return measure_emergence(model, self._on_device.as_inputs(), **self.options)

    def state_dict(self) -> dict[str, Any]:
        """Plain data (no tensors): the options and the history. The probe batch is not saved."""
        return {
            "version": _STATE_VERSION,
            "every": self.every,
            "options": dict(self.options),
            "keep_per_sample": self.keep_per_sample,
            "history": [dict(entry) for entry in self.history],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict`; the measurement options must match this tracker's."""
        if not isinstance(state, dict) or state.get("version") != _STATE_VERSION:
            raise ConfigError("not an EmergenceTracker state (missing or unknown version).")
        if state.get("options") != self.options:
            raise ConfigError(
                f"the saved tracker measured with {state.get('options')}, this one with "
                f"{self.options}; a history must come from one measure."
            )
        history = state.get("history")
        if not isinstance(history, list) or not all(
            isinstance(e, dict) and isinstance(e.get("step"), int) for e in history
        ):
            raise ConfigError("the saved history must be a list of records with integer steps.")
        self.every = int(state.get("every", self.every))
        self.keep_per_sample = bool(state.get("keep_per_sample", self.keep_per_sample))
        self.history = [dict(entry) for entry in history]


def _device_of(model: nn.Module) -> torch.device | None:
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return None


__all__ = ["EmergenceTracker"]
