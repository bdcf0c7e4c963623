"""CIFAR-10 from its standard python-pickle batch directory (``cifar-10-batches-py``)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from .idx import DataFileError

TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCH = "test_batch"
HOW_TO_GET = (
    "download and unpack https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz and pass "
    "--data-dir pointing at the unpacked cifar-10-batches-py folder (or its parent)"
)


def locate(data_dir: Path | None) -> Path | None:
    if data_dir is None:
        return None
    for folder in (data_dir, data_dir / "cifar-10-batches-py"):
        if all((folder / name).is_file() for name in [*TRAIN_BATCHES, TEST_BATCH]):
            return folder
    return None


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    # The official format is a pickle; only load CIFAR folders you obtained yourself.
    try:
        with path.open("rb") as fh:
            batch = pickle.load(fh, encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as exc:
        raise DataFileError(f"{path}: not a CIFAR-10 batch ({exc!r}); {HOW_TO_GET}") from None
    if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise DataFileError(
            f"{path}: expected data N x 3072 and N labels, got {data.shape} and "
            f"{labels.shape}; {HOW_TO_GET}"
        )
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar10(data_dir: Path | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images N x 3 x 32 x 32 uint8, train labels, test images, test labels)."""
    folder = locate(data_dir)
    if folder is None:
        where = data_dir if data_dir else "no --data-dir given"
        raise DataFileError(f"CIFAR-10 batches not found ({where}); {HOW_TO_GET}")
    parts = [_read_batch(folder / name) for name in TRAIN_BATCHES]
    test_x, test_y = _read_batch(folder / TEST_BATCH)
    return (
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
        test_x,
        test_y,
    )
