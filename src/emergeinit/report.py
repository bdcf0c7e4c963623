"""What an init call did: one record per depth unit, printable and serialisable.

The columns are described in docs/method.md ("The report").
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import torch

# Partial sums run over rows of this many elements in the weight's own precision (float32 rows
# of 256 keep the relative error near 1e-7), then add up in float64.
_ROW = 256
# Half-precision weights are widened to float32 this many elements at a time.
_SLAB = 1 << 20
_WIDE = (torch.float32, torch.float64)


def _sums(tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The sum and the sum of squares of ``tensor``'s elements (float64 scalars on its device).

    One read of the weight, no float64 copy: the reductions run over rows of :data:`_ROW`
    elements in the weight's precision and only the row results are widened.
    """
    flat = tensor.detach().reshape(-1)
    total = torch.zeros((), dtype=torch.float64, device=flat.device)
    squares = torch.zeros((), dtype=torch.float64, device=flat.device)
    pieces = (flat,) if flat.dtype in _WIDE else flat.split(_SLAB)
    for piece in pieces:
        piece = piece if piece.dtype in _WIDE else piece.float()
        whole = piece.numel() // _ROW * _ROW
        if whole:
            rows = piece[:whole].view(-1, _ROW)
            total += rows.sum(dim=1).double().sum()
            squares += torch.linalg.vector_norm(rows, dim=1).double().square().sum()
        if whole < piece.numel():
            rest = piece[whole:].double()
            total += rest.sum()
            squares += rest.square().sum()
    return total, squares


def weights_std(tensors: Sequence[torch.Tensor]) -> float:
    """The sample std of all elements of ``tensors`` together (0 for fewer than 2 elements).

    Example:
        >>> weights_std([torch.tensor([1.0, 3.0]), torch.tensor([[5.0]])])
        2.0
    """
    count = sum(t.numel() for t in tensors)
    if count < 2:
        return 0.0
    sums = [_sums(t) for t in tensors]
    total = float(torch.stack([s for s, _ in sums]).sum())
    squares = float(torch.stack([q for _, q in sums]).sum())
    return math.sqrt(max(squares - total * total / count, 0.0) / (count - 1))


def _version(tensor: torch.Tensor) -> int | None:
    """The in-place write counter of ``tensor`` (inference tensors keep none)."""
    return None if tensor.is_inference() else tensor._version


class MeasuredStd:
    """The std of a unit's weights as the init left them, measured when first read.

    Measuring costs one read of the weights, so an init does not pay for it unless the report
    is read. It is measured once and cached. If a weight was changed in place (an optimizer
    step) or freed before the first read, the value is ``nan``: read the report before training.
    (Inference tensors keep no write counter: they are measured as they are when read.)
    """

    def __init__(self, tensors: Sequence[torch.Tensor]) -> None:
        self._refs = [weakref.ref(t) for t in tensors]
        self._versions = [_version(t) for t in tensors]
        self._value: float | None = None

    @classmethod
    def known(cls, value: float) -> MeasuredStd:
        """A measurement already made."""
        measured = cls(())
        measured._value = float(value)
        return measured

    @property
    def value(self) -> float:
        if self._value is None:
            tensors = [ref() for ref in self._refs]
            alive = [t for t in tensors if t is not None]
            unchanged = len(alive) == len(tensors) and all(
                _version(t) == version for t, version in zip(alive, self._versions)
            )
            self._value = weights_std(alive) if unchanged else math.nan
            self._refs, self._versions = [], []
        return self._value

    def __reduce__(self) -> tuple[Any, tuple[float]]:
        # Weak references do not pickle or copy: a copy carries the measured value.
        return (MeasuredStd.known, (self.value,))

    def __repr__(self) -> str:
        return f"MeasuredStd({self.value!r})"


