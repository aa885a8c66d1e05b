"""Membership-inference audits outside ``compress``: a finished run again (other attacks, settings or
executor; signals cached in the run), or a model that edgeprune did not make (an ONNX file, or a zoo / user
model with weights)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from edgeprune.errors import ConfigError
from edgeprune.recipe import Recipe
from edgeprune.stages.audit import audit_numerics, audit_targets, onnx_targets, write_audit
from edgeprune.stages.common import DENSE_WEIGHTS, WEIGHTS, load_dense, load_pruned, open_run, variants
from edgeprune.stages.report import stage as report_stage


def audit_run(run_dir: str | Path, attacks: list[str] | None = None, shadows: int | None = None,
              references: int | None = None, on: str = "onnx", data: str | None = None, log=print,
              threat: str | None = None, seeds: int | None = None, preset: str | None = None,
              execution=None, runtime=None) -> dict:
    """Re-audit a finished run (signals are cached in the run, so other attacks cost little). The run is
    locked and never moved: the new audit files are staged beside it and swapped in only when the audit
    completes; impossible settings are refused first. ``execution`` (ExecConfig): where the attacker models
    train, instead of the run's recipe ``exec``; ``runtime`` (RuntimeConfig): the device they train on, instead
    of the run's recipe ``runtime``."""
    from edgeprune.attack.audit import AuditPlan, check_plan, resolve_attacks, with_preset
    from edgeprune.attack.signals import torch_predictor
    from edgeprune.run import RunUpdate, verify_artifact

    if on not in ("onnx", "torch"):
        raise ConfigError(f"--on must be onnx or torch, got {on[:40]!r}")
    if attacks is not None:
        resolve_attacks(attacks)  # before the run is opened or touched
    if execution is not None:  # before the run is opened or touched
        dataclasses.replace(Recipe(), exec=execution).validate(names=False)
    if (references is not None and (references == 1 or references < 0)) or (shadows is not None and shadows < 0):
        raise ConfigError("--shadows must be >= 0 and --references 0 or at least 2 (LiRA needs IN and OUT references)")
    with RunUpdate(run_dir) as up:
        _, ctx = open_run(up.dir)
        recipe = ctx.recipe
        if data is not None and data != recipe.data:
            raise ConfigError(f"run {run_dir} was made on {recipe.data!r}, not {data!r}")
        a = recipe.audit
        plan = with_preset(AuditPlan(attacks if attacks is not None else a.attacks, a.shadows, a.references,
                                     a.max_samples, a.population, a.bootstrap, recipe.seed, a.threat, a.seeds), preset,
                           {"shadows": shadows, "references": references, "threat": threat, "seeds": seeds})
        if execution is not None:
            recipe.exec = execution
        if runtime is not None:
            recipe.runtime = runtime
        plan.execution = recipe.exec
        check_plan(plan)
        if on == "onnx":
            audited, targets = variants(ctx), onnx_targets(ctx, up)
        else:
            audited = [("dense", DENSE_WEIGHTS), ("pruned", WEIGHTS)]
            key = {rel: verify_artifact(up.dir, up.manifest, rel)[:16] for _, rel in audited}
            from edgeprune.runtime import of_recipe

            rt = of_recipe(recipe)
            targets = {"dense": torch_predictor(load_dense(ctx, up.dir), f"torch-dense-{key[DENSE_WEIGHTS]}", runtime=rt),
                       "pruned": torch_predictor(load_pruned(ctx, up.dir), f"torch-pruned-{key[WEIGHTS]}", runtime=rt)}
        # new cache entries are staged with the update: a failed audit leaves the finished run as it was
        audit = audit_targets(ctx, targets, up.dir / "audit_cache", plan, cache_stage=up.staged_path("audit_cache"))
        up.stage_tree("audit_cache")
        audit["on"] = "onnxruntime (the exported artifacts)" if on == "onnx" else "torch (fp32 modules)"
        if on == "onnx":
            audit["numerics"] = audit_numerics(ctx)
        for label, rel in audited:
            audit["variants"][label]["artifact"] = rel
        artifacts = write_audit(up, audit)
        up.manifest["stages"]["audit"]["artifacts"] = artifacts
        up.manifest["stages"]["audit"]["results"] = {"attacks": audit["attacks_requested"], "on": on}
        if "bench" in up.manifest["stages"]:
            report_stage(ctx, up)
    log(f"audit written to {Path(run_dir) / 'audit.json'}")
    return audit


