"""`edgeprune bundle`: the Jetson bundle of a run's compressed model (edgeprune.export.bundle)."""

from __future__ import annotations

import functools
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


def locks_output(fn):
    """``fn(run_dir, out, ...)`` runs holding the lock of ``out`` (a symbolic link as ``out`` is refused): a
    second bundle into the same directory is refused at once, before any work, not when it is done."""

    @functools.wraps(fn)
    def locked(run_dir, out, *args, **kwargs):
        from edgeprune.run import RunLock, output_path

        with RunLock(output_path(out)):
            return fn(run_dir, out, *args, **kwargs)

    return locked


def bundle_inputs(run_dir: str | Path, out: str | Path, precisions: list[str] | None, read=None):
    """What every bundle of a run starts from, read under the run's lock (nothing rewrites the run while its
    model is read): the precisions, the run's context, its compressed model, calibration and sample inputs,
    the manifest's ``source`` block and ``read(ctx, model)``'s result (more run files to read locked)."""
    from edgeprune.run import RunLock, check_output_dir, output_path, read_manifest

    precisions = bundle_precisions(precisions)
    check_output_dir(output_path(out), "bundle")  # before any work (checked again at the end)
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


@locks_output
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
