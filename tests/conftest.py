import os
import pickle

import numpy as np
import pytest

os.environ.setdefault("EDGEPRUNE_NO_PROGRESS", "1")


@pytest.fixture
def cifar_dir(tmp_path):
    """A tiny CIFAR-10 directory in the python-pickle format (2 train batches + test batch)."""
    rng = np.random.default_rng(0)
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    for name in ("data_batch_1", "data_batch_2", "test_batch"):
        data = rng.integers(0, 256, size=(30, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=30)]
        with open(root / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": labels}, f)
    return tmp_path


@pytest.fixture
def npz_file(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "tab.npz"
    np.savez(path, x_train=rng.normal(size=(80, 12)).astype(np.float32), y_train=rng.integers(0, 3, 80),
             x_test=rng.normal(size=(40, 12)).astype(np.float32), y_test=rng.integers(0, 3, 40))
    return path


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` run where CUDA exists and are skipped, with the reason, elsewhere."""
    from edgeprune.runtime import cuda_available

    if cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (none here); benchmarks/gpu_check.sh runs these on a GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
