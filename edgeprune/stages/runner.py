"""The stage runner: owns the run directory (locked, staged, renamed at the end), the manifest's run-wide
entries, resume (a stage done before with the same inputs is skipped; a stale one is rebuilt with every later
stage) and the order of ``STAGES``."""

from __future__ import annotations

import time
from pathlib import Path

from edgeprune.recipe import Recipe
from edgeprune.stages import STAGE, STAGES
from edgeprune.stages.common import Context

PRUNE_STAGES = ["train", "prune", "finetune", "export"]


def compress(recipe: Recipe, out: str | Path, resume: bool = False, log=print, stages: list[str] | None = None) -> Path:
    """Run every stage (or the first ones: ``stages``) into ``out`` (staged, renamed at the end)."""
    from edgeprune.run import Run

    ctx = Context(recipe)  # all user-input checks happen before anything is written
    run = Run(out, recipe.to_dict(), resume=resume)  # locked until it completes (or this process ends)
    try:
        return run_stages(ctx, run, recipe, stages, log)
    finally:
        run.close()


def run_stages(ctx: Context, run, recipe: Recipe, stages: list[str] | None, log) -> Path:
    """Each of ``stages`` (default: all) in order, through the STAGE registry; returns the completed run."""
    run.manifest["data"] = {"spec": recipe.data, "name": ctx.ds.name, "fingerprint": ctx.ds.fingerprint(),
                            "samples": len(ctx.ds), "preprocessing": ctx.ds.preprocessing}
    run.manifest["split"] = ctx.split.summary()
    run.manifest["model"] = ctx.model_info()
    run.manifest["seeds"] = {"run": recipe.seed, "split": recipe.seed, "train": recipe.seed,
                             "finetune": recipe.seed + 1}
    run.manifest["stages_requested"] = stages or STAGES
    for name in stages or STAGES:
        if run.done(name):
            log(f"[dim]{name}: done before, skipped[/dim]")
            continue
        if run.manifest["stages"].get(name, {}).get("done"):
            log(f"[yellow]{name}: {escape(run.stale(name))}; rebuilding it and every later stage[/yellow]")
        run.invalidate_from(STAGES, name)
        t0 = time.perf_counter()
        artifacts, results = STAGE.get(name)(ctx, run)
        run.finish(name, artifacts, results, time.perf_counter() - t0)
        log(f"{name}: done in {time.perf_counter() - t0:.1f}s")
        if (results.get("cpu_kernels") or {}).get("warning"):
            log(f"[yellow]{results['cpu_kernels']['warning']}[/yellow]")
    return run.complete()


def escape(text: str) -> str:
    """User-derived text inside a rich-markup log line."""
    from rich.markup import escape as rich_escape

    return rich_escape(str(text))


def prune_run(recipe: Recipe, out: str | Path, resume: bool = False, log=print) -> dict:
    """`edgeprune prune`: train (or load) -> prune with the recipe's method and schedule (or replay a plan)
    -> fine-tune with the masks kept -> verified ONNX. Returns the summary."""
    run_dir = compress(recipe, out, resume=resume, log=log, stages=PRUNE_STAGES)
    from edgeprune.run import read_manifest

    man = read_manifest(run_dir)
    st = man["stages"]
    return {"run_dir": str(run_dir), **st["prune"]["results"],
            "dense_test_accuracy": st["train"]["results"]["test_accuracy"],
            "test_accuracy": st["finetune"]["results"]["test_accuracy"],
            "test_accuracy_before_finetune": st["finetune"]["results"]["test_accuracy_before"],
            "onnx_verified": all(v["passed"] for v in man.get("verification", {}).values())}
