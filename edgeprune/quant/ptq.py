"""Static int8 PTQ through onnxruntime.quantization: QDQ format, symmetric int8 per-channel weights.

Activations are uint8 by default (U8S8), the fast combination on x86 CPUs (DESIGN.md); int8 activations
(S8S8) are what TensorRT wants and can be selected.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from pathlib import Path

import numpy as np

from edgeprune.errors import ConfigError


def quantize_int8(
    src: str | Path,
    dst: str | Path,
    calibration: np.ndarray,
    activations: str = "uint8",
    method: str = "minmax",
    batch_size: int = 32,
) -> Path:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    if method not in methods:
        raise ConfigError(f"calibration must be one of {sorted(methods)}, got {method!r}")
    act = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}.get(activations)
    if act is None:
        raise ConfigError(f"activations must be uint8 or int8, got {activations!r}")

    import onnx

    dim0 = onnx.load(str(src), load_external_data=False).graph.input[0].type.tensor_type.shape.dim[0]
    if dim0.HasField("dim_value"):  # a graph with a fixed batch takes calibration batches of exactly that size
        batch_size = dim0.dim_value
        calibration = calibration[: max(batch_size, len(calibration) // batch_size * batch_size)]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._batches = iter(
                [{"input": calibration[i : i + batch_size]} for i in range(0, len(calibration), batch_size)]
            )

        def get_next(self):
            return next(self._batches, None)

    logging.getLogger("root").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=False)
        quantize_static(
            str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=act, weight_type=QuantType.QInt8, calibrate_method=methods[method],
            extra_options={"WeightSymmetric": True, "ActivationSymmetric": activations == "int8"},
        )
    return Path(dst)
