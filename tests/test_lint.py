import numpy as np
from onnx import TensorProto, helper, numpy_helper

from edgeprune.export.lint import lint_model


def _model(nodes, inits=(), opset=20, dynamic=False):
    dim = ["N", 4] if dynamic else [1, 4]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, dim)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("ai.edgeprune", 1)])


def _rules(model):
    return {(f.level, f.rule) for f in lint_model(model)}


def test_clean_graph_has_no_findings():
    assert _rules(_model([helper.make_node("Relu", ["x"], ["y"])])) == set()


def test_planted_unsupported_op_is_an_error():
    m = _model([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Unique", ["r"], ["y"])])
    assert ("error", "unsupported-op") in _rules(m)


def test_planted_asymmetric_weight_quantizer_is_an_error():
    w = numpy_helper.from_array(np.ones((4, 4), np.int8), "w")
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    zp = numpy_helper.from_array(np.array(3, np.int8), "zp")
    m = _model([helper.make_node("DequantizeLinear", ["w", "s", "zp"], ["wf"]),
                helper.make_node("MatMul", ["x", "wf"], ["y"])], inits=[w, scale, zp])
    assert ("error", "qdq-zero-point") in _rules(m)
    zp0 = numpy_helper.from_array(np.array(0, np.int8), "zp")
    m0 = _model([helper.make_node("DequantizeLinear", ["w", "s", "zp"], ["wf"]),
                 helper.make_node("MatMul", ["x", "wf"], ["y"])], inits=[w, scale, zp0])
    assert _rules(m0) == set()


def test_uint8_activations_opset_dynamic_shapes_and_custom_ops():
    s = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    zpu = numpy_helper.from_array(np.array(128, np.uint8), "zp")
    m = _model([helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"]),
                helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"])], inits=[s, zpu])
    rules = _rules(m)
    assert ("error", "qdq-type") in rules and ("error", "qdq-zero-point") in rules
    assert ("error", "opset") in _rules(_model([helper.make_node("Relu", ["x"], ["y"])], opset=21))
    assert ("warning", "dynamic-shape") in _rules(_model([helper.make_node("Relu", ["x"], ["y"])], dynamic=True))
    bare = helper.make_node("BlockSparseLinear", ["x"], ["y"], domain="ai.edgeprune")
    assert ("error", "custom-op") in _rules(_model([bare]))
    mapped = helper.make_node("BlockSparseLinear", ["x"], ["y"], domain="ai.edgeprune", plugin_namespace="ai.edgeprune")
    assert _rules(_model([mapped])) == {("warning", "plugin")}
    other = helper.make_node("Foo", ["x"], ["y"], domain="com.example")
    assert ("error", "domain") in _rules(_model([other]))
