"""Every zoo model exports to verified fp32, fp16 and int8 QDQ ONNX."""

import numpy as np
import pytest
import torch

from edgeprune.export.lint import errors, lint
from edgeprune.export.onnx import export_onnx, onnx_predict, to_fp16, verify_onnx
from edgeprune.models import build_model
from edgeprune.quant.numerics import predict
from edgeprune.quant.ptq import quantize_int8

ZOO = ["mlp", "lenet5", "vgg11", "vgg16", "resnet18", "resnet20", "resnet56", "mobilenetv2"]


@pytest.mark.parametrize("name", ZOO)
def test_zoo_model_exports_fp32_fp16_int8(tmp_path, name):
    shape = (64,) if name == "mlp" else (3, 32, 32)
    torch.manual_seed(0)
    model = build_model(name, shape, 10).eval()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, *shape)).astype(np.float32)
    fp32 = export_onnx(model, shape, tmp_path / "m.onnx", dynamic_batch=False, batch=4)
    assert verify_onnx(model, fp32, x).passed
    fp16 = to_fp16(fp32, tmp_path / "m16.onnx")
    assert verify_onnx(model, fp16, x, rtol=2e-2, top1_min=0.9).passed
    # the TensorRT artifact: S8S8, full 8-bit range; scored with reference QDQ semantics (what an int32-
    # accumulating engine computes), not with this CPU's int8 kernels (which saturate on AVX2)
    q = quantize_int8(fp32, tmp_path / "m8.onnx", rng.normal(size=(32, *shape)).astype(np.float32), activations="int8")
    ref, got = onnx_predict(fp32, x), predict(q, x, "reference")
    assert np.abs(got - ref).max() < 0.25 * np.abs(ref).max()
    assert not errors(lint(q)), [f.message for f in errors(lint(q))]  # S8S8 QDQ is TensorRT-clean
