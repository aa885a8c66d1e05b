"""Folders of image files, as a directory or a tar archive read without extraction: ``imagefolder:PATH``
(torchvision's ImageFolder layouts) and the engine under ``cifar10-jpeg``.

Every file is decoded once (:func:`edgeprune.data.preprocess.load_image`: size cap, header check, resize +
centre crop) and the uint8 pixels are cached under :func:`cache_dir`, keyed by the source's names, sizes and
mtimes and the options. Memory is bounded: a member over ``MAX_FILE_BYTES`` is refused from its tar header
(``m.size``) or ``stat`` before a byte of it is read, an image from its header before it is decoded, and the
decoded pixels of the whole set are capped at ``MAX_DECODED_BYTES``; members are decoded as they stream by,
so no archive is ever held in memory.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from edgeprune.data import preprocess as P
from edgeprune.data.datasets import DATASETS, Dataset, _standardise_images
from edgeprune.errors import DataError

MAX_DECODED_BYTES = 2 * 2**30  # uint8 pixels of a whole set (float32 in memory is 4x that)
DEFAULT_SIZE = 32
_CACHE_VERSION = "2"
_SPLITS = {"train": True, "val": False, "test": False}

Key = tuple[str, str, str]  # (split, class, path inside the class folder)


def cache_dir() -> Path:
    """Where decoded data sets are cached: $EDGEPRUNE_CACHE_DIR, else $XDG_CACHE_HOME/edgeprune, else ~/.cache."""
    if os.environ.get("EDGEPRUNE_CACHE_DIR"):
        return Path(os.environ["EDGEPRUNE_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgeprune"


def _size_text(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def _image_suffixes() -> tuple[str, ...]:
    """Every file-name extension Pillow can open."""
    from PIL import Image

    Image.init()
    return tuple(sorted(Image.registered_extensions()))


def _files(path: Path) -> Iterator[tuple[str, int, Callable[[], bytes]]]:
    """(relative name, size, read) of every regular file, in a directory or a tar archive (one streaming
    pass; symlinks, devices and links are not files here). ``read`` is valid until the next item."""
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            if p.is_file() and not p.is_symlink():
                yield p.relative_to(path).as_posix(), p.stat().st_size, p.read_bytes
        return
    with tarfile.open(path, "r|*") as t:
        for m in t:
            if m.isfile():
                yield m.name, m.size, lambda m=m: t.extractfile(m).read(m.size)


def _scan(path: Path, classify: Callable[[str], Key | None], want: set[Key] | None,
          decode: Callable[[bytes, Key], np.ndarray]) -> dict[Key, np.ndarray | None]:
    """{key: pixels} of the image files ``classify`` recognises (only the keys in ``want`` are read and
    decoded; the others map to None). Every file's size is checked before it is read."""
    out: dict[Key, np.ndarray | None] = {}
    decoded = 0
    try:
        for rel, size, read in _files(path):
            key = classify(rel)
            if key is None:
                continue
            if want is not None and key not in want:
                out[key] = None
                continue
            if size > P.MAX_FILE_BYTES:
                raise DataError(f"image {rel} in {path} is {_size_text(size)}, over the "
                                f"{_size_text(P.MAX_FILE_BYTES)} cap for one image file (refused before reading)")
            a = decode(read(), key)
            decoded += a.nbytes
            if decoded > MAX_DECODED_BYTES:
                raise DataError(f"{path} holds more than {_size_text(MAX_DECODED_BYTES)} of decoded pixels "
                                f"({len(out) + 1} images of {'x'.join(map(str, a.shape))} so far); "
                                "choose a smaller size or a subset (n=N)")
            out[key] = a
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"cannot read archive {path}: {type(e).__name__}: {e}") from None
    return out


def _decoder(path: Path, size: int | None, grayscale: bool, exact: tuple[int, int] | None):
    def decode(data: bytes, key: Key) -> np.ndarray:
        try:
            return P.load_image(data, size, grayscale, exact=exact)
        except P.ImageRefused as e:
            raise DataError(f"cannot decode image {'/'.join(k for k in key if k)} in {path}: {e}") from None
    return decode


def take(keys: list[Key], n: int | None, classes: list[str]) -> list[Key]:
    """All keys (sorted), or a deterministic subset of n, train part first: each split gets its share of n in
    proportion to its size, spread evenly over the classes, the first files of each class in name order."""
    keys = sorted(keys)
    if n is None:
        return keys
    splits = sorted({k[0] for k in keys}, key=lambda s: (not _SPLITS.get(s, True), s))
    share = {s: round(n * sum(k[0] == s for k in keys) / len(keys)) for s in splits[1:]}
    share[splits[0]] = n - sum(share.values())
    chosen = []
    for split in splits:
        for j, cls in enumerate(classes):
            want = share[split] // len(classes) + (j < share[split] % len(classes))
            chosen += [k for k in keys if k[0] == split and k[1] == cls][:want]
    return chosen


