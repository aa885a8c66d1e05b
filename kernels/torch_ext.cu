// torch extension around the block-sparse kernels (loaded by edgeprune/sparse/cuda_ext.py on CUDA machines,
// then called from the CUDA implementation of torch.ops.edgeprune.bsr_linear / bsr_linear_int8). The caller
// passes torch.cuda.current_stream().cuda_stream, so this file needs only the device-independent torch headers.
#include "bsr_gemm.cuh"

#include <torch/extension.h>

namespace
{

void check(torch::Tensor const& x, torch::Tensor const& values, torch::Tensor const& crow, torch::Tensor const& col)
{
    TORCH_CHECK(x.is_cuda() && values.is_cuda() && crow.is_cuda() && col.is_cuda(), "all tensors must be on CUDA");
    TORCH_CHECK(x.dim() == 2 && x.is_contiguous(), "x must be a contiguous (M, K) matrix");
    TORCH_CHECK(values.dim() == 3 && values.size(1) == values.size(2) && values.is_contiguous(),
        "values must be contiguous (nnzb, block, block)");
    TORCH_CHECK(crow.scalar_type() == torch::kInt32 && col.scalar_type() == torch::kInt32, "indices must be int32");
}

torch::Tensor bsrLinear(torch::Tensor x, torch::Tensor values, torch::Tensor crow, torch::Tensor col,
    c10::optional<torch::Tensor> bias, int64_t streamHandle)
{
    check(x, values, crow, col);
    int32_t const block = static_cast<int32_t>(values.size(1));
    int32_t const n = static_cast<int32_t>((crow.size(0) - 1) * block);
    int32_t const m = static_cast<int32_t>(x.size(0));
    int32_t const k = static_cast<int32_t>(x.size(1));
    auto y = torch::empty({m, n}, x.options());
    auto const stream = reinterpret_cast<cudaStream_t>(streamHandle);
    cudaError_t err;
    if (x.scalar_type() == torch::kHalf)
    {
        TORCH_CHECK(values.scalar_type() == torch::kHalf, "fp16 x needs fp16 values");
        auto const* b = bias ? reinterpret_cast<__half const*>(bias->data_ptr<at::Half>()) : nullptr;
        err = edgeprune::bsrLinearF16<int32_t>(reinterpret_cast<__half const*>(x.data_ptr<at::Half>()),
            reinterpret_cast<__half const*>(values.data_ptr<at::Half>()), crow.data_ptr<int32_t>(),
            col.data_ptr<int32_t>(), b, reinterpret_cast<__half*>(y.data_ptr<at::Half>()), m, n, k, block, stream);
    }
    else
    {
        TORCH_CHECK(x.scalar_type() == torch::kFloat && values.scalar_type() == torch::kFloat,
            "x and values must both be fp16 or both fp32");
        err = edgeprune::bsrLinearF32<int32_t>(x.data_ptr<float>(), values.data_ptr<float>(),
            crow.data_ptr<int32_t>(), col.data_ptr<int32_t>(), bias ? bias->data_ptr<float>() : nullptr,
            y.data_ptr<float>(), m, n, k, block, stream);
    }
    TORCH_CHECK(err == cudaSuccess, "bsr_linear kernel failed: ", cudaGetErrorString(err));
    return y;
}

torch::Tensor bsrLinearInt8(
    torch::Tensor xq, torch::Tensor values, torch::Tensor crow, torch::Tensor col, int64_t streamHandle)
{
    check(xq, values, crow, col);
    TORCH_CHECK(xq.scalar_type() == torch::kChar && values.scalar_type() == torch::kChar, "int8 tensors expected");
    int32_t const block = static_cast<int32_t>(values.size(1));
    int32_t const n = static_cast<int32_t>((crow.size(0) - 1) * block);
    int32_t const m = static_cast<int32_t>(xq.size(0));
    int32_t const k = static_cast<int32_t>(xq.size(1));
    auto acc = torch::empty({m, n}, xq.options().dtype(torch::kInt32));
    cudaError_t err = edgeprune::bsrLinearS8<int32_t>(xq.data_ptr<int8_t>(), values.data_ptr<int8_t>(),
        crow.data_ptr<int32_t>(), col.data_ptr<int32_t>(), acc.data_ptr<int32_t>(), m, n, k, block,
        reinterpret_cast<cudaStream_t>(streamHandle));
    TORCH_CHECK(err == cudaSuccess, "bsr_linear_int8 kernel failed: ", cudaGetErrorString(err));
    return acc;
}

torch::Tensor bsrConv2d(torch::Tensor x, torch::Tensor values, torch::Tensor crow, torch::Tensor col,
    c10::optional<torch::Tensor> bias, int64_t kernelH, int64_t kernelW, int64_t stride, int64_t padding,
    int64_t dilation, int64_t streamHandle)
{
    TORCH_CHECK(x.is_cuda() && x.dim() == 4 && x.is_contiguous(), "x must be a contiguous NCHW CUDA tensor");
    TORCH_CHECK(x.scalar_type() == torch::kHalf && values.scalar_type() == torch::kHalf, "fp16 tensors expected");
    TORCH_CHECK(crow.scalar_type() == torch::kInt32 && col.scalar_type() == torch::kInt32, "indices must be int32");
    int32_t const block = static_cast<int32_t>(values.size(1));
    edgeprune::ConvShape shape{static_cast<int32_t>(x.size(0)), static_cast<int32_t>(x.size(1)),
        static_cast<int32_t>(x.size(2)), static_cast<int32_t>(x.size(3)),
        static_cast<int32_t>((crow.size(0) - 1) * block), static_cast<int32_t>(kernelH),
        static_cast<int32_t>(kernelW), static_cast<int32_t>(stride), static_cast<int32_t>(padding),
        static_cast<int32_t>(dilation)};
    auto y = torch::empty({shape.batch, shape.outChannels, shape.outHeight(), shape.outWidth()}, x.options());
    auto const* b = bias ? reinterpret_cast<__half const*>(bias->data_ptr<at::Half>()) : nullptr;
    cudaError_t err = edgeprune::bsrConv2dF16<int32_t>(reinterpret_cast<__half const*>(x.data_ptr<at::Half>()),
        reinterpret_cast<__half const*>(values.data_ptr<at::Half>()), crow.data_ptr<int32_t>(),
        col.data_ptr<int32_t>(), b, reinterpret_cast<__half*>(y.data_ptr<at::Half>()), shape, block,
        reinterpret_cast<cudaStream_t>(streamHandle));
    TORCH_CHECK(err == cudaSuccess, "bsr_conv2d kernel failed: ", cudaGetErrorString(err));
    return y;
}

} // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m)
{
    m.def("bsr_linear", &bsrLinear, "y = x @ W_bsr^T + bias (fp16 tensor cores or fp32)");
    m.def("bsr_linear_int8", &bsrLinearInt8, "int32 accumulators of xq @ Wq_bsr^T (dp4a)");
    m.def("bsr_conv2d", &bsrConv2d, "NCHW fp16 convolution, implicit GEMM over the block-sparse weight");
}
