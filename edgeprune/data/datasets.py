from __future__ import annotations

import hashlib
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeprune.errors import DataError
from edgeprune.registry import Registry

DATASETS: Registry = Registry("data set")


@dataclass
class Dataset:
    """All samples of a data set, pooled (the split decides who is a member)."""

    name: str
    x: np.ndarray  # float32, (N, *in_shape), already normalised
    y: np.ndarray  # int64, (N,)
    num_classes: int
    preprocessing: dict = field(default_factory=dict)
    is_train: np.ndarray | None = None  # (N,) bool: from the file's train part (npz, cifar10), else None

    @property
    def in_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.x.shape[1:])

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.x).tobytes())
        h.update(np.ascontiguousarray(self.y).tobytes())
        return h.hexdigest()


def load_dataset(spec: str) -> Dataset:
    name, _, arg = spec.partition(":")
    loader = DATASETS.get(name)
    ds = loader(arg or None)
    _validate(ds, spec)
    return ds


def _validate(ds: Dataset, spec: str) -> None:
    spec = spec if len(spec) <= 80 else spec[:77] + "..."
    if ds.x.shape[0] != ds.y.shape[0]:
        raise DataError(f"data {spec!r}: {ds.x.shape[0]} inputs but {ds.y.shape[0]} labels")
    if len(ds) < 40:
        raise DataError(f"data {spec!r}: {len(ds)} samples is too few (need at least 40)")
    check_labels(ds.y, ds.num_classes, f"data {spec!r}")
    if not np.isfinite(ds.x).all():
        raise DataError(f"data {spec!r}: inputs contain NaN or infinity")


def check_labels(y: np.ndarray, num_classes: int, what: str, all_present: bool = False) -> None:
    """Labels are 0..K-1 and at least two classes occur (one class makes accuracy and every attack
    meaningless). ``all_present``, for files whose K is inferred from their labels (npz): every class has a
    sample, so a stray label (5000 among 0..4) is an error rather than a 5001-class model."""
    if y.min() < 0 or y.max() >= num_classes:
        bad = int(y.min()) if y.min() < 0 else int(y.max())
        raise DataError(f"{what}: labels must be 0..{num_classes - 1}, found {bad}")
    labels, counts = np.unique(y, return_counts=True)
    if labels.size < 2:
        raise DataError(f"{what}: every sample has label {int(labels[0])}; a classifier needs at least 2 classes")
    if all_present and labels.size < num_classes:
        top = ", ".join(f"{int(v)} ({int(c)} sample{'s' if c > 1 else ''})" for v, c in zip(labels[-3:][::-1], counts[-3:][::-1], strict=True))
        raise DataError(f"{what}: labels must be 0..K-1 with every class present, but only {labels.size} of the "
                        f"{num_classes} labels 0..{num_classes - 1} occur (largest: {top}); relabel the classes to 0..K-1")


def _standardise_images(x: np.ndarray) -> tuple[np.ndarray, dict]:
    """Scale to [0, 1] then per-channel standardise. x is (N, C, H, W) float32 in [0, 255] or [0, 1]."""
    scale = 255.0 if x.max() > 1.0 else 1.0
    x = x / scale
    mean = x.mean(axis=(0, 2, 3), keepdims=True)
    std = x.std(axis=(0, 2, 3), keepdims=True) + 1e-6
    prep = {"scale": scale, "mean": mean.ravel().tolist(), "std": std.ravel().tolist(), "layout": "NCHW"}
    return ((x - mean) / std).astype(np.float32), prep


def _standardise_features(x: np.ndarray) -> tuple[np.ndarray, dict]:
    mean = x.mean(axis=0, keepdims=True)
    std = x.std(axis=0, keepdims=True) + 1e-6
    return ((x - mean) / std).astype(np.float32), {"standardised": "per-feature"}


@DATASETS.register("digits")
def _digits(arg: str | None) -> Dataset:
    """scikit-learn's handwritten digits: 1,797 8x8 grey images, 10 classes (small; barely leaks)."""
    from sklearn.datasets import load_digits

    if arg:
        raise DataError("data 'digits' takes no argument")
    d = load_digits()
    x = d.images.astype(np.float32)[:, None, :, :] / 16.0
    x, prep = _standardise_images(x)
    return Dataset("digits", x, d.target.astype(np.int64), 10, prep)


def _sample_count(name: str, arg: str | None, default: int, lo: int, hi: int) -> int:
    """The N of ``name:N`` for generated data sets."""
    if not arg:
        return default
    try:
        n = int(arg)
    except ValueError:
        raise DataError(f"{name}:N needs a whole number of samples, got {arg[:40]!r}") from None
    if not lo <= n <= hi:
        raise DataError(f"{name}:N needs {lo} <= N <= {hi}, got {n}")
    return n


@DATASETS.register("purchase-synth")
def _purchase_synth(arg: str | None) -> Dataset:
    """A Purchase-100-like tabular task that leaks (see DESIGN.md): 600 features, 100 classes."""
    from sklearn.datasets import make_classification

    n = _sample_count("purchase-synth", arg, 20000, 1000, 200000)
    x, y = make_classification(
        n_samples=n, n_features=600, n_informative=50, n_redundant=0, n_classes=100,
        n_clusters_per_class=1, class_sep=3.0, random_state=0,
    )
    x, prep = _standardise_features(x.astype(np.float32))
    return Dataset(f"purchase-synth:{n}", x, y.astype(np.int64), 100, prep)


