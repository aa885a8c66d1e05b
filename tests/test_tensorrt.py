"""The TensorRT engine path. TensorRT cannot be installed on the machines this project is tested on, so these
tests skip there; they run wherever `tensorrt` imports and a GPU is present."""

import numpy as np
import pytest
import torch

from edgeprune.export import tensorrt as trt_mod


def test_available_is_false_without_tensorrt():
    try:
        import tensorrt  # noqa: F401
    except Exception:
        assert trt_mod.available() is False
    else:
        assert trt_mod.available() is True


def test_engine_builds_and_times(tmp_path):
    pytest.importorskip("tensorrt")
    if not torch.cuda.is_available():
        pytest.skip("TensorRT needs a CUDA GPU")
    from edgeprune.bench.latency import summarize
    from edgeprune.export.onnx import export_onnx
    from edgeprune.models import build_model

    m = build_model("resnet20", (3, 32, 32), 10).eval()
    onnx_path = export_onnx(m, (3, 32, 32), tmp_path / "m.onnx", dynamic_batch=False, batch=1)
    engine = trt_mod.build_engine(onnx_path, tmp_path / "m.engine", fp16=True)
    assert engine.stat().st_size > 0
    res = trt_mod.time_engine(engine, np.zeros((1, 3, 32, 32), np.float32), 0.1, 0.2, 5, summarize, torch)
    assert res["p50_ms"] > 0
