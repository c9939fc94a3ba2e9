import sys
from pathlib import Path

import pytest
import torch

# test helpers (archive_factory, published_recipe) import as plain modules
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on a shared 2-core machine: one thread is fastest and avoids OpenMP spin-waiting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
