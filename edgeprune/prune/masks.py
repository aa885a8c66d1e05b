"""Weight masks for the sparsity patterns that keep a layer's shape: unstructured magnitude, N:M (2:4) and
blocks. Masks are stored in plans bit-packed (numpy packbits + base64), never pickled.

Conventions: a Linear weight is [out, in]; a Conv2d weight [out, in, kh, kw] is viewed as [out, in*kh*kw]
for blocks (the implicit-GEMM layout the block-sparse kernels use) and grouped along input channels at each
(out, kh, kw) position for N:M (the layout TensorRT's sparse tensor cores require).
"""

from __future__ import annotations

import base64
import fnmatch

import numpy as np
import torch
from torch import nn

from edgeprune.errors import ConfigError


def prunable_weights(model: nn.Module, exclude: list[str] = ()) -> dict[str, nn.Parameter]:
    """``name.weight`` of every Linear and non-depthwise Conv2d, except names matching ``exclude`` globs."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.groups == 1):
            if not any(fnmatch.fnmatch(name, pat) for pat in exclude):
                out[f"{name}.weight"] = m.weight
    return out


def _check(sparsity: float) -> None:
    if not 0.0 < sparsity < 1.0:
        raise ConfigError(f"sparsity must be in (0, 1), got {sparsity}")


def unstructured(model: nn.Module, sparsity: float, scope: str = "global", exclude: list[str] = ()) -> dict:
    """Zero the smallest-magnitude weights: ``sparsity`` of all prunable weights (global) or of each layer."""
    _check(sparsity)
    weights = prunable_weights(model, exclude)
    if scope == "global":
        return _split_keep({n: w.detach().abs() for n, w in weights.items()}, sparsity)
    if scope != "layer":
        raise ConfigError(f"scope must be global or layer, got {scope!r}")
    masks = {}
    for n, w in weights.items():
        a = w.detach().abs().flatten()
        k = int(round(sparsity * a.numel()))
        order = torch.argsort(a, stable=True)
        m = torch.ones_like(a, dtype=torch.bool)
        m[order[:k]] = False
        masks[n] = m.view_as(w)
    return masks


def n_m(model: nn.Module, n: int = 2, m: int = 4, exclude: list[str] = ()) -> tuple[dict, dict]:
    """Keep the ``n`` largest of every ``m`` consecutive input weights. Returns (masks, skipped reasons)."""
    if not 0 < n < m:
        raise ConfigError(f"N:M needs 0 < N < M, got {n}:{m}")
    masks, skipped = {}, {}
    for name, w in prunable_weights(model, exclude).items():
        wd = w.detach()
        view = wd.permute(0, 2, 3, 1) if wd.dim() == 4 else wd  # [out, kh, kw, in] or [out, in]
        if view.shape[-1] % m:
            skipped[name] = f"{view.shape[-1]} input channels is not a multiple of {m}"
            continue
        groups = view.abs().reshape(-1, m)
        top = torch.topk(groups, n, dim=1).indices
        keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(1, top, True)
        keep = keep.reshape(view.shape)
        masks[name] = keep.permute(0, 3, 1, 2).contiguous() if wd.dim() == 4 else keep
    return masks, skipped


def block(model: nn.Module, sparsity: float, size: int = 32, scope: str = "layer", exclude: list[str] = ()) -> tuple[dict, dict]:
    """Zero whole ``size x size`` blocks of the [out, in*kh*kw] weight view, lowest L2 norm first."""
    _check(sparsity)
    if size not in (4, 8, 16, 32, 64):
        raise ConfigError(f"block size must be 16, 32 or 64 (4 and 8 for tests), got {size}")
    weights = prunable_weights(model, exclude)
    norms, skipped = {}, {}
    for name, w in weights.items():
        v = w.detach().reshape(w.shape[0], -1)
        if v.shape[0] % size or v.shape[1] % size:
            skipped[name] = f"{tuple(v.shape)} does not tile into {size}x{size} blocks"
            continue
        r, c = v.shape[0] // size, v.shape[1] // size
        norms[name] = v.reshape(r, size, c, size).pow(2).sum((1, 3)).sqrt()
    masks = {}
    if scope == "global" and norms:
        block_keep = _split_keep(norms, sparsity)
    else:
        block_keep = {}
        for name, x in norms.items():
            k = int(round(sparsity * x.numel()))
            keep = torch.ones(x.numel(), dtype=torch.bool)
            keep[torch.argsort(x.flatten(), stable=True)[:k]] = False
            block_keep[name] = keep.view_as(x)
    for name, keep in block_keep.items():
        w = weights[name]
        full = keep.repeat_interleave(size, 0).repeat_interleave(size, 1)
        masks[name] = full.reshape(w.shape)
    return masks, skipped


def _split_keep(scores: dict[str, torch.Tensor], sparsity: float) -> dict[str, torch.Tensor]:
    """Drop exactly round(sparsity * total) of the lowest scores across all tensors (stable on ties)."""
    flat = torch.cat([x.flatten() for x in scores.values()])
    k = int(round(sparsity * flat.numel()))
    keep = torch.ones_like(flat, dtype=torch.bool)
    keep[torch.argsort(flat, stable=True)[:k]] = False
    out, offset = {}, 0
    for name, x in scores.items():
        out[name] = keep[offset : offset + x.numel()].view_as(x)
        offset += x.numel()
    return out


def encode(mask: torch.Tensor) -> dict:
    bits = np.packbits(mask.detach().cpu().numpy().astype(bool).ravel())
    return {"shape": list(mask.shape), "bits": base64.b64encode(bits.tobytes()).decode()}


def decode(d: dict) -> torch.Tensor:
    shape = tuple(d["shape"])
    n = int(np.prod(shape))
    bits = np.frombuffer(base64.b64decode(d["bits"]), dtype=np.uint8)
    return torch.from_numpy(np.unpackbits(bits)[:n].astype(bool).reshape(shape))


def density(masks: dict) -> float:
    total = sum(m.numel() for m in masks.values())
    return float(sum(int(m.sum()) for m in masks.values()) / max(total, 1))
