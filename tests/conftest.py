import os
import tempfile

import pytest
import torch

# the suite must never reach the network (there is none); fail fast instead of retrying
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# prepared splits of this run in a folder of its own (processes the tests launch inherit it)
os.environ.setdefault("HF_DETR_CACHE", tempfile.mkdtemp(prefix="hf_detr_prepared_"))
# `make test` runs one pytest-xdist worker per core: each, and every process it launches, computes on one thread, so
# the two never fight over the cores (the tests' models are small enough that one thread is not slower)
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _fresh_accelerator_state():
    """No test inherits the accelerate state (e.g. the demo's bf16) of an earlier test in the same worker."""
    yield
    from helpers import reset_accelerator  # imported here: the environment above must be set before transformers

    reset_accelerator()


@pytest.fixture()
def one_thread():
    """Tiny models on a shared 2-core machine: one thread is several times faster than two fighting for busy cores
    (processes launched by accelerate get OMP_NUM_THREADS=1 too)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _saved_tiny_model(tmp_path_factory, name: str, segmentation: bool, size: dict[str, int]):
    """A random-weight tiny model (seed 0) saved with a processor resizing to `size`, in a new folder `name`."""
    from helpers import tiny_config_kwargs  # imported here: the environment above must be set before transformers
    from hf_detr import HfDetrConfig, HfDetrForObjectDetection, HfDetrForSegmentation, HfDetrImageProcessor

    folder = tmp_path_factory.mktemp(name)
    torch.manual_seed(0)
    model_class = HfDetrForSegmentation if segmentation else HfDetrForObjectDetection
    model_class(HfDetrConfig(**tiny_config_kwargs())).save_pretrained(folder)
    HfDetrImageProcessor(size=size).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A random-weight tiny detector saved with a processor resizing to 128-200 pixels (the prediction tests')."""
    return _saved_tiny_model(tmp_path_factory, "model", False, {"shortest_edge": 128, "longest_edge": 200})


@pytest.fixture(scope="module")
def segmentation_dir(tmp_path_factory):
    """A random-weight tiny segmentation model saved with a processor resizing to 64-107 pixels."""
    return _saved_tiny_model(tmp_path_factory, "segmentation_model", True, {"shortest_edge": 64, "longest_edge": 107})
