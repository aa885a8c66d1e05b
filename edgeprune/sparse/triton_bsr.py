"""Triton block-sparse kernels: ``Y = X @ W_bsr^T + b`` (Linear, 1x1 conv) and k x k convolution as implicit
GEMM over the block-sparse [out, in*kh*kw] weight. Only stored (non-zero) blocks are visited.

One program computes a BLOCK_M x BLOCK tile of the output: BLOCK_M rows of X (pixels for a conv) against one
block-row of W (BLOCK output features); it walks that block-row's stored blocks (crow/col), loading the
matching BLOCK columns of X (for a conv: gathering the (c, kh, kw) taps with zero padding) and accumulating
``tl.dot(x_tile, w_block^T)`` in fp32 (fp32 / fp16 inputs) or int32 (int8 inputs, exact).

BLOCK_M, warps and stages are autotuned per device and shape (``triton.autotune``): nothing is hard-coded
from elsewhere. On CPU the kernels run under ``TRITON_INTERPRET=1`` (correctness only). Written by hand
because torch's ``bsr_dense_mm`` has no int8 path, no bias, and no implicit-GEMM convolution.
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # the `triton` extra is optional; ops fall back to the CPU path
    triton = None


def available() -> bool:
    return triton is not None


def _configs():
    out = []
    for bm in (16, 32, 64, 128):
        for warps, stages in ((4, 2), (4, 3), (8, 3)):
            out.append(triton.Config({"BLOCK_M": bm}, num_warps=warps, num_stages=stages))
    return out


def _interpreting() -> bool:
    import os

    return os.environ.get("TRITON_INTERPRET", "0") == "1"


if triton is not None:

    @triton.jit
    def _bsr_linear_body(x_ptr, v_ptr, crow_ptr, col_ptr, b_ptr, y_ptr, M, stride_xm, stride_xk, stride_ym,
                         stride_yn, HAS_BIAS: tl.constexpr, INT8: tl.constexpr, BLOCK: tl.constexpr,
                         BLOCK_M: tl.constexpr):
        pid_m = tl.program_id(0)
        r = tl.program_id(1)
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_b = tl.arange(0, BLOCK)
        m_ok = offs_m[:, None] < M
        start = tl.load(crow_ptr + r)
        end = tl.load(crow_ptr + r + 1)
        if INT8:
            acc = tl.zeros((BLOCK_M, BLOCK), dtype=tl.int32)
        else:
            acc = tl.zeros((BLOCK_M, BLOCK), dtype=tl.float32)
        for j in range(start, end):
            c = tl.load(col_ptr + j)
            x = tl.load(x_ptr + offs_m[:, None] * stride_xm + (c * BLOCK + offs_b)[None, :] * stride_xk,
                        mask=m_ok, other=0)
            w = tl.load(v_ptr + j * BLOCK * BLOCK + offs_b[:, None] * BLOCK + offs_b[None, :])
            acc += tl.dot(x, tl.trans(w))
        if HAS_BIAS:
            acc += tl.load(b_ptr + r * BLOCK + offs_b)[None, :].to(tl.float32)
        y = y_ptr + offs_m[:, None] * stride_ym + (r * BLOCK + offs_b)[None, :] * stride_yn
        tl.store(y, acc.to(y_ptr.dtype.element_ty), mask=m_ok)

    @triton.jit
    def _bsr_conv_body(x_ptr, v_ptr, crow_ptr, col_ptr, b_ptr, y_ptr, M, C, H, W, OH, OW,
                       sxn, sxc, sxh, sxw, syn, syc, syh, syw, STRIDE: tl.constexpr, PAD: tl.constexpr,
                       DIL: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr, HAS_BIAS: tl.constexpr,
                       INT8: tl.constexpr, BLOCK: tl.constexpr, BLOCK_M: tl.constexpr):
        pid_m = tl.program_id(0)
        r = tl.program_id(1)
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_b = tl.arange(0, BLOCK)
        n = offs_m // (OH * OW)
        rem = offs_m % (OH * OW)
        oh = rem // OW
        ow = rem % OW
        m_ok = offs_m < M
        start = tl.load(crow_ptr + r)
        end = tl.load(crow_ptr + r + 1)
        if INT8:
            acc = tl.zeros((BLOCK_M, BLOCK), dtype=tl.int32)
        else:
            acc = tl.zeros((BLOCK_M, BLOCK), dtype=tl.float32)
        for j in range(start, end):
            k = tl.load(col_ptr + j) * BLOCK + offs_b  # columns of the [out, C*KH*KW] weight
            ci = k // (KH * KW)
            tap = k % (KH * KW)
            ih = oh[:, None] * STRIDE - PAD + (tap // KW)[None, :] * DIL
            iw = ow[:, None] * STRIDE - PAD + (tap % KW)[None, :] * DIL
            ok = m_ok[:, None] & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            x = tl.load(x_ptr + n[:, None] * sxn + ci[None, :] * sxc + ih * sxh + iw * sxw, mask=ok, other=0)
            w = tl.load(v_ptr + j * BLOCK * BLOCK + offs_b[:, None] * BLOCK + offs_b[None, :])
            acc += tl.dot(x, tl.trans(w))
        if HAS_BIAS:
            acc += tl.load(b_ptr + r * BLOCK + offs_b)[None, :].to(tl.float32)
        o = r * BLOCK + offs_b
        y = y_ptr + n[:, None] * syn + o[None, :] * syc + oh[:, None] * syh + ow[:, None] * syw
        tl.store(y, acc.to(y_ptr.dtype.element_ty), mask=m_ok[:, None])

    _bsr_linear_tuned = triton.autotune(configs=_configs(), key=["M", "BLOCK", "INT8"])(_bsr_linear_body)
    _bsr_conv_tuned = triton.autotune(configs=_configs(), key=["M", "C", "BLOCK", "KH", "INT8"])(_bsr_conv_body)


def _out_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.int32 if x.dtype == torch.int8 else x.dtype


def bsr_linear(x: torch.Tensor, values: torch.Tensor, crow: torch.Tensor, col: torch.Tensor,
               bias: torch.Tensor | None, out_features: int, block_m: int | None = None) -> torch.Tensor:
    """x (M, K) @ W^T (+ bias) with W (out_features, K) in BSR. int8 x / values give the exact int32
    accumulator (bias ignored: dequantize, then add it). ``block_m`` pins the tile (skips autotuning)."""
    if triton is None:
        raise RuntimeError("triton is not installed (pip install 'edgeprune[triton]')")
    block = values.shape[-1]
    m = x.shape[0]
    int8 = x.dtype == torch.int8
    y = torch.empty(m, out_features, dtype=_out_dtype(x), device=x.device)
    has_bias = bias is not None and not int8
    b = bias if has_bias else y
    args = (x, values, crow, col, b, y, m, x.stride(0), x.stride(1), y.stride(0), y.stride(1))
    if block_m is not None or _interpreting():
        bm = block_m or 16
        _bsr_linear_body[(triton.cdiv(m, bm), out_features // block)](
            *args, HAS_BIAS=has_bias, INT8=int8, BLOCK=block, BLOCK_M=bm)
    else:
        grid = lambda meta: (triton.cdiv(m, meta["BLOCK_M"]), out_features // block)  # noqa: E731
        _bsr_linear_tuned[grid](*args, HAS_BIAS=has_bias, INT8=int8, BLOCK=block)
    return y


def bsr_conv2d(x: torch.Tensor, values: torch.Tensor, crow: torch.Tensor, col: torch.Tensor,
               bias: torch.Tensor | None, out_channels: int, kernel: tuple[int, int], stride: int = 1,
               padding: int = 0, dilation: int = 1, block_m: int | None = None) -> torch.Tensor:
    """NCHW convolution (groups=1) with the [out, C*kh*kw] weight in BSR, as implicit GEMM."""
    if triton is None:
        raise RuntimeError("triton is not installed (pip install 'edgeprune[triton]')")
    nb, c, h, w = x.shape
    kh, kw = kernel
    oh = (h + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    ow = (w + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    block = values.shape[-1]
    int8 = x.dtype == torch.int8
    y = torch.empty(nb, out_channels, oh, ow, dtype=_out_dtype(x), device=x.device)
    has_bias = bias is not None and not int8
    b = bias if has_bias else y
    m = nb * oh * ow
    args = (x, values, crow, col, b, y, m, c, h, w, oh, ow, *x.stride(), *y.stride())
    kw_args = dict(STRIDE=stride, PAD=padding, DIL=dilation, KH=kh, KW=kw, HAS_BIAS=has_bias, INT8=int8, BLOCK=block)
    if block_m is not None or _interpreting():
        bm = block_m or 16
        _bsr_conv_body[(triton.cdiv(m, bm), out_channels // block)](*args, **kw_args, BLOCK_M=bm)
    else:
        grid = lambda meta: (triton.cdiv(m, meta["BLOCK_M"]), out_channels // block)  # noqa: E731
        _bsr_conv_tuned[grid](*args, **kw_args)
    return y