@dataclass(frozen=True)
class UnitRecord:
    """One depth unit as initialised: its depth, exponent, scale and weight std.

    ``std_before`` is the std of the unit's weights before the emergence scale: for a drawn
    base, the base distribution's (exact, from the fans; the root mean square for orthogonal);
    for ``base="keep"``, measured on the kept weights. ``std_after`` is measured on the weights
    as written, when first read (:class:`MeasuredStd`).
    """

    index: int
    name: str
    module_type: str
    kind: str
    shapes: tuple[tuple[int, ...], ...]
    exponent: float
    scale: float
    std_before: float
    std_after_source: MeasuredStd = field(repr=False, compare=False)
    scheduled: bool = True
    called: bool = True
    depth: int = 0

    @property
    def std_after(self) -> float:
        """The std of the unit's weights after the init (measured on first read, cached)."""
        return self.std_after_source.value

    def as_dict(self) -> dict[str, Any]:
        """The record as plain data, ``std_after`` measured."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "std_after_source"}
        data["std_after"] = self.std_after
        return data


@dataclass(frozen=True)
class SkippedRecord:
    """A parameter left unscaled, and why."""

    name: str
    reason: str


@dataclass(frozen=True)
class InitReport:
    """The report of :func:`emergeinit.emergence_init_`.

    ``str(report)`` is an aligned table; ``report.to_dict()`` a plain structure (``records()``
    gives one flat dict per unit, ready for ``pandas.DataFrame``). ``order`` is how the depth
    order was found: ``"traced"`` (call order of an example pass), ``"registration"``,
    ``"given"`` (explicit groups) or ``"graph"`` (longest dataflow path).
    """

    alpha: float
    base: str
    mode: str
    order: str
    pivot: float
    even: str
    head: bool
    units: tuple[UnitRecord, ...]
    skipped: tuple[SkippedRecord, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def traced(self) -> bool:
        """Whether the depth order came from an example forward pass (call or graph order)."""
        return self.order in ("traced", "graph")

    @property
    def num_units(self) -> int:
        return len(self.units)

    def records(self) -> list[dict[str, Any]]:
        """One flat dict per unit (shapes as strings), e.g. for ``pandas.DataFrame(records)``."""
        return [{**unit.as_dict(), "shapes": _shapes(unit.shapes)} for unit in self.units]

    def to_dict(self) -> dict[str, Any]:
        """The whole report as plain Python data (JSON-serialisable)."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["units"] = [{**u.as_dict(), "shapes": [list(s) for s in u.shapes]} for u in self.units]
        data["skipped"] = [{"name": s.name, "reason": s.reason} for s in self.skipped]
        data["notes"] = list(self.notes)
        data["traced"] = self.traced
        return data

    def __str__(self) -> str:
        header = (
            "#", "unit", "type", "shape", "depth", "exp", "scale", "std before", "std after"
        )  # fmt: skip
        rows = [
            (
                str(u.index),
                u.name or "(model)",
                u.module_type,
                _shapes(u.shapes),
                str(u.depth),
                f"{u.exponent:+g}" if u.scheduled else "head off",
                f"{u.scale:.4g}",
                f"{u.std_before:.4g}",
                f"{u.std_after:.4g}",
            )
            for u in self.units
        ]
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        numeric = {0, 4, 5, 6, 7, 8}

        def line(cells: tuple[str, ...]) -> str:
            return "  ".join(
                c.rjust(w) if i in numeric else c.ljust(w)
                for i, (c, w) in enumerate(zip(cells, widths))
            ).rstrip()

        order = self.order
        if order == "graph":
            levels = len({u.depth for u in self.units})
            order = f"graph, {levels} depths: longest dataflow path, equal depths share exponents"
        title = (
            f"emergence init: alpha={self.alpha:g}, base={self.base}, {self.num_units} units "
            f"({self.mode}, order: {order}), pivot={self.pivot:g}, head={self.head}"
        )
        lines = [title, line(header), line(tuple("-" * w for w in widths))]
        lines += [line(r) for r in rows]
        if self.skipped:
            reasons: dict[str, list[str]] = {}
            for s in self.skipped:
                reasons.setdefault(s.reason, []).append(s.name)
            lines.append("left unscaled:")
            for reason, names in reasons.items():
                shown = ", ".join(names[:6]) + (
                    f", ... ({len(names)} in all)" if len(names) > 6 else ""
                )
                lines.append(f"  {reason}: {shown}")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def _shapes(shapes: tuple[tuple[int, ...], ...]) -> str:
    text = ", ".join("x".join(str(d) for d in s) for s in shapes[:3])
    return text + (f" (+{len(shapes) - 3})" if len(shapes) > 3 else "")


__all__ = ["InitReport", "MeasuredStd", "SkippedRecord", "UnitRecord", "weights_std"]
