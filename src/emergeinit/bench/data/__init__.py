"""Datasets as in-memory tensors: train / validation / test splits, normalized.

Every split is a pair of tensors (images N x C x H x W or features N x F, float32; labels
int64), so training reads batches by indexing with no per-step Python overhead beyond the model.
The validation split is held out of the training set and, like the training subset, fixed by
``data.seed`` (never by the run seed): every run of a study sees the same examples, only their
order changes with the seed. A name that is not built in is a plug-in dataset (:mod:`.plugin`),
cut and standardized the same way.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import cifar10, idx
from .digits import load_digits_arrays
from .idx import DataFileError
from .plugin import load_plugin
from .synthetic import make_synthetic

__all__ = [
    "BUILTIN",
    "DataFileError",
    "Splits",
    "dataset_shape",
    "is_available",
    "load_splits",
    "pool_sizes",
]

#: The datasets built into the harness; any other name is a plug-in.
BUILTIN = ("fashion-mnist", "digits", "cifar10", "synthetic")

_STATIC = {
    "fashion-mnist": ((1, 28, 28), 10),
    "digits": ((1, 8, 8), 10),
    "cifar10": ((3, 32, 32), 10),
}


@dataclass(frozen=True)
class Splits:
    name: str
    shape: tuple[int, ...]  # (C, H, W) of an image, (F,) of a feature vector
    classes: int
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


def dataset_shape(name: str, data_cfg: dict[str, Any]) -> tuple[tuple[int, ...], int]:
    """(C, H, W) (or (F,)) and number of classes; built-ins know them without loading."""
    if name == "synthetic":
        c, h, w = data_cfg["synthetic"]["shape"]
        return (c, h, w), int(data_cfg["synthetic"]["classes"])
    if name not in BUILTIN:
        found = load_plugin(name, data_cfg)
        return found.shape, found.classes
    return _STATIC[name]


def is_available(name: str, data_dir: Path | None) -> bool:
    if name == "fashion-mnist":
        return idx.locate(data_dir) is not None
    if name == "cifar10":
        return cifar10.locate(data_dir) is not None
    return True


@functools.lru_cache(maxsize=4)
def _raw(name: str, data_dir: Path | None, synthetic_key: str, seed: int) -> tuple[np.ndarray, ...]:
    if name == "fashion-mnist":
        return idx.load_fashion_mnist(data_dir)
    if name == "cifar10":
        return cifar10.load_cifar10(data_dir)
    if name == "digits":
        return load_digits_arrays()
    if name == "synthetic":
        return make_synthetic(**json.loads(synthetic_key), seed=seed)
    raise ValueError(f"unknown dataset {name!r}")


def pool_sizes(name: str, data_cfg: dict[str, Any], data_dir: Path | None) -> tuple[int, int]:
    """(examples in the training pool, examples in the test set) of a dataset."""
    if name == "synthetic":
        return int(data_cfg["synthetic"]["train"]), int(data_cfg["synthetic"]["test"])
    if name == "fashion-mnist":
        return 60000, 10000
    if name == "cifar10":
        return 50000, 10000
    if name not in BUILTIN:
        found = load_plugin(name, data_cfg)
        return len(found.train_x), len(found.test_x)
    train_x, _, test_x, _ = _raw(name, data_dir, "", 0)
    return len(train_x), len(test_x)


def _as_nchw(images: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return images.reshape(len(images), *shape)


def load_splits(name: str, data_cfg: dict[str, Any], data_dir: Path | None = None) -> Splits:
    """Load ``name`` and cut the train / val / test subsets that ``data_cfg`` asks for."""
    return _load_splits(name, json.dumps(data_cfg, sort_keys=True), data_dir)


@functools.lru_cache(maxsize=4)
def _load_splits(name: str, data_key: str, data_dir: Path | None) -> Splits:
    cfg = json.loads(data_key)
    shape, classes = dataset_shape(name, cfg)
    synthetic_key = ""
    if name == "synthetic":
        synthetic_key = json.dumps(
            {k: cfg["synthetic"][k] for k in ("classes", "shape", "train", "test", "noise")},
            sort_keys=True,
        )
    seed = int(cfg["seed"])
    if name in BUILTIN:
        train_x, train_y, test_x, test_y = _raw(name, data_dir, synthetic_key, seed)
    else:
        found = load_plugin(name, cfg)
        train_x, train_y, test_x, test_y = found.train_x, found.train_y, found.test_x, found.test_y
    rng = np.random.default_rng([seed, 0xDA7A])
    order = rng.permutation(len(train_y))
    val_size = int(cfg["val_size"])
    if val_size >= len(order):
        raise DataFileError(
            f"data.val_size: {val_size} leaves no training examples in {name} "
            f"({len(order)} available)"
        )
    val_idx = order[:val_size]
    rest = order[val_size:]
    train_size = int(cfg["train_size"]) or len(rest)
    if train_size > len(rest):
        raise DataFileError(
            f"data.train_size: {train_size} exceeds the {len(rest)} {name} training examples "
            f"left after data.val_size={val_size}"
        )
    train_idx = rest[:train_size]
    test_size = int(cfg["test_size"]) or len(test_y)
    if test_size > len(test_y):
        raise DataFileError(
            f"data.test_size: {test_size} exceeds the {len(test_y)} {name} test examples"
        )
    test_idx = rng.permutation(len(test_y))[:test_size] if cfg["test_size"] else slice(None)

    def tensor(images: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(_as_nchw(np.asarray(images, dtype=np.float32), shape).copy())

    tx = tensor(train_x[train_idx])
    # Per-channel (per-feature) standardization with training-subset statistics: the inputs
    # every init assumes (zero mean, unit variance), with no information from val or test.
    dims = (0, *range(2, tx.ndim))
    mean = tx.mean(dim=dims, keepdim=True)
    std = tx.std(dim=dims, keepdim=True).clamp_min(1e-6)

    def norm(images: np.ndarray) -> torch.Tensor:
        return ((tensor(images) - mean) / std).contiguous()

    def labels(values: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(values, dtype=np.int64).copy())

    return Splits(
        name=name,
        shape=shape,
        classes=classes,
        train_x=((tx - mean) / std).contiguous(),
        train_y=labels(train_y[train_idx]),
        val_x=norm(train_x[val_idx]),
        val_y=labels(train_y[val_idx]),
        test_x=norm(test_x[test_idx]),
        test_y=labels(test_y[test_idx]),
    )
