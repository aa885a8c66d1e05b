"""`edgeprune bundle`: the Jetson bundle of a run's compressed model (edgeprune.export.bundle)."""

from __future__ import annotations

from pathlib import Path

from edgeprune.errors import ConfigError
from edgeprune.stages.common import PLAN, load_pruned, open_run

KERNELS_DIR = Path(__file__).resolve().parents[2] / "kernels"  # CUDA / plugin sources shipped in bundles


def bundle_precisions(precisions: list[str] | None) -> list[str]:
    precisions = precisions or ["fp16", "int8"]
    for p in precisions:
        if p not in ("fp32", "fp16", "int8"):
            raise ConfigError(f"unknown precision {p!r}; choose from fp32, fp16, int8")
    return precisions


def bundle_inputs(run_dir: str | Path, out: str | Path, precisions: list[str] | None, read=None):
    """What every bundle of a run starts from, read under the run's lock (nothing rewrites the run while its
    model is read): the precisions, the run's context, its compressed model, calibration and sample inputs,
    the manifest's ``source`` block and ``read(ctx, model)``'s result (more run files to read locked)."""
    from edgeprune.run import RunLock, check_output_dir, read_manifest

    precisions = bundle_precisions(precisions)
    check_output_dir(Path(out).expanduser().resolve(), "bundle")  # before any work (checked again at the end)
    read_manifest(run_dir)
    with RunLock(run_dir):
        manifest, ctx = open_run(run_dir)
        model = load_pruned(ctx, Path(run_dir))
        extra = read(ctx, model) if read is not None else None
    xc, _ = ctx.arrays("members", ctx.recipe.quant.calibration_samples)
    xs, _ = ctx.arrays("nonmembers", 16)
    source = {"run": str(Path(run_dir).resolve()), "recipe_hash": manifest["recipe_hash"],
              "model": manifest["model"], "plan_sha256": manifest["artifacts"].get(PLAN)}
    return precisions, ctx, model, xc, xs, source, extra


def bundle_run(run_dir: str | Path, out: str | Path, precisions: list[str] | None = None, batch: int = 1,
               dynamic_batch: bool = False, log=print) -> Path:
    """The Jetson bundle of a run's compressed model (see edgeprune.export.bundle)."""
    from edgeprune.export.bundle import make_bundle

    precisions, ctx, model, xc, xs, source, _ = bundle_inputs(run_dir, out, precisions)
    out = make_bundle(model, ctx.ds.in_shape, out, precisions, xc, xs, batch=batch, dynamic_batch=dynamic_batch,
                      opset=ctx.recipe.export.opset, kernels_dir=KERNELS_DIR, source=source,
                      preprocessing=ctx.ds.preprocessing)
    log(f"bundle written to {out}")
    return out
