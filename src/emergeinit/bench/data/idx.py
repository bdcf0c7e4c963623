"""Fashion-MNIST (and any MNIST-format data) from IDX files, gzipped or raw."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from ...errors import ConfigError

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
HOW_TO_GET = (
    "install Debian's package (`apt-get install dataset-fashion-mnist`, files in "
    f"{DEBIAN_DIR}) or put the four IDX files from "
    "https://github.com/zalandoresearch/fashion-mnist (data/fashion) in a folder and pass "
    "--data-dir FOLDER"
)
_DTYPES: dict[int, str] = {
    0x08: "u1",
    0x09: "i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


class DataFileError(ConfigError):
    """A data file is missing or unreadable; the message says how to obtain it."""


def find_file(folder: Path, stem: str) -> Path | None:
    """``stem`` or ``stem.gz`` in ``folder`` (also the ``.idx3-ubyte`` dotted spelling)."""
    for name in (
        stem,
        stem + ".gz",
        stem.replace("-idx", ".idx"),
        stem.replace("-idx", ".idx") + ".gz",
    ):
        if (folder / name).is_file():
            return folder / name
    return None


def read_idx(path: Path) -> np.ndarray:
    """Parse one IDX file: magic ``0 0 dtype ndim``, big-endian int32 dims, then the data."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DataFileError(f"{path}: corrupt gzip data ({exc}); {HOW_TO_GET}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise DataFileError(f"{path}: not an IDX file (bad magic number); {HOW_TO_GET}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataFileError(f"{path}: truncated IDX header; {HOW_TO_GET}")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    dtype = np.dtype(_DTYPES[raw[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataFileError(
            f"{path}: IDX header promises {dims} ({expected} bytes) but the file holds "
            f"{len(raw) - header}; the file is truncated or corrupt; {HOW_TO_GET}"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


def locate(data_dir: Path | None) -> Path | None:
    """The folder holding the four files: ``data_dir``, ``data_dir/fashion-mnist`` or Debian's."""
    candidates = [data_dir, data_dir / "fashion-mnist"] if data_dir else [DEBIAN_DIR]
    for folder in candidates:
        if folder is not None and all(find_file(folder, s) for s in FILES.values()):
            return folder
    return None


def load_fashion_mnist(
    data_dir: Path | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images N x 28 x 28 uint8, train labels, test images, test labels)."""
    folder = locate(data_dir)
    if folder is None:
        where = data_dir if data_dir else DEBIAN_DIR
        raise DataFileError(f"Fashion-MNIST IDX files not found in {where}; {HOW_TO_GET}")
    arrays = {key: read_idx(find_file(folder, stem)) for key, stem in FILES.items()}  # type: ignore[arg-type]
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataFileError(
                f"{folder}: {split} images {images.shape} and labels {labels.shape} do not "
                f"match; {HOW_TO_GET}"
            )
    return (
        arrays["train_images"],
        arrays["train_labels"],
        arrays["test_images"],
        arrays["test_labels"],
    )
