"""How a setting and an init are named in the report's tables and the plots' legends.

A leaf of the bench wing (no imports from it), so the report, the plots and every task's own
sections name things the same way. Result rows carry each plug-in under its label already
(its ``name`` attribute, or its import path), so nothing here imports a plug-in.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["BUILTIN_INITS", "EMERGENCE_INITS", "label", "setting_label"]

#: The inits built into the harness (see ``docs/bench.md#exactly-what-each-init-is``).
BUILTIN_INITS = ("default", "xavier", "kaiming", "emergence", "emergence-lr", "lsuv", "gradinit")
#: The inits the alpha, pivot, head, base, order and units axes multiply.
EMERGENCE_INITS = ("emergence", "emergence-lr")


def label(row: Mapping[str, Any]) -> str:
    """A configuration's init as text: ``emergence α=2 (xavier_uniform, pivot 0.25, no head)``;
    a depth order or units other than the defaults (``call``, ``auto``) by name:
    ``emergence α=1.2 (graph, blocks)``.

    >>> label({"init": "emergence", "alpha": 2.0, "base": "kaiming_normal", "pivot": 0.5})
    'emergence α=2'
    >>> label({"init": "emergence-lr", "alpha": 1.2, "order": "graph", "units": "blocks"})
    'emergence-lr α=1.2 (graph, blocks)'
    >>> label({"init": "kaiming"})
    'kaiming'
    """
    name = str(row["init"])
    if name not in EMERGENCE_INITS:
        return name
    extra = []
    if row.get("base") and row["base"] != "kaiming_normal":
        extra.append(str(row["base"]))
    if row.get("pivot") is not None and row["pivot"] != 0.5:
        extra.append(f"pivot {row['pivot']:g}")
    if row.get("head") is False:
        extra.append("no head")
    for key, default in (("order", "call"), ("units", "auto")):
        if row.get(key) and row[key] != default:  # empty in results.csv at the default
            extra.append(str(row[key]))
    text = f"{name} α={row['alpha']:g}"
    return f"{text} ({', '.join(extra)})" if extra else text


def setting_label(row: Mapping[str, Any]) -> str:
    """What a setting (dataset, model, optimizer, lr) is called: ``digits · mlp:64-8-10 · sgd
    lr=0.05``."""
    return f"{row['dataset']} · {row['model']} · {row['optimizer']} lr={row['lr']:g}"
