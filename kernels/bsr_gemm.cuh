// Block-sparse GEMM (and convolution): Y[M, N] = X[M, K] @ W^T (+ bias), W (N x K) stored as BSR with square blocks of
// `block` (16, 32 or 64): values (nnzb, block, block) row-major, crow (N / block + 1), col (nnzb).
// Everything is row-major and contiguous. Only stored blocks are read.
//
// - fp16: tensor cores through WMMA (16x16x16, fp32 accumulation), sm_70+.
// - fp32: SIMT kernel (the TensorRT plugin's fp32 path).
// - int8: __dp4a dot products into int32 accumulators (the caller applies scales and bias).
// Index is int32_t (torch extension) or int64_t (the ONNX / TensorRT graph keeps int64 indices).
#pragma once

#include <cstdint>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

namespace edgeprune
{

template <typename Index>
cudaError_t bsrLinearF16(__half const* x, __half const* values, Index const* crow, Index const* col,
    __half const* bias, __half* y, int32_t m, int32_t n, int32_t k, int32_t block, cudaStream_t stream);

template <typename Index>
cudaError_t bsrLinearF32(float const* x, float const* values, Index const* crow, Index const* col,
    float const* bias, float* y, int32_t m, int32_t n, int32_t k, int32_t block, cudaStream_t stream);

template <typename Index>
cudaError_t bsrLinearS8(int8_t const* x, int8_t const* values, Index const* crow, Index const* col, int32_t* acc,
    int32_t m, int32_t n, int32_t k, int32_t block, cudaStream_t stream);

// NCHW convolution (groups = 1) as implicit GEMM over the block-sparse (out, C*kh*kw) weight: output pixels
// are the GEMM rows, the (c, kh, kw) taps of each stored block are gathered on the fly (zero padding).
struct ConvShape
{
    int32_t batch, channels, height, width, outChannels, kernelH, kernelW, stride, padding, dilation;
    __host__ __device__ int32_t outHeight() const { return (height + 2 * padding - dilation * (kernelH - 1) - 1) / stride + 1; }
    __host__ __device__ int32_t outWidth() const { return (width + 2 * padding - dilation * (kernelW - 1) - 1) / stride + 1; }
};

template <typename Index>
cudaError_t bsrConv2dF16(__half const* x, __half const* values, Index const* crow, Index const* col,
    __half const* bias, __half* y, ConvShape shape, int32_t block, cudaStream_t stream);

} // namespace edgeprune