@DATASETS.register("cifar-synth")
def _cifar_synth(arg: str | None) -> Dataset:
    """CIFAR-shaped (3x32x32, 10 classes) synthetic images: class templates + noise, for shapes and speed."""
    n = _sample_count("cifar-synth", arg, 6000, 100, 100000)
    rng = np.random.default_rng(0)
    templates = rng.normal(size=(10, 3, 8, 8)).astype(np.float32)
    templates = templates.repeat(4, axis=2).repeat(4, axis=3)  # smooth 32x32 class patterns
    y = rng.integers(0, 10, n)
    x = 0.6 * templates[y] + rng.normal(size=(n, 3, 32, 32)).astype(np.float32)
    x, prep = _standardise_images((x - x.min()) / (x.max() - x.min()))
    return Dataset(f"cifar-synth:{n}", x, y.astype(np.int64), 10, prep)


class _SafeUnpickler(pickle.Unpickler):
    """CIFAR-10's python batches are pickles; allow only numpy arrays and builtin containers."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch")


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            d = _SafeUnpickler(f, encoding="bytes").load()
        data = d[b"data"] if b"data" in d else d["data"]
        labels = d[b"labels"] if b"labels" in d else d["labels"]
    except Exception as e:
        raise DataError(f"cannot read CIFAR-10 batch {path}: {type(e).__name__}: {e}") from None
    data = np.asarray(data, dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"CIFAR-10 batch {path} has data of shape {data.shape}, expected (N, 3072)")
    return data.reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)


def _read_cifar_bin(path: Path) -> tuple[np.ndarray, np.ndarray]:
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size % 3073:
        raise DataError(f"CIFAR-10 binary batch {path} is not a whole number of 3073-byte records")
    raw = raw.reshape(-1, 3073)
    return raw[:, 1:].reshape(-1, 3, 32, 32), raw[:, 0].astype(np.int64)


@DATASETS.register("cifar10")
def _cifar10(arg: str | None) -> Dataset:
    """CIFAR-10 from a directory of the python batches (data_batch_1..5, test_batch) or the .bin ones."""
    if not arg:
        raise DataError("data 'cifar10' needs a directory: cifar10:DIR")
    root = Path(arg).expanduser()
    if not root.is_dir():
        raise DataError(f"CIFAR-10 directory not found: {root}")
    for sub in (root, root / "cifar-10-batches-py", root / "cifar-10-batches-bin"):
        py = sorted(sub.glob("data_batch_[0-9]")) + sorted(sub.glob("test_batch"))
        binary = sorted(sub.glob("data_batch_[0-9].bin")) + sorted(sub.glob("test_batch.bin"))
        if py or binary:
            files = py or binary
            parts = [_read_cifar_batch(p) for p in py] if py else [_read_cifar_bin(p) for p in binary]
            break
    else:
        raise DataError(f"no CIFAR-10 batches (data_batch_N, test_batch) under {root}")
    x = np.concatenate([p[0] for p in parts]).astype(np.float32)
    y = np.concatenate([p[1] for p in parts])
    if y.max() >= 10:
        raise DataError(f"CIFAR-10 labels must be 0..9, found {int(y.max())}")
    is_train = np.concatenate([np.full(len(p[1]), not f.name.startswith("test"), bool) for f, p in zip(files, parts, strict=True)])
    x, prep = _standardise_images(x)
    return Dataset("cifar10", x, y, 10, prep, is_train)


@DATASETS.register("npz")
def _npz(arg: str | None) -> Dataset:
    """An .npz with x_train, y_train, x_test, y_test (pooled; the split decides membership)."""
    if not arg:
        raise DataError("data 'npz' needs a file: npz:FILE")
    path = Path(arg).expanduser()
    if not path.is_file():
        raise DataError(f"npz file not found: {path}")
    if not zipfile.is_zipfile(path):  # else numpy's answer to a text file is advice to load it with pickle
        raise DataError(f"{path} is not an .npz file (a zip archive of .npy arrays, as numpy.savez writes)")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in z.files]
            if missing:
                raise DataError(f"npz file {path} lacks arrays {missing} (needs x_train, y_train, x_test, y_test)")
            parts = [z["x_train"], z["x_test"]]
            if not all(np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating) for a in parts):
                raise DataError(f"npz file {path}: inputs must be real numbers, got {parts[0].dtype} / {parts[1].dtype}")
            for part in ("train", "test"):
                nx, ny = len(z[f"x_{part}"]), len(z[f"y_{part}"])
                if nx != ny:
                    raise DataError(f"npz file {path}: x_{part} holds {nx} samples but y_{part} {ny}")
            x = np.concatenate(parts).astype(np.float32)
            y = np.concatenate([z["y_train"], z["y_test"]])
            is_train = np.concatenate([np.ones(len(z["y_train"]), bool), np.zeros(len(z["y_test"]), bool)])
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"cannot read npz file {path}: {type(e).__name__}: {e}") from None
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"npz file {path}: labels must be integers, got {y.dtype}")
    if y.ndim != 1 and not (y.ndim == 2 and y.shape[1] == 1):
        raise DataError(f"npz file {path}: labels must be a vector, got shape {y.shape}")
    if len(y) == 0 or x.size == 0:
        raise DataError(f"npz file {path} holds no samples (inputs {x.shape}, labels {y.shape})")
    y = y.astype(np.int64).ravel()
    if x.ndim == 4:
        if x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):  # NHWC -> NCHW
            x = x.transpose(0, 3, 1, 2)
        x, prep = _standardise_images(np.ascontiguousarray(x))
    elif x.ndim == 3:  # (N, H, W) grey images
        x, prep = _standardise_images(x[:, None])
    elif x.ndim == 2:
        x, prep = _standardise_features(x)
    else:
        raise DataError(f"npz file {path}: inputs of shape {x.shape[1:]} are not supported")
    check_labels(y, int(y.max()) + 1, f"npz file {path}", all_present=True)
    return Dataset(f"npz:{path.name}", x, y, int(y.max()) + 1, prep, is_train)
