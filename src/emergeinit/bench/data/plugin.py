"""A user's own dataset: ``data.dataset = "package.module:function"``.

The function is called with the run's ``data`` table (``dataset``, ``train_size``,
``val_size``, ``test_size``, ``seed`` and the free-form ``options`` table) and returns a mapping
with ``train_x``, ``train_y``, ``test_x``, ``test_y``: tensors or NumPy arrays, images
N x C x H x W or features N x F, integer labels from 0. An optional ``classes`` entry gives
the number of classes (default: the largest label + 1). The harness carves the validation
split out of the training set and standardizes exactly as for a built-in dataset (see
``docs/bench.md#a-plug-in-dataset``). Every problem is a :class:`~emergeinit.errors.ConfigError`
that names ``data.dataset``, raised at preflight.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import ConfigError
from .. import plugins

__all__ = ["PluginData", "load_plugin"]

KEYS = ("train_x", "train_y", "test_x", "test_y")


@dataclass(frozen=True)
class PluginData:
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    shape: tuple[int, ...]  # (C, H, W) for images, (F,) for features
    classes: int


def load_plugin(name: str, table: Mapping[str, Any]) -> PluginData:
    """Call the plug-in dataset ``name`` with ``table`` and check what it returns (cached per
    process: a study's runs share one call per data table)."""
    return _load(name, json.dumps(dict(table), sort_keys=True))


@functools.lru_cache(maxsize=4)
def _load(name: str, table_key: str) -> PluginData:
    fn = plugins.resolve("dataset", name, "data.dataset")
    try:
        out = fn(json.loads(table_key))
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(
            f"data.dataset: plug-in {name!r} raised {type(exc).__name__}: {exc} when called "
            "with the run's data table"
        ) from None
    fix = (
        "return a mapping with train_x, train_y, test_x, test_y (tensors or NumPy arrays; "
        "N x C x H x W or N x F inputs, integer labels)"
    )
    if not isinstance(out, Mapping) or any(k not in out for k in KEYS):
        got = sorted(out) if isinstance(out, Mapping) else type(out).__name__
        raise ConfigError(f"data.dataset: plug-in {name!r} returned {got}; {fix}")
    arrays = {k: _array(name, k, out[k]) for k in KEYS}
    for split in ("train", "test"):
        x, y = arrays[f"{split}_x"], arrays[f"{split}_y"]
        if x.ndim not in (2, 4):
            raise ConfigError(
                f"data.dataset: {split}_x of plug-in {name!r} has shape {x.shape}; {fix}"
            )
        if not np.issubdtype(x.dtype, np.number) or not np.all(np.isfinite(x)):
            raise ConfigError(
                f"data.dataset: {split}_x of plug-in {name!r} must hold finite numbers"
            )
        if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
            raise ConfigError(
                f"data.dataset: {split}_y of plug-in {name!r} must be {len(x)} integer labels "
                f"(one per row of {split}_x), got dtype {y.dtype} and shape {y.shape}"
            )
        if len(y) and y.min() < 0:
            raise ConfigError(f"data.dataset: {split}_y of plug-in {name!r} has negative labels")
    if arrays["train_x"].shape[1:] != arrays["test_x"].shape[1:]:
        raise ConfigError(
            f"data.dataset: plug-in {name!r} gives train_x of shape "
            f"{arrays['train_x'].shape[1:]} per example and test_x of "
            f"{arrays['test_x'].shape[1:]}; they must match"
        )
    top = int(max(arrays["train_y"].max(initial=0), arrays["test_y"].max(initial=0)))
    classes = out.get("classes", top + 1)
    if not isinstance(classes, int) or isinstance(classes, bool) or classes < max(2, top + 1):
        raise ConfigError(
            f"data.dataset: plug-in {name!r} gives classes={classes!r}; it must be an integer "
            f">= 2 and above every label (largest: {top})"
        )
    shape = tuple(int(d) for d in arrays["train_x"].shape[1:])
    return PluginData(shape=shape, classes=classes, **arrays)


def _array(name: str, key: str, value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, without importing torch here
        value = value.detach().cpu().numpy()
    try:
        return np.asarray(value)
    except Exception as exc:
        raise ConfigError(
            f"data.dataset: {key} of plug-in {name!r} is not array-like ({exc})"
        ) from None
