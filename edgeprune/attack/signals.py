"""Per-sample signals, computed once from a predict function and cached; attacks are functions of them.

A predictor maps inputs to logits: a torch module, an onnxruntime session (so the audit sees the deployed
numerics, int8 included) or, later, a remote runner. Nothing here sees training code.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

Predict = Callable[[np.ndarray], np.ndarray]  # inputs -> logits


@dataclass
class Predictor:
    predict: Predict
    key: str  # identifies the model for the signal cache (artifact sha256, or how a shadow was made)


def torch_predictor(model, key: str, batch_size: int = 512, runtime=None) -> Predictor:
    """Logits of a torch module computed on ``runtime``'s device (the CPU by default; a GPU scores a copy of
    the module, the caller's stays where it is). A GPU's logits differ from the CPU's in the last bits: the
    cache key says which device computed them."""
    import copy

    from edgeprune.runtime import Runtime

    rt = runtime or Runtime.cpu()
    model = model.eval() if not rt.is_cuda else copy.deepcopy(model).eval().to(rt.torch_device())

    def predict(x: np.ndarray) -> np.ndarray:
        return np.concatenate([b.float().cpu().numpy() for b in forward_batches(model, x, batch_size, rt)])

    return Predictor(predict, key if not rt.is_cuda else f"{key}-cuda")


def forward_batches(model, x: np.ndarray, batch_size: int, runtime) -> list:
    """The module's outputs on ``x`` in batches, as tensors on the runtime's device (inputs moved there once)."""
    import torch

    with torch.no_grad(), runtime.autocast():
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(runtime.torch_device())
        return [model(t[i : i + batch_size]) for i in range(0, len(t), batch_size)]


def onnx_predictor(path: str | Path, key: str | None = None, threads: int = 1, batch_size: int = 512,
                   numerics: str = "cpu") -> Predictor:
    """``numerics``: ``cpu`` (this CPU's onnxruntime kernels) or ``reference`` (QDQ dequantized to fp32, the
    same on every machine); see edgeprune.quant.numerics."""
    from edgeprune.quant.numerics import session
    from edgeprune.run import sha256_file

    sess = session(path, numerics, threads)
    name = sess.get_inputs()[0].name

    def predict(x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        return np.concatenate([sess.run(None, {name: x[i : i + batch_size]})[0] for i in range(0, len(x), batch_size)])

    return Predictor(predict, key or f"onnx-{sha256_file(Path(path))[:16]}" + ("" if numerics == "cpu" else f"-{numerics}"))


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def softmax(logits: np.ndarray) -> np.ndarray:
    return np.exp(log_softmax(logits))


def true_class_logit_gap(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """LiRA's logit-scaled confidence log(p_y / (1 - p_y)), computed stably from logits (last axis)."""
    logits = np.asarray(logits, dtype=np.float64)
    idx = np.expand_dims(np.broadcast_to(labels, logits.shape[:-1]), -1)
    zy = np.take_along_axis(logits, idx, -1)[..., 0]
    others = logits.copy()
    np.put_along_axis(others, idx, -np.inf, -1)
    m = others.max(-1, keepdims=True)
    lse = m[..., 0] + np.log(np.exp(others - m).sum(-1))
    return zy - lse


def sensitivity(predict: Predict, x: np.ndarray, draws: int = 8, eps: float = 0.01, seed: int = 0) -> np.ndarray:
    """SAMIA's sensitivity vector: mean over draws of |softmax(x + eps*u) - softmax(x)| / eps, u ~ N(0, I)."""
    rng = np.random.default_rng(seed)
    base = softmax(predict(x).astype(np.float64))
    acc = np.zeros_like(base)
    for _ in range(draws):
        u = rng.standard_normal(x.shape).astype(np.float32)
        acc += np.abs(softmax(predict(x + eps * u).astype(np.float64)) - base) / eps
    return acc / draws


