import datetime
import pickle

import numpy as np
import pytest

from edgeprune.data import load_dataset, make_split
from edgeprune.errors import ConfigError, DataError, UnknownNameError


def test_digits_is_images_with_ten_classes():
    ds = load_dataset("digits")
    assert ds.in_shape == (1, 8, 8)
    assert len(ds) == 1797 and ds.num_classes == 10
    assert abs(float(ds.x.mean())) < 1e-4  # standardised


def test_purchase_synth_size_and_classes():
    ds = load_dataset("purchase-synth:2000")
    assert ds.x.shape == (2000, 600) and ds.num_classes == 100
    assert ds.fingerprint() == load_dataset("purchase-synth:2000").fingerprint()


def test_cifar10_python_batches(cifar_dir):
    ds = load_dataset(f"cifar10:{cifar_dir}")
    assert ds.in_shape == (3, 32, 32) and len(ds) == 90 and ds.num_classes == 10


def test_cifar10_binary_batches(tmp_path):
    rng = np.random.default_rng(1)
    for name in ("data_batch_1.bin", "test_batch.bin"):
        rec = np.concatenate([rng.integers(0, 10, (25, 1)), rng.integers(0, 256, (25, 3072))], 1).astype(np.uint8)
        rec.tofile(tmp_path / name)
    ds = load_dataset(f"cifar10:{tmp_path}")
    assert len(ds) == 50 and ds.in_shape == (3, 32, 32)


def test_cifar10_refuses_arbitrary_pickles(tmp_path):
    with open(tmp_path / "data_batch_1", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1], b"x": datetime.date(2020, 1, 1)}, f)
    with pytest.raises(DataError, match="refusing"):
        load_dataset(f"cifar10:{tmp_path}")


def test_npz_tabular(npz_file):
    ds = load_dataset(f"npz:{npz_file}")
    assert ds.in_shape == (12,) and len(ds) == 120 and ds.num_classes == 3


def test_npz_nhwc_images_become_nchw(tmp_path):
    rng = np.random.default_rng(0)
    p = tmp_path / "img.npz"
    np.savez(p, x_train=rng.integers(0, 255, (40, 16, 16, 3)), y_train=rng.integers(0, 2, 40),
             x_test=rng.integers(0, 255, (20, 16, 16, 3)), y_test=rng.integers(0, 2, 20))
    assert load_dataset(f"npz:{p}").in_shape == (3, 16, 16)


@pytest.mark.parametrize(
    "spec,err",
    [("imagenet", UnknownNameError), ("npz:/nonexistent.npz", DataError), ("cifar10", DataError),
     ("purchase-synth:abc", DataError), ("cifar10:/nonexistent", DataError)],
)
def test_bad_specs(spec, err):
    with pytest.raises(err):
        load_dataset(spec)


def test_npz_missing_arrays(tmp_path):
    p = tmp_path / "bad.npz"
    np.savez(p, x_train=np.zeros((50, 3)), y_train=np.zeros(50, int))
    with pytest.raises(DataError, match="lacks arrays"):
        load_dataset(f"npz:{p}")


def test_split_is_disjoint_deterministic_and_seeded():
    ds = load_dataset("digits")
    a, b, c = make_split(ds, 0), make_split(ds, 0), make_split(ds, 1)
    assert a.hash() == b.hash() and a.hash() != c.hash()
    sets = [set(a.members.tolist()), set(a.nonmembers.tolist()), set(a.pool.tolist())]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert sum(map(len, sets)) == len(ds)
    assert len(sets[0]) == len(sets[1]) == int(len(ds) * 0.25)
    with pytest.raises(ConfigError):
        make_split(ds, 0, member_fraction=0.7)


def test_cifar_synth_has_cifar_shapes():
    ds = load_dataset("cifar-synth:300")
    assert ds.in_shape == (3, 32, 32) and len(ds) == 300 and ds.num_classes == 10
    assert ds.fingerprint() == load_dataset("cifar-synth:300").fingerprint()
