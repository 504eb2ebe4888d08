import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    # Two threads on tiny tensors are many times slower on 2-core machines.
    import torch

    torch.set_num_threads(1)
    yield
