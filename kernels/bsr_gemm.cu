// Block-sparse GEMM kernels (see bsr_gemm.cuh). One CTA computes a TILE_M x BLOCK output tile: TILE_M rows
// of X against one block-row of W (BLOCK output features), walking that block-row's stored blocks.
// Per stored block: X[TILE_M, BLOCK] and W[BLOCK, BLOCK] are staged in shared memory with 16-byte loads,
// then multiplied (WMMA fragments for fp16, dp4a for int8, FMA for fp32).
#include "bsr_gemm.cuh"

#include <mma.h>
#include <climits>
#include <type_traits>

namespace edgeprune
{
namespace
{

constexpr int kWarp = 32;

// --- shared pieces of the fp16 WMMA kernels: shared-memory tiles with a padded leading dimension --------
template <int BLOCK>
using Accumulators = nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float>[BLOCK / 16];

// One stored BLOCK x BLOCK weight block into shared memory with 16-byte loads.
template <int BLOCK>
__device__ __forceinline__ void loadWeightTile(__half* ws, __half const* wb)
{
    constexpr int LD = BLOCK + 8;
    for (int v = threadIdx.x; v < BLOCK * BLOCK / 8; v += blockDim.x)
    {
        int const rr = v / (BLOCK / 8);
        int const kk = (v % (BLOCK / 8)) * 8;
        *reinterpret_cast<uint4*>(ws + rr * LD + kk) = *reinterpret_cast<uint4 const*>(wb + rr * BLOCK + kk);
    }
}

// Warp `warp` accumulates its 16 rows of the X tile times the W block's transpose.
template <int BLOCK>
__device__ __forceinline__ void mmaTile(Accumulators<BLOCK>& acc, __half const* xs, __half const* ws, int warp)
{
    using namespace nvcuda;
    constexpr int LD = BLOCK + 8;
#pragma unroll
    for (int kk = 0; kk < BLOCK; kk += 16)
    {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> a;
        wmma::load_matrix_sync(a, xs + warp * 16 * LD + kk, LD);
#pragma unroll
        for (int f = 0; f < BLOCK / 16; ++f)
        {
            // B(k, n) = W(n, k): the row-major W block read as a column-major K x N matrix.
            wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major> b;
            wmma::load_matrix_sync(b, ws + f * 16 * LD + kk, LD);
            wmma::mma_sync(acc[f], a, b, acc[f]);
        }
    }
}

template <int BLOCK>
__device__ __forceinline__ void storeTile(float* cs, Accumulators<BLOCK>& acc, int warp)
{
    constexpr int LDC = BLOCK + 4;
#pragma unroll
    for (int f = 0; f < BLOCK / 16; ++f)
    {
        nvcuda::wmma::store_matrix_sync(cs + warp * 16 * LDC + f * 16, acc[f], LDC, nvcuda::wmma::mem_row_major);
    }
}

// ---------------------------------------------------------------------------------------------------------
// fp16 tensor cores. 4 warps; warp w owns rows [16w, 16w + 16) of a 64-row tile and all BLOCK columns.
template <int BLOCK, typename Index>
__global__ void __launch_bounds__(128) bsrLinearF16Kernel(__half const* __restrict__ x,
    __half const* __restrict__ values, Index const* __restrict__ crow, Index const* __restrict__ col,
    __half const* __restrict__ bias, __half* __restrict__ y, int32_t m, int32_t n, int32_t k)
{
#if __CUDA_ARCH__ >= 700
    using namespace nvcuda;
    constexpr int TILE_M = 64;
    constexpr int LD = BLOCK + 8;      // padded leading dimension (multiple of 8 halves, fewer bank conflicts)
    constexpr int FRAGS = BLOCK / 16;  // 16-wide output fragments per warp
    __shared__ __align__(32) __half xs[TILE_M * LD];
    __shared__ __align__(32) __half ws[BLOCK * LD];
    __shared__ __align__(32) float cs[TILE_M * (BLOCK + 4)];

    int const warp = threadIdx.x / kWarp;
    int64_t const row0 = static_cast<int64_t>(blockIdx.x) * TILE_M;
    int64_t const r = blockIdx.y;

    Accumulators<BLOCK> acc;
#pragma unroll
    for (int f = 0; f < FRAGS; ++f)
    {
        wmma::fill_fragment(acc[f], 0.0f);
    }

    for (Index j = crow[r]; j < crow[r + 1]; ++j)
    {
        int64_t const c0 = static_cast<int64_t>(col[j]) * BLOCK;
        // X tile: TILE_M x BLOCK halves as 8-half (16-byte) vectors; rows past m are zero.
        for (int v = threadIdx.x; v < TILE_M * BLOCK / 8; v += blockDim.x)
        {
            int const rr = v / (BLOCK / 8);
            int const kk = (v % (BLOCK / 8)) * 8;
            uint4 val = make_uint4(0, 0, 0, 0);
            if (row0 + rr < m)
            {
                val = *reinterpret_cast<uint4 const*>(x + (row0 + rr) * k + c0 + kk);
            }
            *reinterpret_cast<uint4*>(xs + rr * LD + kk) = val;
        }
        loadWeightTile<BLOCK>(ws, values + static_cast<int64_t>(j) * BLOCK * BLOCK);
        __syncthreads();
        mmaTile<BLOCK>(acc, xs, ws, warp);
        __syncthreads();
    }

    constexpr int LDC = BLOCK + 4;
    storeTile<BLOCK>(cs, acc, warp);
    __syncthreads();
    for (int v = threadIdx.x; v < TILE_M * BLOCK; v += blockDim.x)
    {
        int const rr = v / BLOCK;
        int const cc = v % BLOCK;
        if (row0 + rr < m)
        {
            float out = cs[rr * LDC + cc];
            if (bias != nullptr)
            {
                out += __half2float(bias[r * BLOCK + cc]);
            }
            y[(row0 + rr) * n + r * BLOCK + cc] = __float2half(out);
        }
    }
#endif
}

// ---------------------------------------------------------------------------------------------------------
// fp16 implicit-GEMM convolution: like bsrLinearF16Kernel, with the X tile gathered from NCHW input.
template <int BLOCK, typename Index>
__global__ void __launch_bounds__(128) bsrConv2dF16Kernel(__half const* __restrict__ x,
    __half const* __restrict__ values, Index const* __restrict__ crow, Index const* __restrict__ col,
    __half const* __restrict__ bias, __half* __restrict__ y, ConvShape s)
{
#if __CUDA_ARCH__ >= 700
    using namespace nvcuda;
    constexpr int TILE_M = 64;
    constexpr int LD = BLOCK + 8;
    constexpr int FRAGS = BLOCK / 16;
    constexpr int LDC = BLOCK + 4;
    __shared__ __align__(32) __half xs[TILE_M * LD];
    __shared__ __align__(32) __half ws[BLOCK * LD];
    __shared__ __align__(32) float cs[TILE_M * LDC];

    int32_t const oh = s.outHeight();
    int32_t const ow = s.outWidth();
    int64_t const pixels = static_cast<int64_t>(s.batch) * oh * ow;
    int32_t const taps = s.kernelH * s.kernelW;
    int const warp = threadIdx.x / kWarp;
    int64_t const p0 = static_cast<int64_t>(blockIdx.x) * TILE_M;
    int64_t const r = blockIdx.y;

    Accumulators<BLOCK> acc;
#pragma unroll
    for (int f = 0; f < FRAGS; ++f)
    {
        wmma::fill_fragment(acc[f], 0.0f);
    }
    for (Index j = crow[r]; j < crow[r + 1]; ++j)
    {
        int64_t const c0 = static_cast<int64_t>(col[j]) * BLOCK;
        for (int v = threadIdx.x; v < TILE_M * BLOCK; v += blockDim.x)
        {
            int const rr = v / BLOCK;
            int const kk = v % BLOCK;
            int64_t const p = p0 + rr;
            __half val = __float2half(0.0f);
            if (p < pixels)
            {
                int64_t const n = p / (oh * ow);
                int32_t const rem = static_cast<int32_t>(p % (oh * ow));
                int64_t const kidx = c0 + kk;
                int32_t const c = static_cast<int32_t>(kidx / taps);
                int32_t const tap = static_cast<int32_t>(kidx % taps);
                int32_t const ih = (rem / ow) * s.stride - s.padding + (tap / s.kernelW) * s.dilation;
                int32_t const iw = (rem % ow) * s.stride - s.padding + (tap % s.kernelW) * s.dilation;
                if (ih >= 0 && ih < s.height && iw >= 0 && iw < s.width)
                {
                    val = x[((n * s.channels + c) * s.height + ih) * s.width + iw];
                }
            }
            xs[rr * LD + kk] = val;
        }
        loadWeightTile<BLOCK>(ws, values + static_cast<int64_t>(j) * BLOCK * BLOCK);
        __syncthreads();
        mmaTile<BLOCK>(acc, xs, ws, warp);
        __syncthreads();
    }
    storeTile<BLOCK>(cs, acc, warp);
    __syncthreads();
    for (int v = threadIdx.x; v < TILE_M * BLOCK; v += blockDim.x)
    {
        int const rr = v / BLOCK;
        int const cc = v % BLOCK;
        int64_t const p = p0 + rr;
        if (p < pixels)
        {
            int64_t const n = p / (oh * ow);
            int64_t const rem = p % (oh * ow);
            int64_t const o = r * BLOCK + cc;
            float out = cs[rr * LDC + cc] + (bias != nullptr ? __half2float(bias[o]) : 0.0f);
            y[(n * s.outChannels + o) * oh * ow + rem] = __float2half(out);
        }
    }
#endif
}

// ---------------------------------------------------------------------------------------------------------
// fp32 SIMT and int8 dp4a share one shape: 256 threads, a 32-row tile, each thread OUT outputs of one row.
template <int BLOCK, typename Index>
__global__ void __launch_bounds__(256) bsrLinearF32Kernel(float const* __restrict__ x,
    float const* __restrict__ values, Index const* __restrict__ crow, Index const* __restrict__ col,
    float const* __restrict__ bias, float* __restrict__ y, int32_t m, int32_t n, int32_t k)
{
    constexpr int TILE_M = 32;
    constexpr int OUT = TILE_M * BLOCK / 256;  // outputs per thread: 2, 4 or 8 (same row, strided columns)
    __shared__ float xs[TILE_M][BLOCK + 1];
    __shared__ float ws[BLOCK][BLOCK + 1];
    int64_t const row0 = static_cast<int64_t>(blockIdx.x) * TILE_M;
    int64_t const r = blockIdx.y;
    int const rr = threadIdx.x / (256 / TILE_M);  // 8 threads per row
    int const lane = threadIdx.x % (256 / TILE_M);
    float acc[OUT] = {};
    for (Index j = crow[r]; j < crow[r + 1]; ++j)
    {
        int64_t const c0 = static_cast<int64_t>(col[j]) * BLOCK;
        for (int v = threadIdx.x; v < TILE_M * BLOCK; v += blockDim.x)
        {
            int const a = v / BLOCK;
            int const b = v % BLOCK;
            xs[a][b] = row0 + a < m ? x[(row0 + a) * k + c0 + b] : 0.0f;
        }
        float const* wb = values + static_cast<int64_t>(j) * BLOCK * BLOCK;
        for (int v = threadIdx.x; v < BLOCK * BLOCK; v += blockDim.x)
        {
            ws[v / BLOCK][v % BLOCK] = wb[v];
        }
        __syncthreads();
#pragma unroll
        for (int o = 0; o < OUT; ++o)
        {
            int const cc = lane + o * (256 / TILE_M);
            float s = 0.0f;
#pragma unroll 8
            for (int kk = 0; kk < BLOCK; ++kk)
            {
                s = fmaf(xs[rr][kk], ws[cc][kk], s);
            }
            acc[o] += s;
        }
        __syncthreads();
    }
    if (row0 + rr < m)
    {
#pragma unroll
        for (int o = 0; o < OUT; ++o)
        {
            int const cc = lane + o * (256 / TILE_M);
            y[(row0 + rr) * n + r * BLOCK + cc] = acc[o] + (bias != nullptr ? bias[r * BLOCK + cc] : 0.0f);
        }
    }
}

template <int BLOCK, typename Index>
__global__ void __launch_bounds__(256) bsrLinearS8Kernel(int8_t const* __restrict__ x,
    int8_t const* __restrict__ values, Index const* __restrict__ crow, Index const* __restrict__ col,
    int32_t* __restrict__ out, int32_t m, int32_t n, int32_t k)
{
    constexpr int TILE_M = 32;
    constexpr int OUT = TILE_M * BLOCK / 256;
    constexpr int W4 = BLOCK / 4;  // 4 int8 per 32-bit word
    __shared__ int32_t xs[TILE_M][W4 + 1];
    __shared__ int32_t ws[BLOCK][W4 + 1];
    int64_t const row0 = static_cast<int64_t>(blockIdx.x) * TILE_M;
    int64_t const r = blockIdx.y;
    int const rr = threadIdx.x / (256 / TILE_M);
    int const lane = threadIdx.x % (256 / TILE_M);
    int32_t acc[OUT] = {};
    for (Index j = crow[r]; j < crow[r + 1]; ++j)
    {
        int64_t const c0 = static_cast<int64_t>(col[j]) * BLOCK;
        for (int v = threadIdx.x; v < TILE_M * W4; v += blockDim.x)
        {
            int const a = v / W4;
            int const b = v % W4;
            xs[a][b] = row0 + a < m ? *reinterpret_cast<int32_t const*>(x + (row0 + a) * k + c0 + 4 * b) : 0;
        }
        int8_t const* wb = values + static_cast<int64_t>(j) * BLOCK * BLOCK;
        for (int v = threadIdx.x; v < BLOCK * W4; v += blockDim.x)
        {
            ws[v / W4][v % W4] = *reinterpret_cast<int32_t const*>(wb + 4 * v);
        }
        __syncthreads();
#pragma unroll
        for (int o = 0; o < OUT; ++o)
        {
            int const cc = lane + o * (256 / TILE_M);
#pragma unroll
            for (int kk = 0; kk < W4; ++kk)
            {
                acc[o] = __dp4a(xs[rr][kk], ws[cc][kk], acc[o]);
            }
        }
        __syncthreads();
    }
    if (row0 + rr < m)
    {
#pragma unroll
        for (int o = 0; o < OUT; ++o)
        {
            out[(row0 + rr) * n + r * BLOCK + lane + o * (256 / TILE_M)] = acc[o];
        }
    }
}

bool validShape(int32_t m, int32_t n, int32_t k, int32_t block)
{
    return (block == 16 || block == 32 || block == 64) && m >= 0 && n % block == 0 && k % block == 0;
}

// Checks the shape, then calls launch(std::integral_constant<int, BLOCK>) for the runtime block size.
template <typename Launch>
cudaError_t withBlock(int32_t m, int32_t n, int32_t k, int32_t block, Launch&& launch)
{
    if (!validShape(m, n, k, block))
    {
        return cudaErrorInvalidValue;
    }
    if (m == 0)
    {
        return cudaSuccess;
    }
    switch (block)
    {
    case 16: launch(std::integral_constant<int, 16>{}); break;
    case 32: launch(std::integral_constant<int, 32>{}); break;
    default: launch(std::integral_constant<int, 64>{}); break;
    }
    return cudaGetLastError();
}

} // namespace

template <typename Index>
cudaError_t bsrLinearF16(__half const* x, __half const* values, Index const* crow, Index const* col,
    __half const* bias, __half* y, int32_t m, int32_t n, int32_t k, int32_t block, cudaStream_t stream)
{
    return withBlock(m, n, k, block, [&](auto b) {
        constexpr int B = decltype(b)::value;
        bsrLinearF16Kernel<B, Index><<<dim3((m + 63) / 64, n / B), 128, 0, stream>>>(x, values, crow, col, bias, y, m, n, k);
    });
}

template <typename Index>
cudaError_t bsrLinearF32(float const* x, float const* values, Index const* crow, Index const* col,
    float const* bias, float* y, int32_t m, int32_t n, int32_t k, int32_t block, cudaStream_t stream)
{
    return withBlock(m, n, k, block, [&](auto b) {
        constexpr int B = decltype(b)::value;
        bsrLinearF32Kernel<B, Index><<<dim3((m + 31) / 32, n / B), 256, 0, stream>>>(x, values, crow, col, bias, y, m, n, k);
    });
}

template <typename Index>
cudaError_t bsrLinearS8(int8_t const* x, int8_t const* values, Index const* crow, Index const* col, int32_t* acc,
    int32_t m, int32_t n, int32_t k, int32_t block, cudaStream_t stream)
{
    return withBlock(m, n, k, block, [&](auto b) {
        constexpr int B = decltype(b)::value;
        bsrLinearS8Kernel<B, Index><<<dim3((m + 31) / 32, n / B), 256, 0, stream>>>(x, values, crow, col, acc, m, n, k);
    });
}

template <typename Index>
cudaError_t bsrConv2dF16(__half const* x, __half const* values, Index const* crow, Index const* col,
    __half const* bias, __half* y, ConvShape shape, int32_t block, cudaStream_t stream)
{
    int64_t const pixels = static_cast<int64_t>(shape.batch) * shape.outHeight() * shape.outWidth();
    int32_t const k = shape.channels * shape.kernelH * shape.kernelW;
    if (pixels > INT32_MAX || shape.stride < 1 || shape.dilation < 1)
    {
        return cudaErrorInvalidValue;
    }
    return withBlock(static_cast<int32_t>(pixels), shape.outChannels, k, block, [&](auto b) {
        constexpr int B = decltype(b)::value;
        bsrConv2dF16Kernel<B, Index><<<dim3(static_cast<unsigned>((pixels + 63) / 64), shape.outChannels / B), 128, 0,
            stream>>>(x, values, crow, col, bias, y, shape);
    });
}

#define EDGEPRUNE_INSTANTIATE(Index)                                                                              \
    template cudaError_t bsrLinearF16<Index>(__half const*, __half const*, Index const*, Index const*,           \
        __half const*, __half*, int32_t, int32_t, int32_t, int32_t, cudaStream_t);                                \
    template cudaError_t bsrLinearF32<Index>(float const*, float const*, Index const*, Index const*,             \
        float const*, float*, int32_t, int32_t, int32_t, int32_t, cudaStream_t);                                  \
    template cudaError_t bsrLinearS8<Index>(int8_t const*, int8_t const*, Index const*, Index const*, int32_t*,  \
        int32_t, int32_t, int32_t, int32_t, cudaStream_t);                                                        \
    template cudaError_t bsrConv2dF16<Index>(__half const*, __half const*, Index const*, Index const*,           \
        __half const*, __half*, ConvShape, int32_t, cudaStream_t);

EDGEPRUNE_INSTANTIATE(int32_t)
EDGEPRUNE_INSTANTIATE(int64_t)

} // namespace edgeprune
