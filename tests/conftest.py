import os

import pytest
import torch

# the suite must never reach the network (there is none); fail fast instead of retrying
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture()
def one_thread():
    """Tiny models on a shared 2-core machine: one thread is several times faster than two fighting for busy cores
    (processes launched by accelerate get OMP_NUM_THREADS=1 too)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
