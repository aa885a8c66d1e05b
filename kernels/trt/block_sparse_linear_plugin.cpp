// See block_sparse_linear_plugin.h. The kernels are the ones the torch extension uses (../bsr_gemm.cu).
#include "block_sparse_linear_plugin.h"

#include "../bsr_gemm.cuh"

#include <cstring>
#include <iostream>

using namespace nvinfer1;

namespace edgeprune
{
namespace
{
constexpr int32_t kX = 0, kValues = 1, kCrow = 2, kCol = 3, kBias = 4, kNbInputs = 5;

int32_t readInt(PluginField const& f)
{
    if (f.type == PluginFieldType::kINT64)
    {
        return static_cast<int32_t>(*static_cast<int64_t const*>(f.data));
    }
    return *static_cast<int32_t const*>(f.data);
}

void logError(char const* msg) noexcept
{
    std::cerr << "[edgeprune BlockSparseLinear] " << msg << std::endl;
}
} // namespace

BlockSparseLinearPlugin::BlockSparseLinearPlugin(BlockSparseLinearParams params)
    : mParams(params)
{
    initFields();
}

void BlockSparseLinearPlugin::initFields()
{
    mFields.clear();
    mFields.emplace_back("out_features", &mParams.outFeatures, PluginFieldType::kINT32, 1);
    mFields.emplace_back("in_features", &mParams.inFeatures, PluginFieldType::kINT32, 1);
    mFields.emplace_back("block", &mParams.block, PluginFieldType::kINT32, 1);
    mFieldCollection.nbFields = static_cast<int32_t>(mFields.size());
    mFieldCollection.fields = mFields.data();
}

IPluginCapability* BlockSparseLinearPlugin::getCapabilityInterface(PluginCapabilityType type) noexcept
{
    switch (type)
    {
    case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
    case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
    case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
    }
    return nullptr;
}

IPluginV3* BlockSparseLinearPlugin::clone() noexcept
{
    try
    {
        return new BlockSparseLinearPlugin(mParams);
    }
    catch (...)
    {
        return nullptr;
    }
}

char const* BlockSparseLinearPlugin::getPluginName() const noexcept
{
    return kPluginName;
}

char const* BlockSparseLinearPlugin::getPluginVersion() const noexcept
{
    return kPluginVersion;
}

char const* BlockSparseLinearPlugin::getPluginNamespace() const noexcept
{
    return kPluginNamespace;
}

int32_t BlockSparseLinearPlugin::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    if (nbInputs != kNbInputs || nbOutputs != 1)
    {
        logError("expects 5 inputs (X, values, crow, col, bias) and 1 output");
        return 1;
    }
    Dims const& v = in[kValues].desc.dims;
    if (v.nbDims != 3 || v.d[1] != mParams.block || v.d[2] != mParams.block)
    {
        logError("values must be (nnzb, block, block)");
        return 1;
    }
    return 0;
}

int32_t BlockSparseLinearPlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    if (nbOutputs != 1 || nbInputs != kNbInputs)
    {
        return 1;
    }
    outputTypes[0] = inputTypes[kX];
    return 0;
}

int32_t BlockSparseLinearPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs,
    DimsExprs const* /*shapeInputs*/, int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs,
    IExprBuilder& exprBuilder) noexcept
{
    if (nbInputs != kNbInputs || nbOutputs != 1 || inputs[kX].nbDims < 1)
    {
        return 1;
    }
    outputs[0] = inputs[kX];
    outputs[0].d[inputs[kX].nbDims - 1] = exprBuilder.constant(mParams.outFeatures);
    return 0;
}

bool BlockSparseLinearPlugin::supportsFormatCombination(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    if (nbInputs != kNbInputs || nbOutputs != 1 || inOut[pos].desc.format != TensorFormat::kLINEAR)
    {
        return false;
    }
    DataType const t = inOut[pos].desc.type;
    switch (pos)
    {
    case kX: return t == DataType::kFLOAT || t == DataType::kHALF;
    case kCrow: return t == DataType::kINT32 || t == DataType::kINT64;
    case kCol: return t == inOut[kCrow].desc.type;
    default: return t == inOut[kX].desc.type; // values, bias and the output follow X
    }
}

int32_t BlockSparseLinearPlugin::getNbOutputs() const noexcept
{
    return 1;
}

int32_t BlockSparseLinearPlugin::onShapeChange(
    PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* /*out*/, int32_t /*nbOutputs*/) noexcept
{
    if (nbInputs != kNbInputs || in[kX].dims.d[in[kX].dims.nbDims - 1] != mParams.inFeatures)
    {
        logError("the last input dimension must equal in_features");
        return 1;
    }
    return 0;
}

