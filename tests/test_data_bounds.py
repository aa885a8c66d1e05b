"""Hostile image data: archive bombs, pixel bombs and broken npz files are refused in one line (exit 2) with
memory bounded, measured as the reader process's peak RSS (issue 25 item 5, issue 26 item 4)."""

import gzip
import io
import os
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from edgeprune.data import load_dataset
from edgeprune.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
RSS_CAP_KB = 1_000_000  # 1 GB


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEPRUNE_CACHE_DIR", str(tmp_path / "cache"))


def _jpeg(w=32, h=32, value=100) -> bytes:
    from PIL import Image

    b = io.BytesIO()
    Image.fromarray(np.full((h, w, 3), value, np.uint8)).save(b, "JPEG", quality=90)
    return b.getvalue()


def _declare_jpeg(data: bytes, w: int, h: int) -> bytes:
    """The same JPEG with its frame header (SOF0) declaring w x h: the file stays a few hundred bytes."""
    i = data.index(b"\xff\xc0")
    return data[: i + 5] + h.to_bytes(2, "big") + w.to_bytes(2, "big") + data[i + 9 :]


def _declare_png(w: int, h: int) -> bytes:
    """A PNG whose IHDR declares w x h (CRC recomputed), with one tiny IDAT: a pixel bomb of 100 bytes."""
    from PIL import Image

    b = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(b, "PNG")
    data = bytearray(b.getvalue())
    i = data.index(b"IHDR")
    data[i + 4 : i + 12] = w.to_bytes(4, "big") + h.to_bytes(4, "big")
    data[i + 17 : i + 21] = zlib.crc32(bytes(data[i : i + 17])).to_bytes(4, "big")
    return bytes(data)


def _tar_members(extra: dict[str, bytes] | None = None) -> bytes:
    """An uncompressed tar (without its end blocks) of a valid 10-class tree, 4 train + 1 test per class."""
    buf = io.BytesIO()
    t = tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT)
    files = {f"{s}/{c}/{i:04d}.jpg": _jpeg(value=20 * k) for k, c in enumerate(CLASSES)
             for s, n in (("train", 4), ("test", 1)) for i in range(n)}
    for name, data in {**files, **(extra or {})}.items():
        info = tarfile.TarInfo(name)
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    return buf.getvalue()  # read before close(): no end-of-archive blocks yet


