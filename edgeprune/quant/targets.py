"""Which int8 artifact each deployment target gets, and with which numerics it is scored and audited here.

- ``ort-cpu``: onnxruntime on a CPU (the run's ``model.int8.onnx``, ``export --format onnx``, the latency
  table): uint8 activations x int8 per-channel weights (U8S8, the fast pair on x86). Where onnxruntime's U8S8
  kernels saturate (x86 without VNNI / AMX, see edgeprune.cpu) the weights get 7 bits (``reduce_range``),
  as onnxruntime's quantization docs recommend; ``quant.reduce_range`` in the recipe overrides the choice.
- ``tensorrt``: TensorRT on a Jetson / NVIDIA GPU (the bundle, ``export --format tensorrt``): symmetric int8
  activations and weights with the full 8-bit range (TensorRT accumulates in int32, nothing saturates).

Both are scored and audited with reference QDQ semantics (edgeprune.quant.numerics): dequantize, then
compute in fp32, which every int32-accumulating engine computes up to rounding, so the figures do not depend
on the CPU that made them; how far this CPU's fused kernels are from it is recorded beside them.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeprune.errors import ConfigError
from edgeprune.registry import Registry

AGREEMENT_TOLERANCE = 0.01  # CPU kernels vs reference: top-1 may differ on at most this fraction of samples


@dataclass(frozen=True)
class Int8Target:
    name: str
    description: str
    activations: str  # default activation type
    numerics: str  # how its accuracy and audit are computed on the build machine
    full_range: bool  # True: 8-bit weights always (the engine accumulates in int32)

    def settings(self, activations: str | None = None, reduce_range: bool | None = None, cpu: dict | None = None) -> dict:
        """The resolved quantization settings for this target: activations, reduce_range and why."""
        act = activations or self.activations
        if act not in ("uint8", "int8"):
            raise ConfigError(f"activations must be uint8 or int8, got {act!r}")
        if self.full_range:
            if reduce_range:
                raise ConfigError(f"{self.name} keeps full 8-bit weights (it accumulates in int32); "
                                  "reduce_range applies to onnxruntime CPU artifacts only")
            return {"target": self.name, "activations": act, "reduce_range": False,
                    "reduce_range_reason": "full 8-bit range: the engine accumulates in int32",
                    "numerics": self.numerics}
        if reduce_range is not None:
            why = "set in the recipe"
        else:
            from edgeprune.cpu import cpu_info

            cpu = cpu or cpu_info()
            sat = cpu["u8s8_saturates"]
            reduce_range = sat is not False  # unknown x86 features: the safe choice
            why = (f"auto: this CPU's U8S8 kernels are {cpu['int8_kernels']}" if sat is not None
                   else "auto: CPU features unknown, 7-bit weights cannot saturate any onnxruntime kernel")
        return {"target": self.name, "activations": act, "reduce_range": bool(reduce_range),
                "reduce_range_reason": why, "numerics": self.numerics}


TARGETS: Registry[Int8Target] = Registry("int8 target")
for _t in (
    Int8Target("ort-cpu", "onnxruntime on a CPU: U8S8, 7-bit weights where the CPU's kernels saturate",
               "uint8", "reference", full_range=False),
    Int8Target("tensorrt", "TensorRT (Jetson / NVIDIA GPU): symmetric S8S8 with the full 8-bit range",
               "int8", "reference", full_range=True),
):
    TARGETS.register(_t.name)(_t)


def kernels_check(path, x, labels=None, numerics: str = "cpu") -> dict:
    """This CPU's fused int8 kernels (or other ``numerics``) against the reference semantics on x: the figures
    recorded beside the reference ones, and a one-line warning when top-1 differs on more than
    AGREEMENT_TOLERANCE of x."""
    import numpy as np

    from edgeprune.cpu import cpu_info
    from edgeprune.quant.numerics import NUMERICS, output_step, predict

    cpu, ref = predict(path, x, numerics), predict(path, x, "reference")
    step = output_step(path)
    diff = float(np.abs(cpu - ref).max())
    agree = float((cpu.argmax(1) == ref.argmax(1)).mean())
    info = cpu_info()
    kernels = info["int8_kernels"] if numerics == "cpu" else NUMERICS.get(numerics).description
    out = {"cpu": info["model"], "int8_kernels": kernels, "max_abs_diff": diff,
           "max_abs_diff_steps": diff / step if step else None, "top1_agreement_with_reference": agree,
           "tolerance": AGREEMENT_TOLERANCE, "warning": None}
    if labels is not None:
        out["test_accuracy"] = float((cpu.argmax(1) == labels).mean())
    if agree < 1.0 - AGREEMENT_TOLERANCE:
        out["warning"] = (f"this CPU's int8 kernels ({kernels}) disagree with reference QDQ on "
                          f"top-1 for {1 - agree:.1%} of samples (tolerance {AGREEMENT_TOLERANCE:.0%}); "
                          "figures use the reference, the CPU's are recorded beside them")
    return out
