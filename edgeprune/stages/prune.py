"""Stage ``prune``: the pruning plan (the recipe's method and schedule, or a replayed plan) and the pruned
weights before fine-tuning."""

from __future__ import annotations

from edgeprune.stages import STAGE, StageResult
from edgeprune.stages.common import PLAN, PRUNED_WEIGHTS, Context, load_dense, state_bytes


@STAGE.register("prune")
def stage(ctx: Context, run) -> StageResult:
    from edgeprune.models import count_macs, count_params
    from edgeprune.pipeline import plan_for
    from edgeprune.prune.structured import apply_plan

    dense = load_dense(ctx, run.dir)
    params0, macs0 = count_params(dense), count_macs(dense, ctx.ds.in_shape)
    xm, ym = ctx.tensors("members")
    if ctx.recipe.prune.plan:
        from edgeprune.prune.structured import read_plan

        plan = read_plan(ctx.recipe.prune.plan)
        pruned = apply_plan(dense, plan)
    else:
        pruned = dense
        plan, _ = plan_for(pruned, ctx.ds.in_shape, ctx.recipe, xm, ym, ctx.recipe.seed + 1,
                           reference=ctx.reference(), runtime=ctx.runtime)
    run.write_json(PLAN, plan)
    run.write_bytes(PRUNED_WEIGHTS, state_bytes(pruned))
    from edgeprune.prune.masks import decode

    masked = {k: decode(v) for k, v in plan.get("masks", {}).items()}
    zero_frac = (sum(int((~m).sum()) for m in masked.values()) / max(sum(m.numel() for m in masked.values()), 1)
                 if masked else 0.0)
    return StageResult([PLAN, PRUNED_WEIGHTS], {
        "method": plan["method"], "schedule": plan.get("schedule", "one-shot"),
        "structural_ops": len(plan.get("ops", [])), "masked_weights": len(masked),
        "masked_fraction": zero_frac,
        "params_dense": params0,
        "params_pruned": count_params(pruned),
        "params_pruned_nonzero": int(sum(int((p != 0).sum()) for p in pruned.parameters())),
        "macs_dense": macs0,
        "macs_pruned": count_macs(pruned, ctx.ds.in_shape),
    })
