"""scikit-learn's bundled 8x8 digits (no download): the fallback when no file dataset exists."""

from __future__ import annotations

import numpy as np

# Digits ships without a test split; a fixed one (independent of ``data.seed``) keeps test
# numbers comparable across studies, as an official split would.
TEST_FRACTION = 0.2
_SPLIT_SEED = 20240726


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images N x 8 x 8 float in [0, 16], labels, test images, labels)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float32)
    labels = np.asarray(bunch.target, dtype=np.int64)
    order = np.random.default_rng(_SPLIT_SEED).permutation(len(labels))
    n_test = round(TEST_FRACTION * len(labels))
    test, train = order[:n_test], order[n_test:]
    return images[train], labels[train], images[test], labels[test]
