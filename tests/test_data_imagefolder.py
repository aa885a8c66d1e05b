"""imagefolder:PATH (issue 26 item 1): torchvision's layouts, mixed sizes and formats, options, the cache, and
the preprocessing that deployment repeats exactly."""

import tarfile
from pathlib import Path

import numpy as np
import pytest

from edgeprune.data import DATASETS, load_dataset
from edgeprune.data import preprocess as P
from edgeprune.errors import DataError

FORMATS = (("jpg", "JPEG"), ("png", "PNG"), ("bmp", "BMP"), ("webp", "WEBP"), ("tif", "TIFF"), ("gif", "GIF"))


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEPRUNE_CACHE_DIR", str(tmp_path / "cache"))


def image_folder(root: Path, classes=("cat", "dog", "owl"), per_class=16, splits=None) -> Path:
    """Class c drawn at brightness 40 + 80 * c, sizes from 20x14 to 61x47, every format Pillow writes here;
    ``splits`` {"train": n, "val": m} puts them under split folders."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (splits or {"": per_class}).items():
        for c, cls in enumerate(classes):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                w, h = 20 + (i * 7) % 42, 14 + (i * 5) % 34
                px = np.clip(40 + 80 * c + rng.integers(-8, 9, (h, w, 3)), 0, 255).astype(np.uint8)
                ext, fmt = FORMATS[i % len(FORMATS)]
                im = Image.fromarray(px)
                (im.convert("P") if fmt == "GIF" else im).save(d / f"img{i:03d}.{ext}", fmt)
    (root / (next(iter(splits)) if splits else "") / classes[0] / "notes.txt").write_text("not an image")
    (root / (next(iter(splits)) if splits else "") / classes[0] / ".hidden.jpg").write_bytes(b"macOS junk")
    return root


def test_class_folders_of_mixed_sizes_and_formats(tmp_path):
    root = image_folder(tmp_path / "pets")
    ds = load_dataset(f"imagefolder:{root}")
    assert ds.in_shape == (3, 32, 32) and len(ds) == 48 and ds.num_classes == 3 and ds.is_train is None
    assert ds.preprocessing["classes"] == ["cat", "dog", "owl"] and ds.preprocessing["size"] == [32, 32]
    assert ds.name == "imagefolder:pets"
    np.testing.assert_array_equal(np.bincount(ds.y), [16, 16, 16])
    # labels follow the folders: brightness 40 + 80 * class after undoing the normalisation
    px = ds.x * np.array(ds.preprocessing["std"])[:, None, None] + np.array(ds.preprocessing["mean"])[:, None, None]
    np.testing.assert_allclose(px.mean(axis=(1, 2, 3)) * 255, 40 + 80 * ds.y, atol=4)
    assert abs(float(ds.x.mean())) < 1e-3 and abs(float(ds.x.std()) - 1) < 1e-3  # computed on the images


def test_split_layout_in_an_archive_agrees_with_the_folder_and_is_cached(tmp_path):
    root = image_folder(tmp_path / "set", splits={"train": 10, "val": 4})
    arc = tmp_path / "set.tgz"
    with tarfile.open(arc, "w:gz", compresslevel=1) as t:
        t.add(root, "myset")  # an archive's top folder is found and skipped
    a, b = load_dataset(f"imagefolder:{root}"), load_dataset(f"imagefolder:{arc}")
    assert a.fingerprint() == b.fingerprint() and len(a) == 42
    assert a.is_train.sum() == 30 and b.preprocessing["folders"] == "myset/{train,val,test}/<class>/*"
    assert len(list((tmp_path / "cache").glob("imagefolder-*.npz"))) == 2
    assert load_dataset(f"imagefolder:{arc}").fingerprint() == b.fingerprint()  # from the cache: same numbers


def test_options_size_grayscale_mean_std_and_subset(tmp_path):
    root = image_folder(tmp_path / "p")
    ds = load_dataset(f"imagefolder:{root}:size=16,grayscale,mean=0.5,std=0.25")
    assert ds.in_shape == (1, 16, 16) and ds.preprocessing["grayscale"] is True
    assert ds.preprocessing["normalisation"] == "given" and ds.preprocessing["mean"] == [0.5]
    raw = (ds.x * 0.25 + 0.5) * 255  # given mean / std: exactly (x / 255 - 0.5) / 0.25
    np.testing.assert_allclose(raw, np.round(raw), atol=1e-3)
    sub = load_dataset(f"imagefolder:{root}:n=42")
    assert len(sub) == 42 and np.bincount(sub.y).tolist() == [14, 14, 14]


def test_deployment_preprocessing_repeats_training_exactly(tmp_path):
    root = image_folder(tmp_path / "p")
    ds = load_dataset(f"imagefolder:{root}:size=24")
    files = sorted(root.rglob("img*"))
    x = P.preprocess_files(files, ds.preprocessing)
    assert x.dtype == np.float32 and x.shape == (48, 3, 24, 24)
    # the data set is sorted by (class, file name): the same order as sorted paths
    np.testing.assert_array_equal(x, ds.x)


def test_resize_is_shorter_side_then_centre_crop():
    from PIL import Image

    a = np.zeros((40, 80, 3), np.uint8)
    a[:, 20:60] = 255  # a white centre band half as wide as the image
    out = P.resize_crop(Image.fromarray(a), 20)
    assert out.size == (20, 20)
    assert np.asarray(out)[:, 1:-1].min() == 255  # 80x40 -> 40x20, the centre 20x20 is the white band


@pytest.mark.parametrize("opts,msg", [
    ("size=2", "4 <= size"), ("colour", "unknown imagefolder option"), ("mean=0.5/0.5/0.5", "go together"),
    ("size=big", "needs a number"), ("mean=0.5,std=0.2", "needs 3 value"), ("n=5", "n >= 40"),
])
def test_bad_options(tmp_path, opts, msg):
    root = image_folder(tmp_path / "p", per_class=2)
    with pytest.raises(DataError, match=msg):
        load_dataset(f"imagefolder:{root}:{opts}")


def test_layout_errors(tmp_path):
    from PIL import Image

    (tmp_path / "one" / "cat").mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (8, 8)).save(tmp_path / "one" / "cat" / f"{i}.png")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "x.txt").write_text("hi")
    for spec, msg in [("imagefolder", "needs a folder"), (f"imagefolder:{tmp_path / 'nope'}", "no such file"),
                      (f"imagefolder:{tmp_path / 'one'}", "no image files in class folders"),
                      (f"imagefolder:{tmp_path / 'empty'}", "no image files")]:
        with pytest.raises(DataError, match=msg):
            load_dataset(spec)


def test_imagefolder_is_listed_with_its_default_size():
    doc = DATASETS.get("imagefolder").__doc__
    assert "default 32" in doc and "grayscale" in doc