@dataclass
class Signals:
    """What one model outputs on one sample set (with labels). Derived signals are computed lazily."""

    logits: np.ndarray  # (N, K) float64
    labels: np.ndarray  # (N,)
    sens: np.ndarray | None = None  # (N, K) sensitivity, when an attack asked for it

    @cached_property
    def log_probs(self) -> np.ndarray:
        return log_softmax(self.logits)

    @cached_property
    def probs(self) -> np.ndarray:
        return np.exp(self.log_probs)

    @cached_property
    def loss(self) -> np.ndarray:
        return -self.log_probs[np.arange(len(self.labels)), self.labels]

    @cached_property
    def true_prob(self) -> np.ndarray:
        return self.probs[np.arange(len(self.labels)), self.labels]

    @cached_property
    def phi(self) -> np.ndarray:
        return true_class_logit_gap(self.logits, self.labels)

    @cached_property
    def correct(self) -> np.ndarray:
        return self.logits.argmax(1) == self.labels


class SignalCache:
    """Signals on disk (npz, no pickles), keyed by model key + sample set + what was computed.

    ``stage``: where new entries are written instead of ``root`` (a finished run's cache is read in place and
    added to through the run's staged update, so a failed audit leaves the run as it was); entries are read
    from ``stage`` first, then ``root``. Each entry is written to a fresh temp name and renamed; a write that
    fails (a full disk) leaves no temp file behind."""

    def __init__(self, root: str | Path | None, stage: str | Path | None = None):
        self.root = Path(root) if root else None
        self.stage = Path(stage) if stage and root else None
        self.hits = 0
        self.misses = 0

    def _name(self, model_key: str, sample_key: str, with_sens: bool) -> str:
        return hashlib.sha256(f"{model_key}|{sample_key}|{with_sens}".encode()).hexdigest()[:24] + ".npz"

    def _find(self, name: str) -> Path | None:
        for d in (self.stage, self.root):
            if d is not None and (d / name).is_file():
                return d / name
        return None

    def path(self, model_key: str, sample_key: str, with_sens: bool) -> Path | None:
        """The entry's file: where it is (staged first), else where ``put`` would write it (None without a
        root). The benchmarks name kept signals by it."""
        if self.root is None:
            return None
        name = self._name(model_key, sample_key, with_sens)
        return self._find(name) or (self.stage or self.root) / name

    def get(self, model_key: str, sample_key: str, with_sens: bool) -> Signals | None:
        if self.root is None:
            return None
        p = self._find(self._name(model_key, sample_key, with_sens))
        if p is None and not with_sens:  # an entry with sensitivity serves too
            p = self._find(self._name(model_key, sample_key, True))
        if p is None:
            return None
        with np.load(p, allow_pickle=False) as z:
            self.hits += 1
            return Signals(z["logits"], z["labels"], z["sens"] if "sens" in z.files else None)

    def put(self, model_key: str, sample_key: str, sig: Signals) -> None:
        if self.root is None:
            return
        d = self.stage or self.root
        p = d / self._name(model_key, sample_key, sig.sens is not None)
        d.mkdir(parents=True, exist_ok=True)
        arrays = {"logits": sig.logits, "labels": sig.labels}
        if sig.sens is not None:
            arrays["sens"] = sig.sens
        fd, tmp = tempfile.mkstemp(dir=d, prefix=f".{p.stem}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, p)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def signals(self, pred: Predictor, x: np.ndarray, y: np.ndarray, sample_key: str, with_sens=False,
                seed: int = 0) -> Signals:
        got = self.get(pred.key, sample_key, with_sens)
        if got is not None:
            return got
        self.misses += 1
        logits = pred.predict(x).astype(np.float64)
        sens = sensitivity(pred.predict, x, seed=seed) if with_sens else None
        sig = Signals(logits, np.asarray(y), sens)
        self.put(pred.key, sample_key, sig)
        return sig


def sample_key(idx: np.ndarray, tag: str) -> str:
    return f"{tag}-{hashlib.sha256(np.ascontiguousarray(idx, dtype=np.int64).tobytes()).hexdigest()[:16]}"
