"""Fixtures shared by the harness (bench) tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """One torch thread for the test: two threads on two cores shared with other jobs can run
    5x slower than one (use it with ``pytest.mark.usefixtures``)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def one_torch_thread_per_module() -> Iterator[None]:
    """One torch thread for a whole test module (tiny tensors: a second intra-op thread only
    adds contention on a shared machine)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
