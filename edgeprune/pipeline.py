"""The compression pipeline as plain functions, shared by the target run and by the attacker's
shadow / reference models (which must go through exactly the same steps: an adaptive attacker)."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgeprune.recipe import Recipe


def train_dense(model: nn.Module, x: torch.Tensor, y: torch.Tensor, recipe: Recipe, seed: int, desc="train dense"):
    from edgeprune.train import train

    return train(model, x, y, recipe.train, seed=seed, description=desc)


def plan_for(model: nn.Module, in_shape, recipe: Recipe, x: torch.Tensor, y: torch.Tensor, seed: int):
    """Prune ``model`` in place with the recipe's method and schedule; returns (plan, masks)."""
    from edgeprune.prune import schedule

    return schedule.run(model, in_shape, x, y, recipe.prune, recipe.finetune, seed)


def finetune(pruned: nn.Module, x: torch.Tensor, y: torch.Tensor, recipe: Recipe, seed: int, desc="fine-tune",
             masks=None):
    from edgeprune.train import train

    return train(pruned, x, y, recipe.finetune, seed=seed, description=desc, masks=masks or None)


def quantize_model(model: nn.Module, in_shape, calibration: np.ndarray, recipe: Recipe, dst: Path) -> Path:
    """Export ``model`` to ONNX and quantize it to int8 QDQ at ``dst``."""
    from edgeprune.export.onnx import export_onnx
    from edgeprune.quant.ptq import quantize_int8

    with tempfile.TemporaryDirectory() as tmp:
        src = export_onnx(model, in_shape, Path(tmp) / "fp32.onnx", opset=recipe.export.opset)
        return quantize_int8(src, dst, calibration, activations=recipe.quant.activations,
                             method=recipe.quant.calibration)


def calibration_set(x: np.ndarray, n: int, seed: int) -> np.ndarray:
    if len(x) <= n:
        return x
    return x[np.sort(np.random.default_rng(seed).choice(len(x), n, replace=False))]


@dataclass
class PipelineModels:
    """Every variant one pass of the pipeline produces, keyed like the run's variants."""

    models: dict[str, nn.Module] = field(default_factory=dict)  # dense, pruned
    onnx: dict[str, Path] = field(default_factory=dict)  # pruned+int8


def run_pipeline(
    make_model, in_shape, x: torch.Tensor, y: torch.Tensor, recipe: Recipe, seed: int, workdir: Path, tag: str,
    dense_only: bool = False,
) -> PipelineModels:
    """Train, prune, fine-tune (and quantize) a fresh model on (x, y): what an attacker's shadow goes through."""
    torch.manual_seed(seed)
    dense = make_model()
    train_dense(dense, x, y, recipe, seed, desc=f"{tag} dense")
    if dense_only:
        return PipelineModels(models={"dense": dense.eval()})
    pruned = make_model()
    pruned.load_state_dict(dense.state_dict())
    _, masks = plan_for(pruned, in_shape, recipe, x, y, seed + 1)
    finetune(pruned, x, y, recipe, seed + 1, desc=f"{tag} fine-tune", masks=masks)
    out = PipelineModels(models={"dense": dense.eval(), "pruned": pruned.eval()})
    if recipe.quant.mode == "int8":
        calib = calibration_set(x.numpy(), recipe.quant.calibration_samples, seed)
        out.onnx["pruned+int8"] = quantize_model(pruned, in_shape, calib, recipe, workdir / f"{tag}.int8.onnx")
    return out
