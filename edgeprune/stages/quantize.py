"""Stage ``quantize``: the pruned model as int8 (or mixed int8/int4) QDQ ONNX, scored with reference QDQ
numerics so the figures are the same on every CPU."""

from __future__ import annotations

import json

from edgeprune.stages import STAGE, StageResult
from edgeprune.stages.common import ONNX, PLAN, Context, load_pruned, load_teacher, quant_file


@STAGE.register("quantize")
def stage(ctx: Context, run) -> StageResult:
    from edgeprune.export.onnx import onnx_predict
    from edgeprune.pipeline import quantize_model
    from edgeprune.prune.structured import plan_masks
    from edgeprune.quant.numerics import NUMERICS, predict
    from edgeprune.quant.targets import kernels_check

    cfg = ctx.recipe.quant
    rel = quant_file(ctx)
    if rel is None:
        return StageResult([], {"mode": "none"})
    from edgeprune.pipeline import calibration_set

    xm, ym = ctx.tensors("members")
    xc = calibration_set(xm.numpy(), cfg.calibration_samples, ctx.recipe.seed)  # as the attacker's pipeline draws it
    plan = json.loads(run.path(PLAN).read_text())
    _, info = quantize_model(load_pruned(ctx, run.dir), ctx.ds.in_shape, xc, ctx.recipe, run.tmp_path(rel), xm, ym,
                             ctx.reference(), load_teacher(ctx, run.dir), plan_masks(plan), ctx.recipe.seed + 1,
                             runtime=ctx.runtime)
    run.commit(rel)
    xt, yt = ctx.arrays("nonmembers")
    q = predict(run.path(rel), xt, "reference")  # the same figures on every CPU (edgeprune.quant.targets)
    f = onnx_predict(run.path(ONNX), xt)
    bits = info.pop("weight_bits")
    weights = ("int8 symmetric per-channel" + (", 7-bit range [-64, 64]" if info["int8"]["reduce_range"] else "")
               if cfg.mode == "int8" else None) or \
        f"int8/int4 symmetric per-channel ({sum(b == 4 for b in bits.values())} of {len(bits)} layers at 4 bits)"
    return StageResult([rel], {
        **info, "weight_bits": bits,
        "mode": cfg.mode, "activations": cfg.activations, "weights": weights,
        "calibration": cfg.calibration, "calibration_samples": len(xc),
        "numerics": NUMERICS.get("reference").description,
        "test_accuracy": float((q.argmax(1) == yt).mean()),
        "top1_agreement_with_fp32": float((q.argmax(1) == f.argmax(1)).mean()),
        "cpu_kernels": kernels_check(run.path(rel), xt, yt),
    })
