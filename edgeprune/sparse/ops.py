"""Block-sparse torch ops (``torch.ops.edgeprune.*``, registered with ``torch.library``) and the modules that
call them, so a block-pruned model runs through them in eager mode and under ``torch.compile``.

Dispatch:
- CPU (and any device without a kernel): ``W_bsr @ X`` with torch's BSR sparse tensor (MKL), never
  ``F.linear`` with a sparse weight; fp16 computes in fp32, int8 in fp64 (exact integer sums), as CPU
  sparse kernels have no half / int8 paths.
- CUDA: the compiled CUDA C++ extension (kernels/: WMMA fp16 linear and conv, dp4a int8, fp32) when it
  loads, else the Triton kernels (also for the dtypes the extension lacks, e.g. fp32 / int8 convolution).
A fake (meta) implementation gives output shapes to torch.compile.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from edgeprune.errors import ConfigError

BLOCKS = (16, 32, 64)
_cuda_backend = {"name": None}  # "cuda-ext" | "triton", chosen on first CUDA call


def _bsr(values, crow, col, shape) -> torch.Tensor:
    return torch.sparse_bsr_tensor(crow, col, values, size=shape, check_invariants=False)


def _cpu_matmul(values, crow, col, rows: int, cols_t: torch.Tensor, dtype) -> torch.Tensor:
    """W_bsr (rows x K) @ cols_t (K x L) on the CPU sparse path, computed in ``dtype``."""
    w = _bsr(values.to(dtype), crow, col, (rows, cols_t.shape[0]))
    return w @ cols_t.to(dtype)


# --- bsr_linear ------------------------------------------------------------------------------------

@torch.library.custom_op("edgeprune::bsr_linear", mutates_args=())
def bsr_linear(x: torch.Tensor, values: torch.Tensor, crow: torch.Tensor, col: torch.Tensor,
               bias: torch.Tensor | None, out_features: int) -> torch.Tensor:
    """y = x @ W^T + bias for x (..., K), W (out_features, K) block-sparse."""
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])
    y = _cpu_matmul(values, crow, col, out_features, x2.t(), torch.float32).t()
    if bias is not None:
        y = y + bias.to(torch.float32)
    return y.to(x.dtype).contiguous().reshape(*lead, out_features)


@bsr_linear.register_fake
def _(x, values, crow, col, bias, out_features):
    return x.new_empty(*x.shape[:-1], out_features)


@bsr_linear.register_kernel("cuda")
def _(x, values, crow, col, bias, out_features):
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1]).contiguous()
    ext = _cuda_ext()
    if ext is not None:
        y = ext.bsr_linear(x2, values, crow.int(), col.int(), bias, torch.cuda.current_stream().cuda_stream)
    else:
        from edgeprune.sparse import triton_bsr

        y = triton_bsr.bsr_linear(x2, values, crow, col, bias, out_features)
    return y.reshape(*lead, out_features)


# --- bsr_linear_int8 -------------------------------------------------------------------------------

@torch.library.custom_op("edgeprune::bsr_linear_int8", mutates_args=())
def bsr_linear_int8(xq: torch.Tensor, x_scale: float, values: torch.Tensor, w_scale: torch.Tensor,
                    crow: torch.Tensor, col: torch.Tensor, bias: torch.Tensor | None, out_features: int) -> torch.Tensor:
    """fp32 y = (xq @ Wq^T) * x_scale * w_scale[out] + bias; xq (M, K) int8, Wq int8 block-sparse."""
    acc = _cpu_matmul(values, crow, col, out_features, xq.t(), torch.float64).t().contiguous()  # exact sums
    y = acc.to(torch.float32) * (x_scale * w_scale.to(torch.float32))[None, :]
    return y + bias.to(torch.float32) if bias is not None else y


@bsr_linear_int8.register_fake
def _(xq, x_scale, values, w_scale, crow, col, bias, out_features):
    return xq.new_empty(xq.shape[0], out_features, dtype=torch.float32)


@bsr_linear_int8.register_kernel("cuda")
def _(xq, x_scale, values, w_scale, crow, col, bias, out_features):
    ext = _cuda_ext()
    if ext is not None:
        acc = ext.bsr_linear_int8(xq.contiguous(), values, crow.int(), col.int(),
                                  torch.cuda.current_stream().cuda_stream)
    else:
        from edgeprune.sparse import triton_bsr

        acc = triton_bsr.bsr_linear(xq.contiguous(), values, crow, col, None, out_features)
    y = acc.to(torch.float32) * (x_scale * w_scale.to(torch.float32))[None, :]
    return y + bias.to(torch.float32) if bias is not None else y


# --- bsr_conv2d ------------------------------------------------------------------------------------

@torch.library.custom_op("edgeprune::bsr_conv2d", mutates_args=())
def bsr_conv2d(x: torch.Tensor, values: torch.Tensor, crow: torch.Tensor, col: torch.Tensor,
               bias: torch.Tensor | None, out_channels: int, kernel_h: int, kernel_w: int, stride: int,
               padding: int, dilation: int) -> torch.Tensor:
    """NCHW conv (groups=1), weight (out, C*kh*kw) block-sparse: im2col, then W_bsr @ columns."""
    nb, _, h, w = x.shape
    oh = (h + 2 * padding - dilation * (kernel_h - 1) - 1) // stride + 1
    ow = (w + 2 * padding - dilation * (kernel_w - 1) - 1) // stride + 1
    cols = F.unfold(x.to(torch.float32), (kernel_h, kernel_w), dilation=dilation, padding=padding, stride=stride)
    cols_t = cols.permute(1, 0, 2).reshape(cols.shape[1], -1)  # (C*kh*kw, N*L)
    y = _cpu_matmul(values, crow, col, out_channels, cols_t, torch.float32)  # (out, N*L)
    y = y.reshape(out_channels, nb, oh, ow).permute(1, 0, 2, 3)
    if bias is not None:
        y = y + bias.to(torch.float32)[None, :, None, None]
    return y.contiguous().to(x.dtype)


@bsr_conv2d.register_fake
def _(x, values, crow, col, bias, out_channels, kernel_h, kernel_w, stride, padding, dilation):
    nb, _, h, w = x.shape
    oh = (h + 2 * padding - dilation * (kernel_h - 1) - 1) // stride + 1
    ow = (w + 2 * padding - dilation * (kernel_w - 1) - 1) // stride + 1
    return x.new_empty(nb, out_channels, oh, ow)


@bsr_conv2d.register_kernel("cuda")
def _(x, values, crow, col, bias, out_channels, kernel_h, kernel_w, stride, padding, dilation):
    from edgeprune.sparse import triton_bsr

    ext = _cuda_ext() if x.dtype == torch.float16 else None
    if ext is not None:
        return ext.bsr_conv2d(x.contiguous(), values, crow.int(), col.int(), bias, kernel_h, kernel_w, stride, padding,
                              dilation, torch.cuda.current_stream().cuda_stream)
    return triton_bsr.bsr_conv2d(x.contiguous(), values, crow, col, bias, out_channels, (kernel_h, kernel_w),
                                 stride, padding, dilation)


def _cuda_ext():
    """The compiled CUDA C++ extension, built once from kernels/ with torch's cpp_extension (None when
    it cannot be built: no nvcc, or EDGEPRUNE_SPARSE_BACKEND=triton)."""
    import os

    if _cuda_backend["name"] is None:
        _cuda_backend["name"] = "triton"
        if os.environ.get("EDGEPRUNE_SPARSE_BACKEND", "cuda") != "triton":
            try:
                from edgeprune.sparse import cuda_ext

                _cuda_backend["module"] = cuda_ext.load()
                _cuda_backend["name"] = "cuda-ext"
            except Exception as e:  # noqa: BLE001 - any build failure means: use Triton
                _cuda_backend["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return _cuda_backend.get("module")


# --- modules -----------------------------------------------------------------------------------------

def _to_bsr(w2d: torch.Tensor, block: int, dtype: torch.dtype):
    if block not in BLOCKS:
        raise ConfigError(f"block must be one of {BLOCKS}, got {block}")
    if w2d.shape[0] % block or w2d.shape[1] % block:
        raise ConfigError(f"a {w2d.shape[0]}x{w2d.shape[1]} weight does not tile into {block}x{block} blocks")
    b = w2d.detach().to(torch.float32).to_sparse_bsr((block, block))
    keep = b.values().abs().flatten(1).amax(1) > 0  # to_sparse_bsr keeps zero blocks in partly filled rows
    if not bool(keep.all()):
        dense = w2d.detach().to(torch.float32)
        rows, cols = w2d.shape[0] // block, w2d.shape[1] // block
        nz = dense.reshape(rows, block, cols, block).abs().amax((1, 3)) > 0
        crow = torch.cat([torch.zeros(1, dtype=torch.int64), nz.sum(1).cumsum(0)])
        rr, cc = torch.nonzero(nz, as_tuple=True)
        values = dense.reshape(rows, block, cols, block).permute(0, 2, 1, 3)[rr, cc]
        return values.to(dtype).contiguous(), crow, cc.contiguous()
    return b.values().to(dtype).clone(), b.crow_indices().clone(), b.col_indices().clone()


def block_zero_fraction(w: torch.Tensor, block: int) -> float:
    w2 = w.detach().reshape(w.shape[0], -1)
    if w2.shape[0] % block or w2.shape[1] % block:
        return 0.0
    tiles = w2.reshape(w2.shape[0] // block, block, w2.shape[1] // block, block)
    return float((tiles.abs().amax((1, 3)) == 0).float().mean())


def _store(module: nn.Module, values, crow, col, bias) -> None:
    """BSR arrays as buffers (they move with .to() and are saved in the state dict)."""
    module.register_buffer("bsr_values", values)
    module.register_buffer("bsr_crow", crow)
    module.register_buffer("bsr_col", col)
    module.register_buffer("bias", bias)


class BlockSparseLinear(nn.Module):
    def __init__(self, values, crow, col, bias, in_features: int, out_features: int):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        _store(self, values, crow, col, bias)

    @classmethod
    def from_dense(cls, layer: nn.Linear, block: int = 32, dtype: torch.dtype = torch.float32):
        values, crow, col = _to_bsr(layer.weight, block, dtype)
        bias = layer.bias.detach().to(dtype).clone() if layer.bias is not None else None
        return cls(values, crow, col, bias, layer.in_features, layer.out_features)

    @property
    def density(self) -> float:
        b = self.bsr_values.shape[-1]
        return self.bsr_values.shape[0] / ((self.out_features // b) * (self.in_features // b))

    def forward(self, x):
        return torch.ops.edgeprune.bsr_linear(x, self.bsr_values, self.bsr_crow, self.bsr_col, self.bias, self.out_features)

    def extra_repr(self) -> str:
        return (f"in={self.in_features}, out={self.out_features}, block={self.bsr_values.shape[-1]}, "
                f"density={self.density:.2f}, dtype={self.bsr_values.dtype}")


class BlockSparseConv2d(nn.Module):
    def __init__(self, values, crow, col, bias, out_channels: int, kernel, stride: int, padding: int, dilation: int):
        super().__init__()
        self.out_channels, self.kernel = out_channels, tuple(kernel)
        self.stride, self.padding, self.dilation = stride, padding, dilation
        _store(self, values, crow, col, bias)

    @classmethod
    def from_dense(cls, conv: nn.Conv2d, block: int = 32, dtype: torch.dtype = torch.float32):
        if conv.groups != 1 or len(set(conv.stride)) != 1 or len(set(conv.dilation)) != 1 \
                or not isinstance(conv.padding, tuple) or len(set(conv.padding)) != 1 or conv.padding_mode != "zeros":
            raise ConfigError("block-sparse conv needs groups=1, square stride / dilation / zero padding")
        values, crow, col = _to_bsr(conv.weight.reshape(conv.out_channels, -1), block, dtype)
        bias = conv.bias.detach().to(dtype).clone() if conv.bias is not None else None
        return cls(values, crow, col, bias, conv.out_channels, conv.kernel_size, conv.stride[0], conv.padding[0],
                   conv.dilation[0])

    def forward(self, x):
        return torch.ops.edgeprune.bsr_conv2d(x, self.bsr_values, self.bsr_crow, self.bsr_col, self.bias, self.out_channels,
                                              self.kernel[0], self.kernel[1], self.stride, self.padding, self.dilation)


def to_block_sparse(model: nn.Module, block: int = 32, min_zero_fraction: float = 0.5,
                    dtype: torch.dtype = torch.float32) -> tuple[nn.Module, list[str]]:
    """A copy of ``model`` whose Linear / Conv2d (groups=1) layers with at least ``min_zero_fraction`` zero
    blocks run through the block-sparse ops; returns (model, replaced layer names)."""
    model = copy.deepcopy(model)
    replaced = []
    for name, m in list(model.named_modules()):
        new = None
        if isinstance(m, nn.Linear) and block_zero_fraction(m.weight, block) >= min_zero_fraction:
            new = BlockSparseLinear.from_dense(m, block, dtype)
        elif isinstance(m, nn.Conv2d) and m.groups == 1 and block_zero_fraction(m.weight, block) >= min_zero_fraction:
            try:
                new = BlockSparseConv2d.from_dense(m, block, dtype)
            except ConfigError:
                new = None
        if new is not None:
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, attr, new)
            replaced.append(name)
    return model, replaced
