"""Stage ``train``: the dense model, trained on the members with the recipe (or loaded from --weights)."""

from __future__ import annotations

from edgeprune.stages import STAGE, StageResult
from edgeprune.stages.common import DENSE_WEIGHTS, REWIND_WEIGHTS, TEACHER_WEIGHTS, Context, state_bytes


@STAGE.register("train")
def stage(ctx: Context, run) -> StageResult:
    from edgeprune.engine import accuracy, predict_logits
    from edgeprune.models import count_params
    from edgeprune.pipeline import train_dense

    model = ctx.initial
    xm, ym = ctx.tensors("members")
    xn, yn = ctx.tensors("nonmembers")
    history, artifacts, extra = [], [DENSE_WEIGHTS], {}
    if ctx.recipe.weights is None:
        trained = train_dense(model, xm, ym, ctx.recipe, seed=ctx.recipe.seed, reference=ctx.reference(),
                              runtime=ctx.runtime)
        history, rewind = trained.history, trained.rewind
        extra["defense"] = trained.defense
        if trained.teacher is not None:
            run.write_bytes(TEACHER_WEIGHTS, state_bytes(trained.teacher))
            artifacts.append(TEACHER_WEIGHTS)
            extra["teacher_test_accuracy"] = accuracy(predict_logits(trained.teacher, xn), yn)
    else:
        rewind = ctx.init_state if ctx.recipe.prune.rewind == "init" else None
    if rewind is not None:
        from safetensors.torch import save

        run.write_bytes(REWIND_WEIGHTS, save({k: v.contiguous() for k, v in rewind.items()}))
        artifacts.append(REWIND_WEIGHTS)
        extra["rewind"] = ctx.recipe.prune.rewind
    run.write_bytes(DENSE_WEIGHTS, state_bytes(model))
    return StageResult(artifacts, {**extra,
        "loaded_weights": ctx.recipe.weights,
        "epochs": len(history),
        "final_loss": history[-1] if history else None,
        "train_accuracy": accuracy(predict_logits(model, xm), ym),
        "test_accuracy": accuracy(predict_logits(model, xn), yn),
        "params": count_params(model),
    })