int32_t BlockSparseLinearPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /*outputDesc*/,
    void const* const* inputs, void* const* outputs, void* /*workspace*/, cudaStream_t stream) noexcept
{
    Dims const& xd = inputDesc[kX].dims;
    int64_t m = 1;
    for (int32_t i = 0; i + 1 < xd.nbDims; ++i)
    {
        m *= xd.d[i];
    }
    int32_t const rows = static_cast<int32_t>(m);
    int32_t const n = mParams.outFeatures;
    int32_t const k = mParams.inFeatures;
    int32_t const b = mParams.block;
    bool const i64 = inputDesc[kCrow].type == DataType::kINT64;
    cudaError_t err = cudaErrorInvalidValue;
    if (inputDesc[kX].type == DataType::kHALF)
    {
        auto const* x = static_cast<__half const*>(inputs[kX]);
        auto const* v = static_cast<__half const*>(inputs[kValues]);
        auto const* bias = static_cast<__half const*>(inputs[kBias]);
        auto* y = static_cast<__half*>(outputs[0]);
        err = i64 ? bsrLinearF16<int64_t>(x, v, static_cast<int64_t const*>(inputs[kCrow]),
                  static_cast<int64_t const*>(inputs[kCol]), bias, y, rows, n, k, b, stream)
                  : bsrLinearF16<int32_t>(x, v, static_cast<int32_t const*>(inputs[kCrow]),
                      static_cast<int32_t const*>(inputs[kCol]), bias, y, rows, n, k, b, stream);
    }
    else
    {
        auto const* x = static_cast<float const*>(inputs[kX]);
        auto const* v = static_cast<float const*>(inputs[kValues]);
        auto const* bias = static_cast<float const*>(inputs[kBias]);
        auto* y = static_cast<float*>(outputs[0]);
        err = i64 ? bsrLinearF32<int64_t>(x, v, static_cast<int64_t const*>(inputs[kCrow]),
                  static_cast<int64_t const*>(inputs[kCol]), bias, y, rows, n, k, b, stream)
                  : bsrLinearF32<int32_t>(x, v, static_cast<int32_t const*>(inputs[kCrow]),
                      static_cast<int32_t const*>(inputs[kCol]), bias, y, rows, n, k, b, stream);
    }
    if (err != cudaSuccess)
    {
        logError(cudaGetErrorString(err));
        return 1;
    }
    return 0;
}

IPluginV3* BlockSparseLinearPlugin::attachToContext(IPluginResourceContext* /*context*/) noexcept
{
    return clone();
}

PluginFieldCollection const* BlockSparseLinearPlugin::getFieldsToSerialize() noexcept
{
    return &mFieldCollection;
}

// --- creator -------------------------------------------------------------------------------------------

BlockSparseLinearCreator::BlockSparseLinearCreator()
{
    mAttributes.emplace_back("out_features", nullptr, PluginFieldType::kINT32, 1);
    mAttributes.emplace_back("in_features", nullptr, PluginFieldType::kINT32, 1);
    mAttributes.emplace_back("block", nullptr, PluginFieldType::kINT32, 1);
    mFieldNames.nbFields = static_cast<int32_t>(mAttributes.size());
    mFieldNames.fields = mAttributes.data();
}

char const* BlockSparseLinearCreator::getPluginName() const noexcept
{
    return kPluginName;
}

char const* BlockSparseLinearCreator::getPluginVersion() const noexcept
{
    return kPluginVersion;
}

char const* BlockSparseLinearCreator::getPluginNamespace() const noexcept
{
    return kPluginNamespace;
}

PluginFieldCollection const* BlockSparseLinearCreator::getFieldNames() noexcept
{
    return &mFieldNames;
}

IPluginV3* BlockSparseLinearCreator::createPlugin(
    char const* /*name*/, PluginFieldCollection const* fc, TensorRTPhase /*phase*/) noexcept
{
    try
    {
        BlockSparseLinearParams p;
        for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i)
        {
            PluginField const& f = fc->fields[i];
            if (std::strcmp(f.name, "out_features") == 0)
            {
                p.outFeatures = readInt(f);
            }
            else if (std::strcmp(f.name, "in_features") == 0)
            {
                p.inFeatures = readInt(f);
            }
            else if (std::strcmp(f.name, "block") == 0)
            {
                p.block = readInt(f);
            }
            // plugin_namespace (a string attribute of the ONNX node) is consumed by the parser
        }
        if (p.outFeatures <= 0 || p.inFeatures <= 0 || (p.block != 16 && p.block != 32 && p.block != 64)
            || p.outFeatures % p.block != 0 || p.inFeatures % p.block != 0)
        {
            logError("out_features / in_features must be positive multiples of block (16, 32 or 64)");
            return nullptr;
        }
        return new BlockSparseLinearPlugin(p);
    }
    catch (...)
    {
        return nullptr;
    }
}

} // namespace edgeprune

// Registration: loading the library (trtexec --staticPlugins / --plugins, or dlopen) registers the creator;
// getCreators() serves TensorRT's dynamic plugin loading (trtexec --dynamicPlugins).
namespace
{
edgeprune::BlockSparseLinearCreator gCreator;

struct Registrar
{
    Registrar()
    {
        getPluginRegistry()->registerCreator(gCreator, edgeprune::kPluginNamespace);
    }
} gRegistrar;
} // namespace

extern "C" nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    static nvinfer1::IPluginCreatorInterface* const creators[] = {&gCreator};
    nbCreators = 1;
    return creators;
}
