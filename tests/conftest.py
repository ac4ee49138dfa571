"""Fixtures shared by the whole suite."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread per test, the previous count restored afterwards.

    The suite runs on two shared cores: tiny models run fastest on one thread
    (two spin against the other jobs), and the exact-resume comparisons need
    the same thread count in every run they compare.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
