"""Data loaders on small files the tests write: IDX (raw and gz), CIFAR pickles, splits."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from emergeinit.bench import config
from emergeinit.bench.data import DataFileError, cifar10, idx, is_available, load_splits
from emergeinit.bench.study import resolve_datasets


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">i", d) for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write_fashion(folder: Path, n_train: int = 60, n_test: int = 20, gz: bool = True) -> dict:
    rng = np.random.default_rng(0)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for key, stem in idx.FILES.items():
        data = _idx_bytes(arrays[key])
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / stem).write_bytes(data)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip(tmp_path: Path, gz: bool) -> None:
    arrays = _write_fashion(tmp_path, gz=gz)
    train_x, train_y, test_x, test_y = idx.load_fashion_mnist(tmp_path)
    np.testing.assert_array_equal(train_x, arrays["train_images"])
    np.testing.assert_array_equal(train_y, arrays["train_labels"])
    np.testing.assert_array_equal(test_x, arrays["test_images"])
    np.testing.assert_array_equal(test_y, arrays["test_labels"])


def test_idx_in_a_fashion_mnist_subfolder_is_found(tmp_path: Path) -> None:
    _write_fashion(tmp_path / "fashion-mnist")
    assert is_available("fashion-mnist", tmp_path)
    assert not is_available("fashion-mnist", tmp_path / "elsewhere")


def test_missing_idx_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(DataFileError, match="apt-get install dataset-fashion-mnist"):
        idx.load_fashion_mnist(tmp_path)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda raw: raw[:-10], "truncated or corrupt"),
        (lambda raw: b"\x01\x02" + raw[2:], "bad magic"),
    ],
)
def test_corrupt_idx_is_a_clear_error(tmp_path: Path, damage, message: str) -> None:
    _write_fashion(tmp_path, gz=False)
    path = tmp_path / idx.FILES["train_images"]
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DataFileError, match=message):
        idx.load_fashion_mnist(tmp_path)


def test_corrupt_gzip_is_a_clear_error(tmp_path: Path) -> None:
    _write_fashion(tmp_path)
    path = tmp_path / (idx.FILES["test_labels"] + ".gz")
    path.write_bytes(path.read_bytes()[:15])
    with pytest.raises(DataFileError, match="corrupt gzip"):
        idx.load_fashion_mnist(tmp_path)


def _write_cifar(folder: Path, per_batch: int = 8) -> np.ndarray:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    first = None
    for name in [*cifar10.TRAIN_BATCHES, cifar10.TEST_BATCH]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        first = data if first is None else first
        batch = {b"data": data, b"labels": list(rng.integers(0, 10, per_batch))}
        with (folder / name).open("wb") as fh:
            pickle.dump(batch, fh)
    assert first is not None
    return first


def test_cifar_pickles_load(tmp_path: Path) -> None:
    first = _write_cifar(tmp_path / "cifar-10-batches-py")
    train_x, train_y, test_x, test_y = cifar10.load_cifar10(tmp_path)
    assert train_x.shape == (40, 3, 32, 32) and test_x.shape == (8, 3, 32, 32)
    assert train_y.shape == (40,) and test_y.dtype == np.int64
    # Channel-major rows: the first 1024 values are the red plane.
    np.testing.assert_array_equal(train_x[0, 0].reshape(-1), first[0, :1024])


def test_cifar_missing_or_corrupt(tmp_path: Path) -> None:
    with pytest.raises(DataFileError, match=r"cifar-10-python\.tar\.gz"):
        cifar10.load_cifar10(tmp_path)
    _write_cifar(tmp_path / "c")
    (tmp_path / "c" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DataFileError, match=r"data_batch_3.*not a CIFAR-10 batch"):
        cifar10.load_cifar10(tmp_path / "c")


def test_splits_sizes_normalization_and_fixed_subsets(tmp_path: Path) -> None:
    _write_fashion(tmp_path, n_train=60, n_test=20)
    data = config.load("smoke", ["data.val_size=10", "data.train_size=40", "data.test_size=15"])
    data = data["data"]
    a = load_splits("fashion-mnist", data, tmp_path)
    assert a.train_x.shape == (40, 1, 28, 28) and a.val_x.shape == (10, 1, 28, 28)
    assert a.test_x.shape == (15, 1, 28, 28) and a.train_y.dtype == torch.int64
    assert abs(float(a.train_x.mean())) < 1e-4 and abs(float(a.train_x.std()) - 1) < 1e-2
    b = load_splits("fashion-mnist", {**data, "seed": 1}, tmp_path)
    assert not torch.equal(a.val_x, b.val_x)  # data.seed picks the subsets
    assert torch.equal(load_splits("fashion-mnist", data, tmp_path).val_x, a.val_x)
    with pytest.raises(DataFileError, match=r"data\.train_size"):
        load_splits("fashion-mnist", {**data, "train_size": 51}, tmp_path)


def test_digits_and_synthetic_need_no_files() -> None:
    data = config.load("smoke")["data"]
    digits = load_splits("digits", {**data, "val_size": 100}, None)
    assert digits.shape == (1, 8, 8) and digits.classes == 10
    assert len(digits.test_y) == 359 and len(digits.val_y) == 100
    synth = load_splits("synthetic", data, None)
    assert synth.classes == 4 and len(synth.train_y) == 1280 - 256


def test_missing_dataset_falls_back_with_a_notice(tmp_path: Path) -> None:
    cfg = config.load("default")
    resolved, notices = resolve_datasets(cfg, tmp_path)
    assert resolved["data"]["dataset"] == ["digits"]
    assert "NOTICE" in notices[0] and "apt-get install dataset-fashion-mnist" in notices[0]
    assert resolved["data"]["val_size"] + resolved["data"]["train_size"] <= 1438
    no_fallback = config.load("default", ['data.fallback=""'])
    with pytest.raises(DataFileError, match="fashion-mnist"):
        resolve_datasets(no_fallback, tmp_path)
