"""The pipeline stages, one module each, in ``STAGES`` order.

Every stage is a function ``stage(ctx, run) -> StageResult`` registered in ``STAGE`` under its name: it reads
the earlier stages' artifacts from the run directory (``run``, an edgeprune.run.Run), writes its own through
``run`` and returns the run-relative files it wrote (``artifacts``, hashed into the manifest) and what it adds
to the run's results (``results``, the manifest's ``stages.<name>.results``). edgeprune.stages.runner owns the
run directory, the order and resume; edgeprune.stages.common holds the Context and the run's file names.

The stages are declared here and imported on first use, so importing this package stays light.
"""

from __future__ import annotations

from typing import NamedTuple

from edgeprune.registry import Registry

STAGES = ["train", "prune", "finetune", "export", "quantize", "audit", "bench", "report"]


class StageResult(NamedTuple):
    """What a stage made: run-relative ``artifacts`` and the ``results`` it adds to the manifest."""

    artifacts: list[str]
    results: dict


STAGE: Registry = Registry("stage")
for _name, _doc in zip(STAGES, [
    "train the dense model (or load --weights)",
    "prune with the recipe's method and schedule (or replay a plan)",
    "fine-tune the pruned model with the defense, masks kept",
    "export the dense and the pruned model to ONNX, verified against torch",
    "quantize the pruned model (int8 / mixed precision ONNX)",
    "audit membership inference on the exported artifacts",
    "time the exported variants with onnxruntime",
    "write report.json and report.md",
], strict=True):
    STAGE.declare(_name, f"edgeprune.stages.{_name}", doc=_doc)
