"""Block compressed sparse row (BSR) weights: values + row pointers + column indices.

A weight [out, in] (a conv weight is viewed as [out, in*kh*kw]) is cut into ``block x block`` tiles; only
tiles with a non-zero entry are stored. Layout matches scipy.sparse.bsr_matrix and torch's BSR:
``values`` (nnzb, block, block), ``crow`` (out/block + 1,), ``col`` (nnzb,).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeprune.errors import ConfigError

BLOCKS = (16, 32, 64)


@dataclass
class BSR:
    values: np.ndarray  # (nnzb, block, block) float32 / float16 / int8
    crow: np.ndarray  # (rows/block + 1,) int64
    col: np.ndarray  # (nnzb,) int64
    shape: tuple[int, int]
    block: int
    scale: np.ndarray | None = None  # per-output-row scales when values are int8

    @property
    def density(self) -> float:
        total = (self.shape[0] // self.block) * (self.shape[1] // self.block)
        return len(self.col) / max(total, 1)

    def to_dense(self) -> np.ndarray:
        b = self.block
        out = np.zeros(self.shape, np.float32)
        vals = self.values.astype(np.float32)
        for r in range(len(self.crow) - 1):
            for k in range(self.crow[r], self.crow[r + 1]):
                out[r * b : (r + 1) * b, self.col[k] * b : (self.col[k] + 1) * b] = vals[k]
        if self.scale is not None:
            out *= self.scale[:, None]
        return out

    def matmul_t(self, x: np.ndarray) -> np.ndarray:
        """x @ W^T for x (N, in): scipy's BSR kernel, which skips the zero blocks."""
        import scipy.sparse as sp

        vals = self.values.astype(np.float32)
        w = sp.bsr_matrix((vals, self.col, self.crow), shape=self.shape)
        y = (w @ x.T.astype(np.float32)).T
        if self.scale is not None:
            y = y * self.scale[None, :]
        return np.ascontiguousarray(y, dtype=np.float32)


def check_shape(shape: tuple[int, int], block: int) -> None:
    if block not in BLOCKS and block not in (2, 4, 8):
        raise ConfigError(f"block size must be one of {BLOCKS}, got {block}")
    if shape[0] % block or shape[1] % block:
        raise ConfigError(f"a {shape[0]}x{shape[1]} weight does not tile into {block}x{block} blocks")


def from_dense(w: np.ndarray, block: int, dtype: str = "fp32") -> BSR:
    w = np.asarray(w, np.float32).reshape(w.shape[0], -1)
    check_shape(w.shape, block)
    rows, cols = w.shape[0] // block, w.shape[1] // block
    tiles = w.reshape(rows, block, cols, block).transpose(0, 2, 1, 3)  # (rows, cols, b, b)
    keep = np.abs(tiles).sum((2, 3)) != 0
    crow = np.concatenate([[0], np.cumsum(keep.sum(1))]).astype(np.int64)
    rr, cc = np.nonzero(keep)
    values = tiles[rr, cc]
    scale = None
    if dtype == "fp16":
        values = values.astype(np.float16)
    elif dtype == "int8":  # symmetric per output row
        scale = np.abs(w).max(1) / 127.0
        scale[scale == 0] = 1.0
        row_scale = scale.reshape(rows, block)[rr]  # (nnzb, b)
        values = np.clip(np.round(values / row_scale[:, :, None]), -127, 127).astype(np.int8)
        scale = scale.astype(np.float32)
    elif dtype != "fp32":
        raise ConfigError(f"BSR dtype must be fp32, fp16 or int8, got {dtype!r}")
    return BSR(values, crow, cc.astype(np.int64), tuple(w.shape), block, scale)


def from_mask(w: np.ndarray, block_mask: np.ndarray, block: int, dtype: str = "fp32") -> BSR:
    """BSR of ``w`` keeping only the blocks where ``block_mask`` (rows/block, cols/block) is true."""
    w = np.asarray(w, np.float32).reshape(w.shape[0], -1)
    check_shape(w.shape, block)
    expanded = np.kron(np.asarray(block_mask, np.float32), np.ones((block, block), np.float32))
    return from_dense(w * expanded, block, dtype)


def block_density(w: np.ndarray, block: int) -> float:
    w = np.asarray(w).reshape(w.shape[0], -1)
    if w.shape[0] % block or w.shape[1] % block:
        return 1.0
    tiles = w.reshape(w.shape[0] // block, block, w.shape[1] // block, block)
    return float((np.abs(tiles).sum((1, 3)) != 0).mean())
