import numpy as np
import pytest
import torch

from edgeprune.export.onnx import VerificationError, export_onnx, onnx_predict, verify_onnx
from edgeprune.models import build_model
from edgeprune.prune.structured import make_plan
from edgeprune.quant.ptq import quantize_int8


@pytest.mark.parametrize("name,shape", [("mlp", (600,)), ("lenet5", (1, 8, 8)), ("resnet20", (3, 32, 32))])
def test_pruned_model_exports_and_verifies_with_dynamic_batch(tmp_path, name, shape):
    torch.manual_seed(0)
    model = build_model(name, shape, 10).eval()
    make_plan(model, shape, 0.5)  # prunes in place (replaying the plan on it again would prune twice)
    model = model.eval()
    path = export_onnx(model, shape, tmp_path / "m.onnx")
    x = np.random.default_rng(0).normal(size=(7, *shape)).astype(np.float32)
    v = verify_onnx(model, path, x)
    assert v.passed and v.max_rel_err < 1e-4 and v.top1_agreement == 1.0
    assert onnx_predict(path, x[:1]).shape == (1, 10)


def test_verification_fails_loudly_on_a_different_model(tmp_path):
    torch.manual_seed(0)
    a = build_model("mlp", (20,), 4).eval()
    b = build_model("mlp", (20,), 4).eval()
    path = export_onnx(a, (20,), tmp_path / "a.onnx")
    x = np.random.default_rng(0).normal(size=(16, 20)).astype(np.float32)
    with pytest.raises(VerificationError, match="does not match torch"):
        verify_onnx(b, path, x)


@pytest.mark.parametrize("activations", ["uint8", "int8"])
@pytest.mark.parametrize("reduce_range", [False, True])
def test_int8_qdq_is_close_to_fp32(tmp_path, activations, reduce_range):
    """Scored with reference QDQ semantics (the same on every CPU); this CPU's int8 kernels must compute the
    reference within a few output quantization steps for the artifact made for it (7-bit weights where its
    U8S8 kernels saturate), see tests/test_int8_numerics.py for the AVX2 path."""
    import onnx

    from edgeprune.quant.numerics import compare, predict
    from edgeprune.quant.targets import TARGETS

    torch.manual_seed(0)
    model = build_model("lenet5", (1, 8, 8), 10).eval()
    src = export_onnx(model, (1, 8, 8), tmp_path / "m.onnx")
    x = np.random.default_rng(0).normal(size=(64, 1, 8, 8)).astype(np.float32)
    dst = quantize_int8(src, tmp_path / "q.onnx", x, activations=activations, reduce_range=reduce_range)
    ops = {n.op_type for n in onnx.load(str(dst)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    ref, got = onnx_predict(src, x), predict(dst, x, "reference")
    assert np.abs(got - ref).max() < 0.05 * np.abs(ref).max()
    if reduce_range == TARGETS.get("ort-cpu").settings(activations)["reduce_range"]:  # what ships for this CPU
        assert compare(dst, x, "cpu", "reference")["max_abs_diff_steps"] <= 2
    # weights are symmetric: every weight zero point is 0
    m = onnx.load(str(dst))
    inits = {i.name: i for i in m.graph.initializer}
    for node in m.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in inits and len(node.input) > 2:
            zp = onnx.numpy_helper.to_array(inits[node.input[2]])
            assert np.all(zp == 0)


def test_a_wrong_weight_scale_breaks_the_int8_bound(tmp_path):
    import onnx
    from onnx import numpy_helper

    from edgeprune.quant.numerics import predict

    torch.manual_seed(0)
    model = build_model("lenet5", (1, 8, 8), 10).eval()
    src = export_onnx(model, (1, 8, 8), tmp_path / "m.onnx")
    x = np.random.default_rng(0).normal(size=(64, 1, 8, 8)).astype(np.float32)
    dst = quantize_int8(src, tmp_path / "q.onnx", x)
    m = onnx.load(str(dst))
    for init in m.graph.initializer:  # the first convolution's per-channel scales, doubled
        if init.name == "features.0.weight_scale":
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 2, init.name))
    onnx.save(m, str(tmp_path / "bad.onnx"))
    ref = onnx_predict(src, x)
    assert np.abs(predict(tmp_path / "bad.onnx", x, "reference") - ref).max() > 0.05 * np.abs(ref).max()