def read_tree(path: Path, classify: Callable[[str], Key | None], n: int | None, size: int | None,
              grayscale: bool, exact: tuple[int, int] | None, check_classes: Callable[[list[str]], list[str]]):
    """(uint8 x, y, is_train, classes) of an image tree: every image, or a balanced subset of n (listed
    first, then only those read)."""
    decode = _decoder(path, size, grayscale, exact)
    images = _scan(path, classify, None if n is None else set(), decode)
    if not images:
        raise DataError(f"no image files in class folders in {path}")
    classes = check_classes(sorted({k[1] for k in images}))
    if n is not None:
        if n > len(images):
            raise DataError(f"{path} holds {len(images)} images, fewer than the {n} asked for")
        keys = take(list(images), n, classes)
        images = _scan(path, classify, set(keys), decode)
    else:
        keys = take(list(images), None, classes)
    x = np.ascontiguousarray(np.stack([images[k] for k in keys]))
    y = np.array([classes.index(k[1]) for k in keys], np.int64)
    is_train = np.array([_SPLITS.get(k[0], True) for k in keys], bool)
    return x, y, is_train, classes


def _source_key(path: Path, parts: str, is_image: Callable[[str], bool]) -> str:
    """Cache key: the archive's size and mtime, or every image file's name, size and mtime of a directory."""
    h = hashlib.sha256(f"v{_CACHE_VERSION}|{path.resolve()}|{parts}".encode())
    if path.is_file():
        st = path.stat()
        h.update(f"|{st.st_size}|{st.st_mtime_ns}".encode())
    else:
        for p in sorted(path.rglob("*")):
            if p.is_file() and is_image(p.relative_to(path).as_posix()):
                st = p.stat()
                h.update(f"|{p.relative_to(path)}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:24]


def cached(prefix: str, path: Path, parts: str, is_image, build) -> dict[str, np.ndarray]:
    """Decoded arrays from the cache, else built and written atomically: a temp file renamed into place,
    removed on any failure (a full disk only costs speed, and leaves nothing behind)."""
    cache = cache_dir() / f"{prefix}-{_source_key(path, parts, is_image)}.npz"
    if cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError, KeyError, EOFError):
            pass  # a damaged cache entry is rebuilt below
    arrays = build()
    tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, cache)
    except OSError:
        pass  # an unwritable cache only costs speed
    finally:
        tmp.unlink(missing_ok=True)
    return arrays


# ----------------------------------------------------------------------------------------------------------
# imagefolder:PATH[:OPTIONS]


def _parse_options(text: str) -> dict:
    opts: dict = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        key, eq, val = item.partition("=")
        key = key.strip().lower()
        try:
            if key in ("grayscale", "greyscale", "gray", "grey") and not eq:
                opts["grayscale"] = True
            elif key in ("size", "n") and eq:
                opts[key] = int(val)
            elif key in ("mean", "std") and eq:
                opts[key] = [float(v) for v in val.split("/")]
            else:
                raise DataError(f"unknown imagefolder option {item[:40]!r} (size=S, grayscale, mean=M/M/M, "
                                "std=S/S/S, n=N)")
        except ValueError:
            raise DataError(f"imagefolder option {item[:40]!r} needs a number") from None
    if not 4 <= opts.get("size", DEFAULT_SIZE) <= 1024:
        raise DataError(f"imagefolder option size needs 4 <= size <= 1024, got {opts['size']}")
    if opts.get("n", 40) < 40:
        raise DataError(f"imagefolder option n needs n >= 40, got {opts['n']}")
    if ("mean" in opts) != ("std" in opts):
        raise DataError("imagefolder options mean and std go together (mean=0.5/0.5/0.5,std=0.25/0.25/0.25)")
    if "std" in opts and min(opts["std"]) <= 0:
        raise DataError(f"imagefolder option std must be positive, got {opts['std']}")
    return opts


def path_and_options(arg: str, what: str) -> tuple[Path, str]:
    """``PATH[:OPTIONS]``: the options are the part after the last ':' unless the whole string is a path."""
    path = Path(arg).expanduser()
    head, sep, tail = arg.rpartition(":")
    if sep and not path.exists() and Path(head).expanduser().exists():
        return Path(head).expanduser(), tail
    if not path.exists():
        raise DataError(f"{what}: no such file or directory: {path}")
    return path, ""