def audit_model(target: str, data: str, model: str | None = None, weights: str | None = None,
                membership: str = "train-test", seed: int = 0, attacks: list[str] | None = None,
                shadows: int | None = None, references: int | None = None, out: str | Path | None = None,
                recipe_path: str | None = None, log=print, threat: str = "adaptive", seeds: int | None = None,
                preset: str | None = None, execution=None, runtime=None) -> tuple[Path, dict]:
    """Audit a model that was not made by ``compress``: an ONNX file, or a zoo / user model with weights.

    Membership comes from the data: ``train-test`` (an npz / CIFAR-10 file's train rows are members, half of
    its test rows non-members, the other half the attacker's pool) or ``split`` (edgeprune's seeded split).
    Shadow / reference models need the architecture (``--model``) and are trained with the recipe's
    training settings (dense only: the attacker does not know how the model was compressed)."""
    from edgeprune.attack.audit import AuditPlan, check_plan, resolve_attacks, with_preset
    from edgeprune.data import load_dataset, make_split, split_train_test
    from edgeprune.export.check import check_fits_data, check_onnx_file
    from edgeprune.recipe import load_recipe
    from edgeprune.run import RunLock, check_output_dir, output_path

    path = Path(target).expanduser()
    out = output_path(out or Path("audits") / path.stem)
    check_output_dir(out, "audit")
    recipe = load_recipe(recipe_path) if recipe_path else Recipe()
    recipe.data, recipe.seed = data, seed
    # every option is checked before the data is read or anything is trained
    if path.suffix == ".onnx":
        check_onnx_file(path)
    elif weights is None:
        raise ConfigError("auditing a model spec needs --weights (or give an .onnx file)")
    elif not Path(weights).expanduser().is_file():
        raise ConfigError(f"weights file not found: {weights}")
    if membership not in ("train-test", "split"):
        raise ConfigError(f"--membership must be train-test or split, got {membership[:40]!r}")
    resolve_attacks(attacks or recipe.audit.attacks)
    if execution is not None:
        recipe.exec = execution
    if runtime is not None:
        recipe.runtime = runtime
    recipe.validate(names=False)
    cfg = recipe.audit
    plan = with_preset(AuditPlan(attacks or cfg.attacks, 0, 0, cfg.max_samples, cfg.population, cfg.bootstrap, seed),
                       preset, {"shadows": shadows, "references": references, "threat": threat, "seeds": seeds})
    plan.execution = recipe.exec
    check_plan(plan)
    ds = load_dataset(data)  # the data checked (a user mistake here leaves nothing behind, not even a lock)
    if membership == "train-test":
        split = split_train_test(ds, seed)
    else:
        split = make_split(ds, seed, recipe.split.member_fraction, recipe.split.max_members)
    if path.suffix == ".onnx":
        check_fits_data(path, ds.x, ds.num_classes)
    # then locked before any model runs or trains: a second audit into the same -o is refused at once
    with RunLock(out):
        check_output_dir(out, "audit")  # and again when the result is swapped in
        return _audit_file(path, target, model, weights, seed, recipe, plan, ds, split, membership, out, log)


def _audit_file(path: Path, target: str, model: str | None, weights, seed: int, recipe: Recipe, plan, ds, split,
                membership: str, out: Path, log) -> tuple[Path, dict]:
    """audit_model's work, with the output directory locked."""
    import torch

    from edgeprune.attack.audit import ModelFactory, pipeline_key, run_audit
    from edgeprune.attack.signals import SignalCache, onnx_predictor, torch_predictor
    from edgeprune.models import Builder, build_model, check_fits, load_weights
    from edgeprune.run import staged_dir

    arch = model
    if path.suffix == ".onnx":
        from edgeprune.quant.numerics import is_quantized

        numerics = "reference" if is_quantized(path) else "cpu"  # int8 QDQ: the same figures on every CPU
        pred = onnx_predictor(path, numerics=numerics)
    else:
        arch = arch or target
        torch.manual_seed(seed)
        m = build_model(target, ds.in_shape, ds.num_classes)
        check_fits(m, ds.in_shape, ds.num_classes, name=f"model {target!r}")
        load_weights(m, weights)
        from edgeprune.run import sha256_file
        from edgeprune.runtime import of_recipe

        pred = torch_predictor(m, f"torch-{sha256_file(Path(weights))[:16]}", runtime=of_recipe(recipe))
    factory = None
    if arch:
        recipe.model = arch
        factory = ModelFactory(Builder(arch, tuple(ds.in_shape), ds.num_classes), ds.in_shape, recipe,
                               pipeline_key(recipe, split.hash()), ["dense"])
    out.parent.mkdir(parents=True, exist_ok=True)
    cache_dir = out.parent / f".{out.name}.cache"
    audit = run_audit(ds, split, {"dense": pred}, plan, factory, SignalCache(cache_dir))
    audit["on"] = "onnxruntime" if path.suffix == ".onnx" else "torch"
    if path.suffix == ".onnx":
        from edgeprune.quant.numerics import NUMERICS

        audit["numerics"] = {"dense": NUMERICS.get("reference").description if numerics == "reference"
                             else "onnxruntime fp32 on this CPU"}
    audit["target"] = str(target)
    audit["membership"] = membership
    audit["variants"]["dense"]["artifact"] = str(target)
    from edgeprune.attack.plots import per_class_plot, roc_plot

    with staged_dir(out, "audit") as tmp:
        roc_plot(audit, tmp / "audit_roc.png")
        per_class_plot(audit, tmp / "audit_per_class.png")
        (tmp / "audit.json").write_text(json.dumps(audit, indent=2) + "\n")
    log(f"audit written to {out}")
    return out, audit
