"""A synthetic image-shaped classification set for tests and the smoke study.

Each class has a fixed random prototype; an example is its prototype plus Gaussian noise.
Learnable in a few hundred steps, with accuracy that grows with training.
"""

from __future__ import annotations

import numpy as np


def make_synthetic(
    *, classes: int, shape: list[int], train: int, test: int, noise: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, 0x5EED])
    prototypes = rng.standard_normal((classes, *shape)).astype(np.float32)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, classes, size=n)
        images = prototypes[labels] + noise * rng.standard_normal((n, *shape)).astype(np.float32)
        return images.astype(np.float32), labels.astype(np.int64)

    train_x, train_y = draw(train)
    test_x, test_y = draw(test)
    return train_x, train_y, test_x, test_y