def _is_image(rel: str, suffixes: tuple[str, ...]) -> bool:
    """An image file by its extension; hidden files and folders (and macOS' __MACOSX) are skipped."""
    return rel.lower().endswith(suffixes) and not any(p.startswith(".") or p == "__MACOSX" for p in rel.split("/"))


def _names(path: Path) -> list[str]:
    """Every regular file's name (a pass over an archive that reads nothing into memory)."""
    try:
        return [rel for rel, _, _ in _files(path)]
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"cannot read archive {path}: {type(e).__name__}: {e}") from None


def tree_layout(path: Path, names: list[str]):
    """(classify, split layout?, root) of an image folder: ``<class>/*`` or ``{train,val,test}/<class>/*``
    below a common root (an archive's top folder), found from the image files' names."""
    if not names:
        raise DataError(f"no image files in {path} (imagefolder reads DIR/<class>/* or DIR/train/<class>/*)")
    dirs = [rel.split("/")[:-1] for rel in names]
    root = 0
    while all(len(d) > root for d in dirs) and len({d[root] for d in dirs}) == 1 and dirs[0][root] not in _SPLITS:
        root += 1
    tops = {d[root] for d in dirs if len(d) > root}
    split_layout = "train" in tops and tops <= set(_SPLITS)
    chosen = set(names)

    def classify(rel: str) -> Key | None:
        if rel not in chosen:
            return None
        parts = rel.split("/")[root:]
        if split_layout:
            return (parts[0], parts[1], "/".join(parts[2:])) if len(parts) >= 3 else None
        return ("train", parts[0], "/".join(parts[1:])) if len(parts) >= 2 else None

    layout = "/".join(dirs[0][:root] + (["{train,val,test}"] if split_layout else []) + ["<class>", "*"])
    return classify, split_layout, layout


@DATASETS.register("imagefolder")
def _imagefolder(arg: str | None) -> Dataset:
    """Your images: imagefolder:PATH[:size=S,grayscale,mean=M/M/M,std=S/S/S,n=N], PATH a folder or .tar.gz of <class>/* or {train,val|test}/<class>/* (any classes, sizes, formats Pillow reads), resized (shorter side) and centre-cropped to S (default 32), mean / std computed on the images unless given."""
    if not arg:
        raise DataError("data 'imagefolder' needs a folder or archive: imagefolder:PATH[:size=S,grayscale]")
    path, text = path_and_options(arg, "imagefolder")
    opts = _parse_options(text)
    size, gray, n = opts.get("size", DEFAULT_SIZE), bool(opts.get("grayscale")), opts.get("n")
    channels = 1 if gray else 3
    for k in ("mean", "std"):
        if k in opts and len(opts[k]) != channels:
            raise DataError(f"imagefolder option {k} needs {channels} value(s) for "
                            f"{'grayscale' if gray else 'RGB'} images, got {len(opts[k])}")
    suffixes = _image_suffixes()

    def check_classes(found: list[str]) -> list[str]:
        if len(found) < 2:
            raise DataError(f"{path}: a classifier needs at least 2 class folders, found {len(found)}: {found} "
                            "(imagefolder reads DIR/<class>/* or DIR/train/<class>/*)")
        return found

    def build() -> dict[str, np.ndarray]:
        classify, split_layout, layout = tree_layout(path, [r for r in _names(path) if _is_image(r, suffixes)])
        x, y, is_train, classes = read_tree(path, classify, n, size, gray, None, check_classes)
        if x.max() <= 1:  # 8-bit pixels all 0 or 1: nothing to learn, and no scale to infer
            raise DataError(f"{path}: every image is black")
        return {"x": x, "y": y, "is_train": is_train, "classes": np.array(classes),
                "split_layout": np.array(split_layout), "layout": np.array(layout)}

    z = cached("imagefolder", path, f"imagefolder|{n}|{size}|{gray}", lambda r: _is_image(r, suffixes), build)
    x, classes = z["x"], [str(c) for c in z["classes"]]
    if "mean" in opts:
        prep = {"scale": 255.0, "mean": opts["mean"], "std": opts["std"], "layout": "NCHW"}
        xf, normalisation = P.normalise(x, prep), "given"
    else:
        xf, prep = _standardise_images(x.astype(np.float32))
        normalisation = "computed on all images of the data set"
    prep.update({"size": [size, size], "resize": P.RESIZE, "grayscale": gray, "normalisation": normalisation,
                 "classes": classes, "folders": str(z["layout"])})
    name = f"imagefolder:{path.name}" + (f":{text}" if text else "")
    return Dataset(name, xf, z["y"], len(classes), prep, z["is_train"] if bool(z["split_layout"]) else None)
