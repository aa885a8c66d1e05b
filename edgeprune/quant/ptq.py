"""Static int8 PTQ through onnxruntime.quantization: QDQ format, symmetric int8 per-channel weights.

Activations are uint8 by default (U8S8), the fast combination on x86 CPUs (DESIGN.md); int8 activations
(S8S8) are what TensorRT wants and can be selected. ``reduce_range`` quantizes weights to 7 bits
([-64, 64]), what onnxruntime recommends where its U8S8 kernels saturate (x86 without VNNI: 255 * 64 * 2
fits int16); which artifact each deployment target gets is decided in edgeprune.quant.targets.
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
    weight_bits: dict[str, int] | None = None,
    reduce_range: bool = False,
) -> Path:
    """``weight_bits`` maps weight initializer names (the torch parameter names, which the exporter keeps) to
    4 or 8; 4-bit weights become INT4 per-channel symmetric QDQ (mixed precision)."""
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

    overrides = {}
    if weight_bits:
        names = {i.name for i in onnx.load(str(src), load_external_data=False).graph.initializer}
        missing = sorted(set(weight_bits) - names)
        if missing:
            raise ConfigError(f"mixed precision names weights the ONNX graph does not have: {', '.join(missing[:3])}")
        overrides = {n: _int4_channels(src, n, QuantType.QInt4) for n, b in weight_bits.items() if b == 4}
    logging.getLogger("root").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=False)
        quantize_static(
            str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=reduce_range,
            activation_type=act, weight_type=QuantType.QInt8, calibrate_method=methods[method],
            extra_options={"WeightSymmetric": True, "ActivationSymmetric": activations == "int8",
                           **({"TensorQuantOverrides": overrides} if overrides else {})},
        )
    return Path(dst)


def _int4_channels(src, name: str, qtype) -> list[dict]:
    """Per-channel INT4 overrides with restricted symmetric range [-7, 7], scale = absmax / 7 (like
    onnxruntime's int8 [-127, 127]). onnxruntime's own int4 range [-8, 7] with scale 2 * absmax / 15 is not
    a fixed point (snapping grows absmax by 16/15), so QAT's snapped weights would not re-quantize
    exactly; explicit scales make the export reproduce the fake-quant grid bit for bit."""
    import onnx
    from onnx import numpy_helper

    init = next(i for i in onnx.load(str(src)).graph.initializer if i.name == name)
    w = numpy_helper.to_array(init).astype(np.float32)
    absmax = np.abs(w.reshape(w.shape[0], -1)).max(axis=1)
    scales = np.where(absmax > 0, absmax / 7.0, 1.0).astype(np.float32)
    channels = [{"scale": np.array(s, dtype=np.float32), "zero_point": 0} for s in scales]
    channels[0].update({"quant_type": qtype, "axis": 0})
    return channels
