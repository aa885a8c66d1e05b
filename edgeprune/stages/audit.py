"""Stage ``audit``: membership inference on the run's exported artifacts, and the machinery that re-auditing
a finished run shares with it (edgeprune.ops.audit)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from edgeprune.stages import STAGE, StageResult
from edgeprune.stages.common import Context, quant_file, variants


@STAGE.register("audit")
def stage(ctx: Context, run) -> StageResult:
    audit = audit_targets(ctx, onnx_targets(ctx, run), run.path("audit_cache"))
    audit["on"] = "onnxruntime (the exported artifacts)"
    audit["numerics"] = audit_numerics(ctx)
    for label, rel in variants(ctx):
        audit["variants"][label]["artifact"] = rel
    return StageResult(write_audit(run, audit), {})


def onnx_targets(ctx: Context, run) -> dict:
    """Predictors of the run's exported variants, each checked against the manifest and keyed for the signal
    cache by the sha256 of the file actually read."""
    from edgeprune.attack.signals import onnx_predictor
    from edgeprune.run import verify_artifact

    out = {}
    for label, rel in variants(ctx):
        numerics = "reference" if rel == quant_file(ctx) else "cpu"
        key = f"{label}-{verify_artifact(run.dir, run.manifest, rel)[:16]}" + ("-reference" if numerics == "reference" else "")
        out[label] = onnx_predictor(run.path(rel), key=key, numerics=numerics)
    return out


def audit_numerics(ctx: Context) -> dict:
    """What computed each audited variant (audit.json): fp32 graphs run as they are, the quantized one with
    reference QDQ semantics (edgeprune.quant.targets)."""
    from edgeprune.quant.numerics import NUMERICS

    return {label: NUMERICS.get("reference").description if rel == quant_file(ctx) else "onnxruntime fp32 on this CPU"
            for label, rel in variants(ctx)}


def audit_targets(ctx: Context, targets: dict, cache_dir: Path, plan=None, cache_stage: Path | None = None) -> dict:
    """Run the audit plan (the recipe's audit section by default) on ``targets`` (label -> predictor);
    new cache entries go to ``cache_stage`` when given (see SignalCache)."""
    from edgeprune.attack.audit import AuditPlan, ModelFactory, pipeline_key, run_audit
    from edgeprune.attack.signals import SignalCache

    cfg = ctx.recipe.audit
    plan = plan or AuditPlan(cfg.attacks, cfg.shadows, cfg.references, cfg.max_samples, cfg.population,
                             cfg.bootstrap, ctx.recipe.seed, cfg.threat, cfg.seeds)
    if plan.execution is None:  # where the attacker models train: the recipe's exec section
        plan = dataclasses.replace(plan, execution=ctx.recipe.exec)
    factory = ModelFactory(ctx.builder(), ctx.ds.in_shape, ctx.recipe,
                           pipeline_key(ctx.recipe, ctx.split.hash()), list(targets), pool=ctx.split.pool)
    return run_audit(ctx.ds, ctx.split, targets, plan, factory, SignalCache(cache_dir, cache_stage))


def write_audit(run, audit: dict) -> list[str]:
    """audit.json and its two plots into the run; returns their run-relative names."""
    from edgeprune.attack.plots import per_class_plot, roc_plot

    roc_plot(audit, run.tmp_path("audit_roc.png"))  # plots first: a failure leaves the old audit in place
    per_class_plot(audit, run.tmp_path("audit_per_class.png"))
    run.write_json("audit.json", audit)
    run.commit("audit_roc.png")
    run.commit("audit_per_class.png")
    return ["audit.json", "audit_roc.png", "audit_per_class.png"]
