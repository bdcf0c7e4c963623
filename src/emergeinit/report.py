"""What an init call did: one record per depth unit, printable and serialisable (SPEC 1.6)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class UnitRecord:
    """One depth unit as initialised: its exponent, scale and weight std before and after."""

    index: int
    name: str
    module_type: str
    kind: str
    shapes: tuple[tuple[int, ...], ...]
    exponent: float
    scale: float
    std_before: float
    std_after: float
    scheduled: bool = True
    called: bool = True


@dataclass(frozen=True)
class SkippedRecord:
    """A parameter left unscaled, and why."""

    name: str
    reason: str


@dataclass(frozen=True)
class InitReport:
    """The report of :func:`emergeinit.emergence_init_`.

    ``str(report)`` is an aligned table; ``report.to_dict()`` a plain structure (``records()``
    gives one flat dict per unit, ready for ``pandas.DataFrame``).
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
        """Whether the depth order came from an example forward pass."""
        return self.order == "traced"

    @property
    def num_units(self) -> int:
        return len(self.units)

    def records(self) -> list[dict[str, Any]]:
        """One flat dict per unit (shapes as strings), e.g. for ``pandas.DataFrame(records)``."""
        rows = []
        for unit in self.units:
            row = asdict(unit)
            row["shapes"] = _shapes(unit.shapes)
            rows.append(row)
        return rows

    def to_dict(self) -> dict[str, Any]:
        """The whole report as plain Python data (JSON-serialisable)."""
        data = asdict(self)
        data["units"] = [{**asdict(u), "shapes": [list(s) for s in u.shapes]} for u in self.units]
        data["skipped"] = [asdict(s) for s in self.skipped]
        data["notes"] = list(self.notes)
        data["traced"] = self.traced
        return data

    def __str__(self) -> str:
        header = ("#", "unit", "type", "shape", "exp", "scale", "std before", "std after")
        rows = [
            (
                str(u.index),
                u.name or "(model)",
                u.module_type,
                _shapes(u.shapes),
                f"{u.exponent:+g}" if u.scheduled else "head off",
                f"{u.scale:.4g}",
                f"{u.std_before:.4g}",
                f"{u.std_after:.4g}",
            )
            for u in self.units
        ]
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        numeric = {0, 4, 5, 6, 7}

        def line(cells: tuple[str, ...]) -> str:
            return "  ".join(
                c.rjust(w) if i in numeric else c.ljust(w)
                for i, (c, w) in enumerate(zip(cells, widths))
            ).rstrip()

        title = (
            f"emergence init: alpha={self.alpha:g}, base={self.base}, {self.num_units} units "
            f"({self.mode}, order: {self.order}), pivot={self.pivot:g}, head={self.head}"
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


__all__ = ["InitReport", "SkippedRecord", "UnitRecord"]