def _zero_bomb(path: Path, name: str, size: int) -> Path:
    """A .tar.gz whose member ``name`` is ``size`` bytes of zeros, built cheaply (no 2 GiB compressed):
    after a full flush a deflate block holds no reference to earlier data, so the block that one MiB of
    zeros compresses to is written size / 1 MiB times; the gzip trailer's CRC is computed alongside."""
    info = tarfile.TarInfo(name)
    info.size = size
    head, tail, chunk = _tar_members() + info.tobuf(tarfile.GNU_FORMAT), bytes(-size % 512 + 1024), bytes(2**20)
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    parts = [z.compress(head) + z.flush(zlib.Z_FULL_FLUSH)]
    blocks = [z.compress(chunk) + z.flush(zlib.Z_FULL_FLUSH) for _ in range(3)]
    assert blocks[1] == blocks[2]  # zlib is deterministic: the steady-state block repeats
    end = z.compress(tail) + z.flush(zlib.Z_FINISH)
    crc = zlib.crc32(head)
    with open(path, "wb") as f:
        f.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + parts[0] + blocks[0] + blocks[1])
        for _ in range(size // 2**20 - 2):
            f.write(blocks[1])
        for _ in range(size // 2**20):
            crc = zlib.crc32(chunk, crc)
        crc = zlib.crc32(tail, crc)
        f.write(end + crc.to_bytes(4, "little") + ((len(head) + size + len(tail)) % 2**32).to_bytes(4, "little"))
    return path


# the reader alone in a child (no torch import: a second, not ten): a UserError is one line on stderr, exit 2
_READER = ("import sys\nfrom edgeprune.data import load_dataset\nfrom edgeprune.errors import UserError\n"
           "try:\n    load_dataset(sys.argv[1])\nexcept UserError as e:\n    print(f'error: {e}', file=sys.stderr)\n"
           "    sys.exit(2)\n")


# A child's ru_maxrss counts the memory of the process it was forked from up to its exec (Linux carries the
# old address space's high-water mark over exec), so measured straight from pytest it would be pytest's own
# peak. A small launcher in between forks the reader and reports that child's peak alone.
_LAUNCHER = ("import os, resource, subprocess, sys\n"
             "code = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
             "sys.exit(code)\n")


def _run_reader(spec: str, cli: bool = False) -> tuple[int, str, int]:
    """``load_dataset(SPEC)`` or, with ``cli``, ``edgeprune inspect mlp --data SPEC`` in a child process:
    (exit code, stderr, peak RSS in KB of that child alone)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    cmd = ["-m", "edgeprune.cli", "inspect", "mlp", "--data", spec] if cli else ["-c", _READER, spec]
    p = subprocess.run([sys.executable, "-c", _LAUNCHER, sys.executable, *cmd], cwd=ROOT, env=env,
                       capture_output=True, text=True)
    return p.returncode, p.stderr, int(p.stdout.split()[-1])


def _one_line_exit_2(code: int, err: str, *needles: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1, (code, err[-2000:])
    for n in needles:
        assert n in lines[0], lines[0]


def test_a_2gib_member_of_zeros_is_refused_from_its_tar_header_under_1gb(tmp_path):
    arc = _zero_bomb(tmp_path / "bomb.tar.gz", "train/cat/bomb.jpg", 2**31)
    assert arc.stat().st_size < 4 * 2**20
    code, err, rss = _run_reader(f"cifar10-jpeg:{arc}", cli=True)  # the whole command: torch and all
    _one_line_exit_2(code, err, "train/cat/bomb.jpg", "2.0 GiB", "refused before reading")
    assert rss < RSS_CAP_KB, f"peak RSS {rss / 1e6:.2f} GB"


def test_a_huge_file_in_a_directory_is_refused_before_reading(tmp_path):
    for c in ("cat", "dog"):
        (tmp_path / "train" / c).mkdir(parents=True)
        for i in range(3):
            (tmp_path / "train" / c / f"{i}.jpg").write_bytes(_jpeg())
    with open(tmp_path / "train" / "cat" / "bomb.jpg", "wb") as f:
        f.truncate(2**31)  # sparse: costs no disk
    code, err, rss = _run_reader(f"imagefolder:{tmp_path}")
    _one_line_exit_2(code, err, "bomb.jpg", "2.0 GiB")
    assert rss < RSS_CAP_KB, f"peak RSS {rss / 1e6:.2f} GB"


def test_a_jpeg_declaring_9500x9500_is_refused_from_its_header_under_1gb(tmp_path):
    bomb = _declare_jpeg(_jpeg(), 9500, 9500)
    arc = tmp_path / "c.tar.gz"
    arc.write_bytes(gzip.compress(_tar_members({"train/cat/big.jpg": bomb}) + bytes(1024), 1))
    code, err, rss = _run_reader(f"cifar10-jpeg:{arc}")
    _one_line_exit_2(code, err, "train/cat/big.jpg", "9500x9500", "expected 32x32")
    assert rss < RSS_CAP_KB, f"peak RSS {rss / 1e6:.2f} GB"
    # imagefolder takes any size, up to a pixel cap checked on the header
    code, err, rss = _run_reader(f"imagefolder:{arc}")
    _one_line_exit_2(code, err, "cat/big.jpg", "9500x9500", "refused before decoding")
    assert rss < RSS_CAP_KB, f"peak RSS {rss / 1e6:.2f} GB"


def test_a_png_declaring_30000x30000_is_one_line_exit_2(tmp_path):
    arc = tmp_path / "c.tar.gz"
    arc.write_bytes(gzip.compress(_tar_members({"test/dog/bomb.png": _declare_png(30000, 30000)}) + bytes(1024)))
    for spec in (f"cifar10-jpeg:{arc}", f"imagefolder:{arc}"):
        code, err, rss = _run_reader(spec)
        _one_line_exit_2(code, err, "dog/bomb.png", "decompression bomb", "900000000 pixels")
        assert rss < RSS_CAP_KB


def test_pixel_bombs_in_process_name_the_file(tmp_path):
    """The same refusals, in process (no CLI): DataError, one line, the decompression bomb named."""
    tree = tmp_path / "t"
    for c in ("a", "b"):
        (tree / c).mkdir(parents=True)
        for i in range(25):
            (tree / c / f"{i}.jpg").write_bytes(_jpeg(40, 30, 60 + 80 * (c == "b")))
    (tree / "a" / "bomb.png").write_bytes(_declare_png(100_000, 100_000))  # over Pillow's own bomb limit
    with pytest.raises(DataError, match=r"a/bomb.png .*decompression bomb") as e:
        load_dataset(f"imagefolder:{tree}")
    assert "\n" not in str(e.value)


# ---- npz and cifar10-jpeg lines (issue 25 items 6 / 7, issue 26 item 4) -----------------------------------


def test_npz_that_is_not_a_zip_is_named_as_such_never_advice_to_unpickle(tmp_path):
    text = tmp_path / "passwd"
    text.write_text("root:x:0:0:root:/root:/bin/bash\n")
    for path in (text, Path("/etc/passwd")):
        with pytest.raises(DataError) as e:
            load_dataset(f"npz:{path}")
        msg = str(e.value)
        assert "not an .npz file" in msg and "pickle" not in msg.lower() and "\n" not in msg


def test_npz_with_mismatched_train_lengths_is_named_as_such(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "bad.npz"
    np.savez(path, x_train=rng.normal(size=(80, 5)), y_train=rng.integers(0, 3, 1),
             x_test=rng.normal(size=(40, 5)), y_test=rng.integers(0, 3, 40))
    with pytest.raises(DataError, match=r"x_train holds 80 samples but y_train 1"):
        load_dataset(f"npz:{path}")
    np.savez(path, x_train=rng.normal(size=(80, 5)), y_train=rng.integers(0, 3, 80),
             x_test=rng.normal(size=(40, 5)), y_test=rng.integers(0, 3, 39))
    with pytest.raises(DataError, match=r"x_test holds 40 samples but y_test 39"):
        load_dataset(f"npz:{path}")


def _tree(root: Path, classes: list[str]) -> Path:
    for split, n in (("train", 4), ("test", 1)):
        for k, c in enumerate(classes):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                (root / split / c / f"{i:04d}.jpg").write_bytes(_jpeg(value=20 * k))
    return root


@pytest.mark.parametrize("classes", [CLASSES[:9], CLASSES + ["zebra"]])
def test_cifar10_jpeg_refuses_9_classes_like_11(tmp_path, classes):
    tree = _tree(tmp_path / "t", classes)
    with pytest.raises(DataError, match=f"expected the 10 CIFAR-10 class folders, found {len(classes)}"):
        load_dataset(f"cifar10-jpeg:{tree}")


def test_a_failed_cache_write_leaves_no_temp_file(tmp_path, monkeypatch):
    tree = _tree(tmp_path / "t", CLASSES)

    def full_disk(f, **arrays):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", full_disk)
    ds = load_dataset(f"cifar10-jpeg:{tree}")  # an unwritable cache only costs speed
    assert len(ds) == 50
    assert list((tmp_path / "cache").iterdir()) == []
