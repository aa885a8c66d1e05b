"""Stage ``bench``: latency of the run's exported variants with onnxruntime on this CPU, the dense model the
baseline of the same invocation. (Timing a finished run on other backends: edgeprune.ops.bench.)"""

from __future__ import annotations

from pathlib import Path

from edgeprune.stages import STAGE, StageResult
from edgeprune.stages.common import Context, load_dense, load_pruned, variants


@STAGE.register("bench")
def stage(ctx: Context, run) -> StageResult:
    from edgeprune.bench.backends import Settings
    from edgeprune.bench.latency import bench_targets
    from edgeprune.bench.machine import machine

    cfg = ctx.recipe.bench
    settings = Settings(cfg.threads, cfg.warmup_s, cfg.duration_s, cfg.min_runs, seed=ctx.recipe.seed)
    entries = bench_targets(run_targets(ctx, run), ["ort-cpu"], cfg.batches, settings, baseline="dense")
    for e in entries:  # paths inside the run are stored relative to it
        for v in e["variants"].values():
            v["artifact"] = str(Path(v["artifact"]).relative_to(run.dir))
    run.write_json("bench.json", {"machine": machine(), "entries": entries})
    return StageResult(["bench.json"], {})


def run_targets(ctx: Context, run, with_torch: bool = False) -> list:
    """The run's variants to time (their ONNX files checked against the manifest first)."""
    from edgeprune.bench.backends import Target
    from edgeprune.run import verify_artifact

    out = []
    for label, rel in variants(ctx):
        verify_artifact(run.dir, run.manifest, rel)
        module = None
        if with_torch and label == "dense":
            module = load_dense(ctx, run.dir)
        elif with_torch and label == "pruned":
            module = load_pruned(ctx, run.dir)
        out.append(Target(label, ctx.ds.in_shape, str(run.dir / rel), module))
    return out
