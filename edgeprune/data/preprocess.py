"""Image preprocessing shared by training and deployment: one file, numpy + Pillow only.

The image readers (``imagefolder``, ``cifar10-jpeg``) decode every file with :func:`load_image`, and the
Jetson bundle ships this very file beside ``run_onnx.py``, which calls :func:`load_image` and
:func:`normalise` with the run's ``preprocessing.json``: what runs on the device sees what the model saw.
It imports nothing from edgeprune, so it runs on the device without it.

Memory is bounded before anything is decoded: an encoded file larger than ``MAX_FILE_BYTES`` is never read,
and an image whose header declares more than ``MAX_PIXELS`` pixels (or, with ``exact``, any other size)
is refused from its header, before Pillow decodes it.
"""

from __future__ import annotations

import io
import warnings

import numpy as np

MAX_FILE_BYTES = 64 * 2**20  # one encoded image file; a photo from a 50-megapixel camera is about 25 MB
MAX_PIXELS = 40_000_000  # pixels one image may declare in its header (decoded RGB: 120 MB)
RESIZE = "shorter side to size (Pillow bilinear, reducing_gap None), then centre crop to size x size"


class ImageRefused(ValueError):
    """An image that is not decoded: unreadable, too large, or not the size the data set requires."""


def load_image(src, size: int | None, grayscale: bool, exact: tuple[int, int] | None = None,
               max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """One image (a path or encoded bytes) as uint8 (C, size, size): C is 1 (grayscale) or 3 (RGB).

    ``size`` None keeps the image's own size (then ``exact`` should say which). The header is checked
    before decoding: ``exact`` (width, height) must match, otherwise width x height <= ``max_pixels``.
    """
    from PIL import Image, UnidentifiedImageError

    if isinstance(src, (bytes, bytearray, memoryview)):
        src = io.BytesIO(src)
    else:
        with open(src, "rb"):  # a missing or unreadable file is an OSError here, not Pillow's guess
            pass
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # MAX_PIXELS is lower
            with Image.open(src) as im:
                w, h = im.size
                if exact is not None and (w, h) != tuple(exact):
                    raise ImageRefused(f"{w}x{h} pixels declared, expected {exact[0]}x{exact[1]} "
                                       "(refused before decoding)")
                if w * h > max_pixels:
                    raise ImageRefused(f"{w}x{h} pixels declared, over the cap of {max_pixels:,} "
                                       "(refused before decoding)")
                im = im.convert("L" if grayscale else "RGB")
    except ImageRefused:
        raise
    except Image.DecompressionBombError as e:
        raise ImageRefused(f"a decompression bomb, refused by Pillow before decoding ({e})") from None
    except UnidentifiedImageError:
        raise ImageRefused("not an image file Pillow can read") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise ImageRefused(f"{type(e).__name__}: {e}") from None
    if size is not None:
        im = resize_crop(im, size)
    a = np.asarray(im, np.uint8)
    return np.ascontiguousarray(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))  # C order: same sums


def resize_crop(im, size: int):
    """Shorter side to ``size`` (bilinear), then the centre ``size`` x ``size`` (torchvision's
    Resize(size) + CenterCrop(size)). An image already size x size is kept as it is."""
    from PIL import Image

    w, h = im.size
    if (w, h) == (size, size):
        return im
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    im = im.resize((nw, nh), Image.BILINEAR)
    left, top = (nw - size) // 2, (nh - size) // 2
    return im.crop((left, top, left + size, top + size))


def normalise(x: np.ndarray, prep: dict) -> np.ndarray:
    """uint8 (N, C, H, W) -> float32 ``(x / scale - mean) / std`` per channel, as the model was trained."""
    mean = np.asarray(prep["mean"], np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(prep["std"], np.float32).reshape(1, -1, 1, 1)
    return ((x.astype(np.float32) / np.float32(prep["scale"]) - mean) / std).astype(np.float32)


def preprocess_files(paths, prep: dict) -> np.ndarray:
    """Image files -> the float32 batch the model takes, with a run's ``preprocessing`` dict."""
    x = []
    for p in paths:
        try:
            x.append(load_image(p, prep["size"][0], bool(prep.get("grayscale"))))
        except ImageRefused as e:
            raise ImageRefused(f"{p}: {e}") from None
        except (FileNotFoundError, IsADirectoryError, PermissionError) as e:
            raise ImageRefused(f"{p}: {e.strerror}") from None
    return normalise(np.stack(x), prep)


def classify(run, x: np.ndarray, batch: int | None, classes: list[str] | None, files, top: int = 3) -> list[dict]:
    """Top classes of each row of ``x``: ``run(batch array) -> logits``, ``batch`` the model's fixed batch
    size (the last batch zero-padded) or None; softmax probabilities, logits kept for checking."""
    batch = batch or len(x)
    logits = []
    for i in range(0, len(x), batch):
        part = x[i : i + batch]
        pad = np.zeros((batch - len(part), *x.shape[1:]), x.dtype)
        logits.append(np.asarray(run(np.concatenate([part, pad])), np.float64)[: len(part)])
    z = np.concatenate(logits)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    classes = classes or [str(k) for k in range(p.shape[1])]
    return [{"file": str(f), "logits": zi.tolist(),
             "top": [{"class": classes[k], "p": round(float(pi[k]), 6)} for k in np.argsort(-pi)[:top]]}
            for f, zi, pi in zip(files, z, p, strict=True)]
