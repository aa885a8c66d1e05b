"""Stage ``export``: the dense and the pruned model as ONNX, each verified against torch on non-members.
(Exporting a finished run again, fp16 / int8 / TensorRT: edgeprune.ops.export.)"""

from __future__ import annotations

from edgeprune.stages import STAGE, StageResult
from edgeprune.stages.common import DENSE_ONNX, ONNX, Context, load_dense, load_pruned


@STAGE.register("export")
def stage(ctx: Context, run) -> StageResult:
    from edgeprune.export.onnx import export_onnx, verify_onnx

    cfg = ctx.recipe.export
    xv, _ = ctx.arrays("nonmembers", cfg.verify_samples)
    results = {}
    for rel, model in ((DENSE_ONNX, load_dense(ctx, run.dir)), (ONNX, load_pruned(ctx, run.dir))):
        export_onnx(model, ctx.ds.in_shape, run.tmp_path(rel), opset=cfg.opset)
        results[rel] = verify_onnx(model, run.tmp_path(rel), xv, rtol=cfg.rtol).to_json()
        run.commit(rel)
    run.manifest["verification"] = results
    return StageResult([DENSE_ONNX, ONNX], results)
