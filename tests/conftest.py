"""Shared test fixtures."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """Run the test with one PyTorch CPU thread, then restore the count.

    Modules of small tensors and tiny networks use it (``pytestmark``): a second thread gains
    them nothing, and on a shared 2-core machine the idle-spinning OpenMP workers slowed them
    10-100x. Results are deterministic either way.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
