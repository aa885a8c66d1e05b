"""Quantization-aware fine-tuning: per-channel symmetric fake-quant weights (straight-through estimator)
at the bit width each layer will have in the exported QDQ ONNX, trained with the recipe's defense.

The fake-quant grid is the export's (int8: onnxruntime's [-127, 127], scale = absmax / 127; int4: [-7, 7],
scale = absmax / 7, passed to onnxruntime as explicit per-channel scales), so snapped weights re-quantize
exactly at export. Written here
because torch's own QAT stack quantizes activations and modules for its own backends, not for QDQ export.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

QRANGE = {8: (-127, 127), 4: (-7, 7)}  # restricted symmetric ranges: scale = absmax / qmax


def fake_quant(w: torch.Tensor, bits: int) -> torch.Tensor:
    qmin, qmax = QRANGE[bits]
    absmax = w.detach().abs().flatten(1).amax(1).clamp(min=1e-12)
    scale = (2 * absmax / (qmax - qmin)).view(-1, *([1] * (w.dim() - 1)))
    q = torch.clamp(torch.round(w / scale), qmin, qmax) * scale
    return w + (q - w).detach()


class FakeQuant(nn.Module):
    def __init__(self, bits: int):
        super().__init__()
        self.bits = bits

    def forward(self, w):
        return fake_quant(w, self.bits)


def quant_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The layers whose weights get quantized: Linear and Conv2d (what the QDQ export quantizes)."""
    return {n: m for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}


def attach(model: nn.Module, bits: dict[str, int]) -> None:
    layers = quant_layers(model)
    for name, b in bits.items():
        parametrize.register_parametrization(layers[name], "weight", FakeQuant(b))


def detach(model: nn.Module) -> None:
    """Remove the fake-quant, leaving the weights snapped to their quantization grid."""
    for m in quant_layers(model).values():
        if parametrize.is_parametrized(m, "weight"):
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)


def snap(model: nn.Module, bits: dict[str, int]) -> None:
    attach(model, bits)
    detach(model)


def qat_phase(model: nn.Module, x, y, train_cfg, bits: dict[str, int], seed: int, masks=None, defense=None,
              desc: str = "QAT", validation=None):
    """Fine-tune ``model`` in place with fake-quant weights, then snap them to the grid: a phase generator
    (edgeprune.engine) that yields its one training request and returns the loss history."""
    from edgeprune.engine import FitRequest
    from edgeprune.errors import ConfigError

    if defense is not None and defense.name == "dpsgd":
        raise ConfigError("QAT with dpsgd is not supported (Opacus cannot take per-sample gradients through "
                          "fake-quant parametrizations); use qat_epochs: 0 or another defense")
    attach(model, bits)
    pmasks = {k.replace(".weight", ".parametrizations.weight.original") if k[: -len(".weight")] in bits else k: v
              for k, v in (masks or {}).items()}
    try:
        history = yield FitRequest(model, x, y, train_cfg, seed, phase="QAT", description=desc, masks=pmasks or None,
                                   defense=defense, validation=validation)
    finally:
        detach(model)
    return history


def qat(model: nn.Module, x, y, train_cfg, bits: dict[str, int], seed: int, masks=None, defense=None,
        desc: str = "QAT", runtime=None, validation=None) -> list[float]:
    """``qat_phase`` trained on ``runtime``."""
    from edgeprune.engine import run

    return run(qat_phase(model, x, y, train_cfg, bits, seed, masks, defense, desc, validation), runtime)
