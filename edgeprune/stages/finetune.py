"""Stage ``finetune``: the pruned model fine-tuned with the recipe's defense, its masks kept (or retrained
from the rewound dense weights)."""

from __future__ import annotations

import json

from edgeprune.stages import STAGE, StageResult
from edgeprune.stages.common import (
    PLAN,
    PRUNED_WEIGHTS,
    REWIND_WEIGHTS,
    WEIGHTS,
    Context,
    load_state,
    load_teacher,
    state_bytes,
)


@STAGE.register("finetune")
def stage(ctx: Context, run) -> StageResult:
    from edgeprune.engine import accuracy, predict_logits
    from edgeprune.pipeline import finetune
    from edgeprune.prune.structured import apply_plan, plan_masks

    plan = json.loads(run.path(PLAN).read_text())
    if run.path(REWIND_WEIGHTS).is_file():  # retrain the pruned architecture from the rewound dense weights
        from safetensors.torch import load_file

        from edgeprune.pipeline import rewound

        model = rewound(ctx.fresh_model, load_file(str(run.path(REWIND_WEIGHTS))), plan)
    else:
        model = load_state(apply_plan(ctx.fresh_model(), plan), run.path(PRUNED_WEIGHTS))
    xm, ym = ctx.tensors("members")
    xn, yn = ctx.tensors("nonmembers")
    before = accuracy(predict_logits(model, xn), yn)
    history, defense = finetune(model, xm, ym, ctx.recipe, seed=ctx.recipe.seed + 1, masks=plan_masks(plan),
                                reference=ctx.reference(), teacher=load_teacher(ctx, run.dir),
                                runtime=ctx.runtime)
    run.write_bytes(WEIGHTS, state_bytes(model))
    return StageResult([WEIGHTS], {
        "defense": defense, "scope": ctx.recipe.defense.scope, "rewind": ctx.recipe.prune.rewind,
        "test_accuracy_before": before,
        "train_accuracy": accuracy(predict_logits(model, xm), ym),
        "test_accuracy": accuracy(predict_logits(model, xn), yn),
        "final_loss": history[-1] if history else None,
    })
