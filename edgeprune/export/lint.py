"""A TensorRT compatibility lint for ONNX files that needs no TensorRT.

Rules: opset range of the TensorRT 10.x ONNX parser; operators the parser does not support; explicit
quantization that TensorRT accepts (signed int8, zero point 0, weights per-channel on axis 0);
dynamic dimensions that need an optimization profile; custom ops that must map to a plugin
(``plugin_namespace`` attribute) and have plugin sources in the bundle.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

# Operators marked unsupported in the onnx-tensorrt operator matrix (docs/operators.md, TensorRT 8.5),
# less LayerNormalization (native since TensorRT 8.6). Ops that are missing from the matrix are unknown
# to us and reported as warnings, not errors.
TRT_UNSUPPORTED = {
    "Bernoulli", "BitShift", "BlackmanWindow", "Compress", "ConcatFromSequence", "ConvInteger", "DFT", "Det",
    "DynamicQuantizeLinear", "HammingWindow", "HannWindow", "Hardmax", "IsInf", "MatMulInteger", "MaxRoiPool",
    "MaxUnpool", "MelWeightMatrix", "Multinomial", "NegativeLogLikelihoodLoss", "Optional",
    "OptionalGetElement", "OptionalHasElement", "QLinearConv", "QLinearMatMul", "STFT", "SequenceAt",
    "SequenceConstruct", "SequenceEmpty", "SequenceErase", "SequenceInsert", "SequenceLength", "SequenceMap",
    "SoftmaxCrossEntropyLoss", "SplitToSequence", "StringNormalizer", "TfIdfVectorizer", "Unique",
}
TRT_SUPPORTED = {
    "Abs", "Acos", "Acosh", "Add", "And", "ArgMax", "ArgMin", "Asin", "Asinh", "Atan", "Atanh", "AveragePool",
    "BatchNormalization", "Cast", "Ceil", "Celu", "Clip", "Concat", "Constant", "ConstantOfShape", "Conv",
    "ConvTranspose", "Cos", "Cosh", "CumSum", "DepthToSpace", "DequantizeLinear", "Div", "Dropout", "Einsum",
    "Elu", "Equal", "Erf", "Exp", "Expand", "EyeLike", "Flatten", "Floor", "Gather", "GatherElements",
    "GatherND", "Gelu", "Gemm", "GlobalAveragePool", "GlobalLpPool", "GlobalMaxPool", "Greater",
    "GreaterOrEqual", "GridSample", "GRU", "HardSigmoid", "HardSwish", "Identity", "If", "InstanceNormalization",
    "IsNaN", "LayerNormalization", "LeakyRelu", "Less", "LessOrEqual", "Log", "LogSoftmax", "Loop", "LRN",
    "LSTM", "LpNormalization", "LpPool", "MatMul", "Max", "MaxPool", "Mean", "MeanVarianceNormalization", "Min",
    "Mod", "Mul", "Neg", "NonMaxSuppression", "NonZero", "Not", "OneHot", "Or", "Pad", "PRelu", "Pow",
    "QuantizeLinear", "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Range",
    "Reciprocal", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean",
    "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare", "Relu", "Reshape", "Resize", "ReverseSequence",
    "RNN", "RoiAlign", "Round", "Scan", "Scatter", "ScatterElements", "ScatterND", "Selu", "Shape", "Shrink",
    "Sigmoid", "Sign", "Sin", "Sinh", "Size", "Slice", "Softmax", "Softplus", "Softsign", "SpaceToDepth",
    "Split", "Sqrt", "Squeeze", "Sub", "Sum", "Tan", "Tanh", "ThresholdedRelu", "Tile", "TopK", "Transpose",
    "Trilu", "Unsqueeze", "Upsample", "Where", "Xor",
}
OPSET_RANGE = (9, 20)  # TensorRT 10.3 (JetPack 6) parses opsets 9..20
CUSTOM_DOMAIN = "ai.edgeprune"


@dataclass
class Finding:
    level: str  # error | warning
    rule: str
    node: str
    message: str

    def to_json(self) -> dict:
        return asdict(self)


def _const(model, name: str):
    import onnx

    for init in model.graph.initializer:
        if init.name == name:
            return onnx.numpy_helper.to_array(init)
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            return onnx.numpy_helper.to_array(node.attribute[0].t)
    return None


def lint_model(model) -> list[Finding]:
    import onnx

    out: list[Finding] = []
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    v = opsets.get("ai.onnx")
    if v is not None and not OPSET_RANGE[0] <= v <= OPSET_RANGE[1]:
        out.append(Finding("error", "opset", "", f"opset {v} is outside TensorRT 10.3's range {OPSET_RANGE}"))
    inits = {i.name for i in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        dims = inp.type.tensor_type.shape.dim
        dyn = [d.dim_param or "?" for d in dims if not d.HasField("dim_value")]
        if dyn:
            out.append(Finding("warning", "dynamic-shape", inp.name,
                               f"input {inp.name!r} has dynamic dims {dyn}: trtexec needs --minShapes/--optShapes/--maxShapes"))
    for i, node in enumerate(model.graph.node):
        name = node.name or f"{node.op_type}_{i}"
        domain = node.domain or "ai.onnx"
        if domain == CUSTOM_DOMAIN:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            ns = attrs.get("plugin_namespace", b"")
            ns = ns.decode() if isinstance(ns, bytes) else ns
            if ns != CUSTOM_DOMAIN:
                out.append(Finding("error", "custom-op", name,
                                   f"custom op {node.op_type} needs attribute plugin_namespace='{CUSTOM_DOMAIN}' to map to its TensorRT plugin"))
            else:
                out.append(Finding("warning", "plugin", name,
                                   f"{node.op_type} runs as TensorRT plugin {CUSTOM_DOMAIN}::{node.op_type}: build the plugin and pass --plugins"))
            continue
        if domain not in ("ai.onnx", ""):
            out.append(Finding("error", "domain", name, f"op {domain}::{node.op_type} is not an ONNX op TensorRT parses"))
            continue
        if node.op_type in TRT_UNSUPPORTED:
            out.append(Finding("error", "unsupported-op", name, f"{node.op_type} is not supported by the TensorRT ONNX parser"))
        elif node.op_type not in TRT_SUPPORTED:
            out.append(Finding("warning", "unknown-op", name, f"{node.op_type} is not in the known TensorRT operator list"))
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            out += _lint_qdq(model, node, name)
    return out


def _lint_qdq(model, node, name: str) -> list[Finding]:
    out = []
    zp = _const(model, node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if zp is not None:
        if zp.dtype == np.uint8:
            out.append(Finding("error", "qdq-type", name,
                               "uint8 quantization: TensorRT takes signed int8 QDQ only (export with --activations int8)"))
        if np.any(zp != 0):
            out.append(Finding("error", "qdq-zero-point", name,
                               "asymmetric quantizer (zero point != 0): TensorRT needs symmetric int8"))
    scale = _const(model, node.input[1]) if len(node.input) > 1 else None
    if scale is not None and scale.ndim == 1 and scale.size > 1:
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        if node.op_type == "DequantizeLinear" and axis not in (0, 1):
            out.append(Finding("warning", "qdq-axis", name, f"per-channel axis {axis}: TensorRT expects axis 0 (K) for weights"))
    return out


def lint(path: str | Path) -> list[Finding]:
    import onnx

    return lint_model(onnx.load(str(path), load_external_data=False))


def errors(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.level == "error"]
