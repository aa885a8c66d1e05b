"""The Python API that the CLI calls. The pipeline stages live in edgeprune.stages (run by
edgeprune.stages.runner); the operations on a finished run are below."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np

from edgeprune.bench.machine import machine
from edgeprune.errors import ConfigError
from edgeprune.recipe import Recipe
from edgeprune.stages import STAGES
from edgeprune.stages.audit import audit_targets, onnx_targets, write_audit
from edgeprune.stages.audit import numerics as audit_numerics
from edgeprune.stages.bench import run_targets
from edgeprune.stages.common import (
    DENSE_ONNX,
    DENSE_WEIGHTS,
    INT8_ONNX,
    INVERSION,
    MIXED_ONNX,
    ONNX,
    PLAN,
    PRUNED_WEIGHTS,
    REWIND_WEIGHTS,
    SPLIT_DIR,
    TEACHER_WEIGHTS,
    WEIGHTS,
    Context,
    load_dense,
    load_pruned,
    load_state,
    load_teacher,
    open_run,
    variants,
)
from edgeprune.stages.report import load_report
from edgeprune.stages.report import stage as report_stage
from edgeprune.stages.runner import PRUNE_STAGES, compress, prune_run

__all__ = [  # the names callers import from here (the CLI, edgeprune.tune, tests, benchmarks)
    "DENSE_ONNX", "DENSE_WEIGHTS", "INT8_ONNX", "INVERSION", "MIXED_ONNX", "ONNX", "PLAN", "PRUNED_WEIGHTS",
    "PRUNE_STAGES", "REWIND_WEIGHTS", "SPLIT_DIR", "STAGES", "TEACHER_WEIGHTS", "WEIGHTS",
    "Context", "VerificationFailed", "audit_model", "audit_run", "bench", "bundle_run", "bundle_split_run",
    "compress", "export_run", "export_split_run", "inversion_audit", "load_dense", "load_pruned", "load_report",
    "load_teacher", "machine", "prune_run",
]


def audit_run(run_dir: str | Path, attacks: list[str] | None = None, shadows: int | None = None,
              references: int | None = None, on: str = "onnx", data: str | None = None, log=print,
              threat: str | None = None, seeds: int | None = None, preset: str | None = None,
              execution=None) -> dict:
    """Re-audit a finished run (signals are cached in the run, so other attacks cost little). The run is
    locked and never moved: the new audit files are staged beside it and swapped in only when the audit
    completes; impossible settings are refused first. ``execution`` (ExecConfig): where the attacker models
    train, instead of the run's recipe ``exec``."""
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
        plan.execution = recipe.exec
        check_plan(plan)
        if on == "onnx":
            audited, targets = variants(ctx), onnx_targets(ctx, up)
        else:
            audited = [("dense", DENSE_WEIGHTS), ("pruned", WEIGHTS)]
            key = {rel: verify_artifact(up.dir, up.manifest, rel)[:16] for _, rel in audited}
            targets = {"dense": torch_predictor(load_dense(ctx, up.dir), f"torch-dense-{key[DENSE_WEIGHTS]}"),
                       "pruned": torch_predictor(load_pruned(ctx, up.dir), f"torch-pruned-{key[WEIGHTS]}")}
        audit = audit_targets(ctx, targets, up.dir / "audit_cache", plan)
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


def export_run(run_dir: str | Path, fmt: str = "onnx", opset: int = 20, dynamic_batch: bool = False, batch: int = 1,
               fp16: bool = False, int8: bool = False, activations: str | None = None,
               calibration: str = "minmax", block: int = 32, dense_only: bool = False, log=print) -> dict:
    """Export the run's compressed model into RUN_DIR/export/ (fp32, and fp16 / int8 QDQ when asked),
    each verified against torch on real samples; ``fmt='tensorrt'`` lints for TensorRT and builds engines
    when tensorrt imports, otherwise writes the Jetson bundle whose script builds them on the device.

    Exports add to export/: a file made now replaces its namesake, the files of earlier exports stay, and
    export.json records each file's own settings. The same run and options give the same files."""
    from edgeprune.export import tensorrt as trt_mod
    from edgeprune.export.lint import errors, lint
    from edgeprune.export.onnx import export_onnx, onnx_predict, to_fp16, verify_onnx
    from edgeprune.quant.ptq import quantize_int8
    from edgeprune.run import RunUpdate, sha256_file, verify_artifact

    if fmt not in ("onnx", "tensorrt"):
        raise ConfigError(f"--format must be onnx or tensorrt, got {fmt!r}")
    from edgeprune.recipe import OPSET_RANGE

    if not OPSET_RANGE[0] <= opset <= OPSET_RANGE[1]:
        raise ConfigError(f"--opset must be between {OPSET_RANGE[0]} and {OPSET_RANGE[1]}, got {opset}")
    if batch < 1:
        raise ConfigError(f"--batch must be >= 1, got {batch}")
    from edgeprune.quant.numerics import NUMERICS, predict
    from edgeprune.quant.targets import TARGETS, kernels_check

    with RunUpdate(run_dir) as up:  # locked; the new files are swapped into export/ at the end
        _, ctx = open_run(up.dir)
        # TensorRT keeps the full 8-bit range; onnxruntime CPU artifacts follow the recipe / this CPU's kernels
        target = TARGETS.get("tensorrt" if fmt == "tensorrt" else "ort-cpu")
        int8_cfg = target.settings(activations, None if fmt == "tensorrt" else ctx.recipe.quant.reduce_range)
        activations = int8_cfg["activations"]
        run_dir = up.dir
        earlier = {}
        if "export/export.json" in up.manifest["artifacts"]:
            verify_artifact(run_dir, up.manifest, "export/export.json")
            earlier = json.loads((run_dir / "export/export.json").read_text())
        model = load_pruned(ctx, run_dir)
        xv, _ = ctx.arrays("nonmembers", ctx.recipe.export.verify_samples)
        xt, yt = ctx.arrays("nonmembers")
        xc, _ = ctx.arrays("members", ctx.recipe.quant.calibration_samples)
        tmp = up.staged_path("export/export.json").parent
        files = {}
        fp32 = export_onnx(model, ctx.ds.in_shape, tmp / "model.fp32.onnx", opset=opset,
                           dynamic_batch=dynamic_batch, batch=batch)
        files["model.fp32.onnx"] = {"precision": "fp32", **verify_onnx(model, fp32, xv, rtol=ctx.recipe.export.rtol).to_json()}
        fp32_acc = float((onnx_predict(fp32, xt).argmax(1) == yt).mean())
        files["model.fp32.onnx"]["test_accuracy"] = fp32_acc
        if not dense_only:  # block-sparse Linear layers become ai.edgeprune::BlockSparseLinear
            from edgeprune.export.sparse_op import sparsify_onnx

            bsr = tmp / "model.bsr.onnx"
            layers = sparsify_onnx(fp32, bsr, block=block)
            if layers:
                v = verify_onnx(model, bsr, xv, rtol=ctx.recipe.export.rtol).to_json()
                files[bsr.name] = {"precision": "fp32", "block_sparse_layers": layers, "block": block, **v,
                                   "test_accuracy": float((onnx_predict(bsr, xt).argmax(1) == yt).mean())}
            else:
                bsr.unlink()
        if fp16:
            f = to_fp16(fp32, tmp / "model.fp16.onnx")
            v = verify_onnx(model, f, xv, rtol=2e-2, top1_min=0.98).to_json()
            files[f.name] = {"precision": "fp16", **v, "test_accuracy": float((onnx_predict(f, xt).argmax(1) == yt).mean())}
        if int8:
            f = quantize_int8(fp32, tmp / "model.int8.onnx", xc, activations=activations, method=calibration,
                              reduce_range=int8_cfg["reduce_range"])
            q = predict(f, xt, int8_cfg["numerics"])
            acc = float((q.argmax(1) == yt).mean())
            if acc < fp32_acc - ctx.recipe.export.max_int8_drop:
                raise VerificationFailed(f"int8 model accuracy {acc:.4f} is more than {ctx.recipe.export.max_int8_drop} "
                                         f"below fp32 ({fp32_acc:.4f}); try --calibration entropy or percentile")
            files[f.name] = {"precision": "int8", **int8_cfg, "numerics": NUMERICS.get(int8_cfg["numerics"]).description,
                             "calibration": calibration, "calibration_samples": len(xc), "test_accuracy": acc,
                             "top1_agreement_with_fp32": float((q.argmax(1) == onnx_predict(fp32, xt).argmax(1)).mean()),
                             "cpu_kernels": kernels_check(f, xt, yt)}
            if files[f.name]["cpu_kernels"]["warning"]:
                log(f"[yellow]{files[f.name]['cpu_kernels']['warning']}[/yellow]")
        result = {"format": fmt, "opset": opset, "dynamic_batch": dynamic_batch,
                  "batch": None if dynamic_batch else batch, "files": files}
        if fmt == "tensorrt":
            result["lint"] = {name: [x.to_json() for x in lint(tmp / name)] for name in files}
            bad = {name: errors(lint(tmp / name)) for name in files}
            bad = {k: v for k, v in bad.items() if v}
            if bad:
                name, errs = next(iter(bad.items()))
                raise VerificationFailed(f"{name} fails the TensorRT lint: {errs[0].message} ({len(errs)} error(s))")
            if trt_mod.available():
                for name, info in files.items():
                    eng = name.replace(".onnx", ".engine")
                    trt_mod.build_engine(tmp / name, tmp / eng, fp16=info["precision"] == "fp16",
                                         int8=info["precision"] == "int8")
                    info["engine"] = eng
                result["tensorrt"] = "engines built here with the tensorrt Python API"
            else:
                precisions = [info["precision"] for info in files.values() if info["precision"] != "fp32"] or ["fp16"]
                bundle_run(run_dir, run_dir / "bundle", precisions, batch, dynamic_batch, log=log)
                result["tensorrt"] = "tensorrt is not installed here: engines will be built on the device by bundle/build_engine.sh"
                log(f"[yellow]{result['tensorrt']}[/yellow]")
        made = sorted(f.relative_to(tmp).as_posix() for f in tmp.rglob("*") if f.is_file())
        for name in made:
            up.commit(f"export/{name}")
        settings = {k: result[k] for k in ("format", "opset", "dynamic_batch", "batch")}
        for name, info in result["files"].items():
            info.update(settings, sha256=sha256_file(tmp / name))
        merged = {**earlier.get("files", {}), **result["files"]}
        result = {**result, "written": sorted(result["files"]), "files": merged, "lint": {**earlier.get("lint", {}), **result.get("lint", {})}}
        if not result["lint"]:
            del result["lint"]
        up.write_json("export/export.json", result)
        up.manifest["export"] = {k: v for k, v in result.items() if k != "lint"}
    return result


class VerificationFailed(ConfigError):
    """An exported artifact does not meet its tolerance (reported as one line, exit 2)."""


def _bundle_precisions(precisions: list[str] | None) -> list[str]:
    precisions = precisions or ["fp16", "int8"]
    for p in precisions:
        if p not in ("fp32", "fp16", "int8"):
            raise ConfigError(f"unknown precision {p!r}; choose from fp32, fp16, int8")
    return precisions


def bundle_run(run_dir: str | Path, out: str | Path, precisions: list[str] | None = None, batch: int = 1,
               dynamic_batch: bool = False, log=print) -> Path:
    """The Jetson bundle of a run's compressed model (see edgeprune.export.bundle)."""
    from edgeprune.export.bundle import make_bundle
    from edgeprune.run import RunLock, check_output_dir, read_manifest

    precisions = _bundle_precisions(precisions)
    check_output_dir(Path(out).expanduser().resolve(), "bundle")  # before any work (checked again at the end)
    read_manifest(run_dir)
    with RunLock(run_dir):  # nothing rewrites the run while its model is read
        manifest, ctx = open_run(run_dir)
        model = load_pruned(ctx, Path(run_dir))
    xc, _ = ctx.arrays("members", ctx.recipe.quant.calibration_samples)
    xs, _ = ctx.arrays("nonmembers", 16)
    kernels = Path(__file__).resolve().parent.parent / "kernels"
    out = make_bundle(model, ctx.ds.in_shape, out, precisions, xc, xs, batch=batch, dynamic_batch=dynamic_batch,
                      opset=ctx.recipe.export.opset, kernels_dir=kernels,
                      source={"run": str(Path(run_dir).resolve()), "recipe_hash": manifest["recipe_hash"],
                              "model": manifest["model"], "plan_sha256": manifest["artifacts"].get(PLAN)})
    log(f"bundle written to {out}")
    return out


def bench(target: str | Path, backends: list[str], batches: list[int], threads: int = 1, warmup_s: float = 0.5,
          duration_s: float = 2.0, cuda_graph: bool = False, host=None, python: str = "python3",
          remote_dir: str = "edgeprune", log=print) -> tuple[Path, list[dict]]:
    """Time a run's variants (dense baseline in the same invocation) or one ONNX file on each backend;
    entries are appended to the run's bench.json (or ``<file>.bench.json`` next to an ONNX file)."""
    from edgeprune.bench.backends import BACKENDS, Settings

    for b in backends:
        if b != "remote":
            BACKENDS.get(b)
    if "remote" in backends and host is None:
        raise ConfigError("--backend remote needs --host (user@jetson or an ssh config alias)")
    if not batches or any(b < 1 for b in batches):
        raise ConfigError(f"batch sizes must be positive, got {batches}")
    if duration_s <= 0 or warmup_s < 0:
        raise ConfigError("--duration must be > 0 and --warmup >= 0")
    if threads < 0:
        raise ConfigError(f"--threads must be >= 0 (0 lets onnxruntime choose), got {threads}")
    target = Path(target)
    settings = Settings(threads, warmup_s, duration_s, cuda_graph=cuda_graph)
    with contextlib.ExitStack() as stack:
        return _bench_locked(stack, target, backends, batches, settings, host, duration_s, python, remote_dir, log)


def _bench_locked(stack, target: Path, backends, batches, settings, host, duration_s, python, remote_dir, log):
    """``bench`` with its output locked: a run through a RunUpdate (staged bench.json, new manifest), a
    file's ``.bench.json`` through its own lock."""
    from edgeprune.bench.backends import Target
    from edgeprune.bench.latency import bench_targets
    from edgeprune.run import RunLock, RunUpdate, atomic_write_bytes, verify_artifact

    update = None
    if target.is_dir():
        update = stack.enter_context(RunUpdate(target))
        manifest, ctx = open_run(update.dir)
        targets = run_targets(ctx, update, with_torch=any(b.startswith("torch") for b in backends))
        out, baseline = target / "bench.json", "dense"
        if "bench.json" in manifest["artifacts"]:  # its entries are kept: they must be intact
            verify_artifact(update.dir, manifest, "bench.json")
    elif target.suffix == ".onnx" and target.is_file():
        from edgeprune.export.check import check_onnx_file, open_session

        model_proto = check_onnx_file(target, single_output=False)
        open_session(target, single_output=False)  # a file onnxruntime refuses is one line here, not a traceback mid-benchmark
        inits = {i.name for i in model_proto.graph.initializer}
        first = next(i for i in model_proto.graph.input if i.name not in inits)
        dims = first.type.tensor_type.shape.dim[1:]
        if any(not d.HasField("dim_value") for d in dims):
            raise ConfigError(f"{target}: only the batch dimension may be dynamic")
        targets = [Target(target.stem, tuple(d.dim_value for d in dims), str(target))]
        out, baseline, manifest = target.with_suffix(".bench.json"), None, None
        stack.enter_context(RunLock(out))
    else:
        raise ConfigError(f"{target} is neither a run directory nor an .onnx file")
    entries = bench_targets(targets, [b for b in backends if b != "remote"], batches, settings, baseline=baseline, log=log)
    if "remote" in backends:
        if manifest is None:
            raise ConfigError("--backend remote benchmarks a run directory (it ships the run's models in bundles)")
        entries.append(_remote_entry(target, ctx, host, batches, duration_s, python, remote_dir, log))
    data = json.loads(out.read_text()) if out.is_file() else {"machine": machine(), "entries": []}
    data["machine"] = machine()
    data["entries"].extend(entries)
    if update is not None:
        update.write_json("bench.json", data)  # swapped in with the manifest when the update closes
    else:
        atomic_write_bytes(out, (json.dumps(data, indent=2) + "\n").encode())
    return out, entries


def audit_model(target: str, data: str, model: str | None = None, weights: str | None = None,
                membership: str = "train-test", seed: int = 0, attacks: list[str] | None = None,
                shadows: int | None = None, references: int | None = None, out: str | Path | None = None,
                recipe_path: str | None = None, log=print, threat: str = "adaptive", seeds: int | None = None,
                preset: str | None = None, execution=None) -> tuple[Path, dict]:
    """Audit a model that was not made by ``compress``: an ONNX file, or a zoo / user model with weights.

    Membership comes from the data: ``train-test`` (an npz / CIFAR-10 file's train rows are members, half of
    its test rows non-members, the other half the attacker's pool) or ``split`` (edgeprune's seeded split).
    Shadow / reference models need the architecture (``--model``) and are trained with the recipe's
    training settings (dense only: the attacker does not know how the model was compressed)."""
    import torch

    from edgeprune.attack.audit import (
        AuditPlan,
        ModelFactory,
        check_plan,
        pipeline_key,
        resolve_attacks,
        run_audit,
        with_preset,
    )
    from edgeprune.attack.signals import SignalCache, onnx_predictor, torch_predictor
    from edgeprune.data import load_dataset, make_split, split_train_test
    from edgeprune.export.check import check_fits_data, check_onnx_file
    from edgeprune.models import Builder, build_model, check_fits, load_weights
    from edgeprune.recipe import load_recipe
    from edgeprune.run import check_output_dir, staged_dir

    path = Path(target).expanduser()
    out = Path(out or Path("audits") / path.stem).expanduser().resolve()
    check_output_dir(out, "audit")  # before any work; checked again (locked) when the result is swapped in
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
    recipe.validate(names=False)
    cfg = recipe.audit
    plan = with_preset(AuditPlan(attacks or cfg.attacks, 0, 0, cfg.max_samples, cfg.population, cfg.bootstrap, seed),
                       preset, {"shadows": shadows, "references": references, "threat": threat, "seeds": seeds})
    plan.execution = recipe.exec
    check_plan(plan)
    ds = load_dataset(data)
    if membership == "train-test":
        split = split_train_test(ds, seed)
    else:
        split = make_split(ds, seed, recipe.split.member_fraction, recipe.split.max_members)
    arch = model
    if path.suffix == ".onnx":
        check_fits_data(path, ds.x, ds.num_classes)
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

        pred = torch_predictor(m, f"torch-{sha256_file(Path(weights))[:16]}")
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


def _remote_entry(run_dir: Path, ctx: Context, host, batches: list[int], duration_s: float, python: str,
                  remote_dir: str, log) -> dict:
    """Bundle the dense and the compressed model (dynamic batch), run run_onnx.py on the host for each batch."""
    import tempfile

    from edgeprune.bench.remote import deploy
    from edgeprune.export.bundle import make_bundle

    xc, _ = ctx.arrays("members", ctx.recipe.quant.calibration_samples)
    xs, _ = ctx.arrays("nonmembers", 16)
    entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "backend": "remote", "host": host.target,
             "variants": {}, "skipped": {}}
    precisions = {"dense": ["fp32"], "pruned": ["fp32"] + (["int8"] if ctx.recipe.quant.mode == "int8" else [])}
    with tempfile.TemporaryDirectory() as tmp:
        for label, model in (("dense", load_dense(ctx, run_dir)), ("pruned", load_pruned(ctx, run_dir))):
            b = make_bundle(model, ctx.ds.in_shape, Path(tmp) / f"{run_dir.name}-{label}", precisions[label], xc, xs,
                            dynamic_batch=True, opset=ctx.recipe.export.opset)
            info = deploy(b, host, remote_dir=f"{remote_dir}/bench-{run_dir.name}-{label}", bench=True, python=python,
                          duration=duration_s, batches=batches, log=log)
            entry["uname"] = info.get("uname")
            entry["power_mode"] = info.get("power_mode")
            for bsz, rep in sorted(info.get("onnx_by_batch", {}).items()):
                for r in rep["results"]:
                    name = label if r["precision"] == "fp32" else f"{label}+{r['precision']}"
                    row = {k: r[k] for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "runs") if k in r}
                    row.update(batch=bsz, throughput_per_s=bsz * 1e3 / r["mean_ms"], providers=rep["providers"],
                               check_passed=r["check_passed"])
                    entry["variants"].setdefault(name, {"artifact": r["file"], "latency": []})["latency"].append(row)
    ref = {r["batch"]: r["p50_ms"] for r in entry["variants"].get("dense", {}).get("latency", [])}
    for v in entry["variants"].values():
        for r in v["latency"]:
            if ref.get(r["batch"]):
                r["speedup_vs_dense"] = ref[r["batch"]] / r["p50_ms"]
    return entry


def _noisy_source(src, sigma: float, seed: int):
    from edgeprune.attack.inversion import FeatureSource

    rng = np.random.default_rng(seed)

    def features(x):
        f = src.features(x)
        return (f + sigma * rng.standard_normal(f.shape)).astype(np.float32)

    return FeatureSource(features, src.head, f"{src.numerics} + Gaussian noise of std {sigma:.4g} (--split-noise)")


def _inversion_sources(ctx: Context, run_dir: Path, models: dict, quantized: bool = True) -> dict:
    """FeatureSource per variant and split point name; ``models`` maps a variant to (torch model, its split
    points by name). Torch heads for dense / pruned (they match the exported fp32 ONNX to ~1e-7); for the
    quantized variant, the exported QDQ graph read at the split tensor."""
    import torch

    from edgeprune.attack.inversion import FeatureSource
    from edgeprune.export.split import locate_feature_tensor, onnx_features
    from edgeprune.models.splits import cut

    def torch_source(model, p):
        head, _ = cut(model, p)
        for q in head.parameters():
            q.requires_grad_(False)

        def features(x):
            with torch.no_grad():
                return np.concatenate([head(torch.from_numpy(np.ascontiguousarray(x[i:i + 512], np.float32))).numpy()
                                       for i in range(0, len(x), 512)])
        return FeatureSource(features, head, "torch fp32 (the exported fp32 ONNX matches it to ~1e-7)")

    out = {label: {name: torch_source(model, p) for name, p in points.items()}
           for label, (model, points) in models.items()}
    probe, _ = ctx.arrays("nonmembers", 64)
    for label, rel in variants(ctx)[2:] if quantized else []:  # the quantized artifact, at the split tensor
        out[label] = {}
        for name, ref in out["pruned"].items():
            tensor = locate_feature_tensor(run_dir / rel, probe, ref.features(probe))
            out[label][name] = FeatureSource(onnx_features(run_dir / rel, tensor), ref.head,
                                             f"{rel} at tensor {tensor!r} (onnxruntime, reference QDQ semantics); "
                                             "white-box: the pruned fp32 head")
    return out


def _noise_hook(model, point, sigma: float):
    """Gaussian noise of std ``sigma`` on the output of the split point's module (train and eval)."""
    import torch

    from edgeprune.errors import ConfigError

    names = [a for a in point.aliases if a in dict(model.named_modules())]
    if not names:
        raise ConfigError(f"--split-noise needs a split point at a module's output, not {point.name!r}")
    module = model.get_submodule(names[0])
    return module.register_forward_hook(lambda m, i, o: o + sigma * torch.randn_like(o))


def _split_noise_variant(ctx: Context, run_dir: Path, pruned, point, sigma_rel: float, seed: int) -> tuple:
    """The --split-noise defense at ``point``: the pruned model fine-tuned again (the recipe's fine-tuning,
    masks kept) with Gaussian noise on the split features, deployed with the same noise. The std is
    ``sigma_rel`` times the std of the pruned model's features on the members (the defender's data).
    Returns (model with the noise hook on, accuracy figures)."""
    import copy
    import dataclasses

    import torch

    from edgeprune.prune.structured import apply_plan, plan_masks
    from edgeprune.train import accuracy, predict_logits, train

    plan = json.loads((run_dir / PLAN).read_text())
    xm, ym = ctx.tensors("members")
    xn, yn = ctx.tensors("nonmembers")
    sigma = sigma_rel * _feature_std(ctx, pruned, point)
    torch.manual_seed(seed)
    plain = copy.deepcopy(pruned)
    h = _noise_hook(plain, point, sigma)
    acc_noise_only = accuracy(predict_logits(plain, xn), yn)
    h.remove()
    model = load_state(apply_plan(ctx.fresh_model(), plan), run_dir / WEIGHTS)
    hook = _noise_hook(model, point, sigma)
    cfg = dataclasses.replace(ctx.recipe.finetune)
    train(model, xm, ym, cfg, seed=seed, description=f"fine-tune with split noise at {point.name}",
          masks=plan_masks(plan) or None)
    model.eval()
    torch.manual_seed(seed + 1)
    acc = accuracy(predict_logits(model, xn), yn)
    hook.remove()  # the returned model is clean; the inversion sources add the noise to its head's features
    return model, {"split_point": point.name, "sigma_relative": sigma_rel, "sigma": sigma,
                   "test_accuracy_pruned": accuracy(predict_logits(pruned, xn), yn),
                   "test_accuracy_noise_without_finetuning": acc_noise_only,
                   "test_accuracy_noise_finetuned": acc,
                   "finetune_epochs": cfg.epochs}


def inversion_audit(run_dir: str | Path, attacks: list[str] | None = None, layers: list[str] | None = None,
                    split_noise: float = 0.0, plan=None, log=print) -> dict:
    """Model inversion at split points of a finished run, for the dense, pruned and quantized variants (and,
    with ``split_noise``, the noise-defended split deployment); writes inversion.json and one picture grid
    per split point into the run."""
    import dataclasses

    from edgeprune.attack.audit import pick_candidates
    from edgeprune.attack.base import names_of_kind
    from edgeprune.attack.inversion import InversionPlan, grid_plot, run_inversion
    from edgeprune.models.splits import resolve
    from edgeprune.run import RunUpdate

    plan = plan or InversionPlan(seed=0)
    attacks = attacks or ["inversion"]
    bad = [a for a in attacks if a not in names_of_kind("inversion", None)]
    if bad:
        raise ConfigError(f"{bad[0]!r} is not an inversion attack; choose from {', '.join(names_of_kind('inversion'))}")
    if split_noise < 0:
        raise ConfigError(f"--split-noise must be >= 0, got {split_noise}")
    manifest, ctx = open_run(run_dir)
    run_dir = Path(run_dir)
    plan = dataclasses.replace(plan, attacks=attacks, layers=list(layers or []), seed=ctx.recipe.seed)
    dense, pruned = load_dense(ctx, run_dir), load_pruned(ctx, run_dir)
    points = resolve(dense, ctx.ds.in_shape, plan.layers)
    pruned_points = {p.name: resolve(pruned, ctx.ds.in_shape, [p.name])[0] for p in points}  # fewer channels
    noise = {}
    if split_noise > 0:
        if len(points) != 1:
            raise ConfigError("--split-noise defends one split point: pass exactly one --layer")
        noise["pruned+noise"] = _split_noise_variant(ctx, run_dir, pruned, pruned_points[points[0].name], split_noise,
                                                     ctx.recipe.seed + 7)
    models = {"dense": (dense, {p.name: p for p in points}), "pruned": (pruned, pruned_points)}
    sources = _inversion_sources(ctx, run_dir, models)
    for label, (model, info) in noise.items():  # the defended deployment: its head's features + the noise
        clean = _inversion_sources(ctx, run_dir, {label: (model, pruned_points)}, quantized=False)[label]
        sources[label] = {name: _noisy_source(src, info["sigma"], plan.seed + 99) for name, src in clean.items()}
    cand = pick_candidates(ctx.split, plan.samples, plan.seed)
    rng = np.random.default_rng(plan.seed + 41)
    pool = ctx.split.pool
    pool = np.sort(rng.choice(pool, min(plan.pool, pool.size), replace=False)) if pool.size else pool
    if pool.size < 10:
        raise ConfigError("the inversion attacker needs its own data: the split left no attacker pool")

    def judge(x):
        import torch

        with torch.no_grad():
            return dense(torch.from_numpy(np.ascontiguousarray(x, np.float32))).numpy()

    result, pictures = run_inversion(ctx.ds.x[pool], ctx.ds.x[cand.idx], ctx.ds.y[cand.idx], cand.is_member,
                                     sources, points, judge, ctx.ds.preprocessing, plan, log=log)
    result["judge"] = "the run's dense model (fp32)"
    if noise:
        result["split_noise"] = next(iter(noise.values()))[1]
    with RunUpdate(run_dir) as run:  # locked, never moved: the new files are swapped in at the end
        grids = {}
        if ctx.ds.x.ndim == 4:
            for p in points:
                rel = f"inversion/{p.name}.png"
                grid_plot(pictures[p.name], run.tmp_path(rel), title=f"inversion from the features at {p.name} "
                                                                       f"{tuple(p.shape)}")
                run.commit(rel)
                grids[p.name] = rel
        result["grids"] = grids
        run.write_json(INVERSION, result)
        run.manifest["inversion"] = {"file": INVERSION, "layers": [p.name for p in points], "attacks": attacks,
                                     "grids": grids}
    log(f"inversion audit written to {run_dir / INVERSION}")
    return result


def _split_point(ctx: Context, model, name: str):
    from edgeprune.models.splits import resolve

    if not name:
        raise ConfigError("--split needs a split-point name (see `edgeprune inspect MODEL`)")
    return resolve(model, ctx.ds.in_shape, [name])[0]


def _inversion_at(run_dir: Path, name: str) -> dict | None:
    """The inversion figures of a run at one split point (mean PSNR / SSIM / judge accuracy per variant)."""
    p = Path(run_dir) / INVERSION
    if not p.is_file():
        return None
    inv = json.loads(p.read_text())
    if name not in inv.get("layers", {}):
        return None
    out = {}
    for variant, layers in inv["variants"].items():
        for attack, a in layers.get(name, {}).get("attacks", {}).items():
            out.setdefault(variant, {})[attack] = {k: a[k] for k in ("psnr", "ssim", "mse", "judge_accuracy") if k in a}
    return out


def _feature_std(ctx: Context, model, point) -> float:
    """The standard deviation of ``model``'s features at ``point`` on the members (the defender's data): the
    unit of --split-noise."""
    import torch

    from edgeprune.models.splits import cut

    head, _ = cut(model, point)
    xm, _ = ctx.tensors("members")
    with torch.no_grad():
        return float(head(xm[:512]).std())


def export_split_run(run_dir: str | Path, split: str, opset: int = 20, noise: float = 0.0, log=print) -> dict:
    """`edgeprune export RUN --split NAME`: RUN/split/head.onnx (input -> features) and tail.onnx
    (features -> logits) of the compressed model, verified to compose to it; ``noise`` (in feature standard
    deviations, as in the audit) makes the head add Gaussian noise to the features (the --split-noise
    deployment; the tail is the run's, so pair it with a model fine-tuned with that noise for accuracy)."""
    from edgeprune.export.split import export_split
    from edgeprune.run import RunUpdate

    if noise < 0:
        raise ConfigError(f"--split-noise must be >= 0, got {noise}")
    with RunUpdate(run_dir) as up:  # locked, never moved: the split files are swapped in at the end
        _, ctx = open_run(up.dir)
        run_dir = up.dir
        model = load_pruned(ctx, run_dir)
        point = _split_point(ctx, model, split)
        xv, _ = ctx.arrays("nonmembers", ctx.recipe.export.verify_samples)
        sigma = _feature_std(ctx, model, point) * noise if noise > 0 else 0.0
        tmp = up.staged_path(f"{SPLIT_DIR}/split.json").parent
        info = export_split(model, ctx.ds.in_shape, point, tmp, xv, opset=opset, rtol=ctx.recipe.export.rtol,
                            noise_sigma=sigma)
        if noise > 0:
            info["noise"]["sigma_relative"] = noise
        info["inversion"] = _inversion_at(run_dir, point.name)
        for name in ("head.onnx", "tail.onnx"):
            up.commit(f"{SPLIT_DIR}/{name}")
        up.write_json(f"{SPLIT_DIR}/split.json", info)
        up.manifest["split_deployment"] = {k: v for k, v in info.items() if k != "inversion"}
    log(f"head.onnx and tail.onnx written to {run_dir / SPLIT_DIR}")
    return info


def bundle_split_run(run_dir: str | Path, out: str | Path, split: str, precisions: list[str] | None = None,
                     batch: int = 1, dynamic_batch: bool = False, log=print) -> Path:
    """`edgeprune bundle --split NAME`: the Jetson bundle of the head (engine script, fp16 / int8 like the
    whole-model bundle) and, under server/, the fp32 tail with run_onnx.py and its own samples; the
    manifest records the split point, the feature shape, the bytes per sample over the link and the
    inversion figures at that layer (from the run's inversion audit, when there is one)."""
    import torch

    from edgeprune.export.bundle import make_bundle
    from edgeprune.export.onnx import export_onnx, onnx_predict
    from edgeprune.export.split import FEATURES
    from edgeprune.models.splits import cut

    precisions = _bundle_precisions(precisions)
    manifest, ctx = open_run(run_dir)
    model = load_pruned(ctx, Path(run_dir))
    point = _split_point(ctx, model, split)
    head, tail = cut(model, point)
    xc, _ = ctx.arrays("members", ctx.recipe.quant.calibration_samples)
    xs, _ = ctx.arrays("nonmembers", 16)
    kernels = Path(__file__).resolve().parent.parent / "kernels"
    from importlib import resources

    template = resources.files("edgeprune.export").joinpath("templates/run_onnx.py")

    def server_side(tmp: Path) -> dict:
        srv = tmp / "server"
        srv.mkdir()
        with torch.no_grad():
            feats = head(torch.from_numpy(xs)).numpy()
            logits = tail(torch.from_numpy(feats)).numpy()
        export_onnx(tail, point.shape, srv / "tail.onnx", opset=ctx.recipe.export.opset, input_name=FEATURES)
        got = onnx_predict(srv / "tail.onnx", feats)
        if np.abs(got - logits).max() > ctx.recipe.export.rtol * max(float(np.abs(logits).max()), 1e-12):
            raise ConfigError("the exported tail does not match torch")  # never ship a tail that disagrees
        np.savez(srv / "samples.npz", inputs=feats, reference_torch=logits, outputs_fp32=got)
        (srv / "run_onnx.py").write_text(template.read_text())
        os.chmod(srv / "run_onnx.py", 0o755)
        srv_manifest = {"role": "server side of a split deployment: features -> logits",
                        "input": {"name": FEATURES, "shape": ["batch", *point.shape], "dtype": "float32"},
                        "output": {"name": "logits", "shape": ["batch", int(logits.shape[1])]},
                        "models": [{"file": "tail.onnx", "precision": "fp32", "engine": None, "batch": None,
                                    "check_rtol": 1e-3, "check_top1": 1.0}]}
        (srv / "manifest.json").write_text(json.dumps(srv_manifest, indent=2) + "\n")
        return {"split": {"point": point.name, "role": "the device runs the head (these models); server/ runs the tail",
                          "feature_name": FEATURES, "feature_shape": list(point.shape),
                          "bytes_per_sample": {"fp32": point.bytes_per_sample(4), "fp16": point.bytes_per_sample(2),
                                               "int8": point.bytes_per_sample(1)},
                          "input_bytes_per_sample_fp32": int(np.prod(ctx.ds.in_shape)) * 4,
                          "inversion": _inversion_at(Path(run_dir), point.name),
                          "server": {"files": ["server/tail.onnx", "server/run_onnx.py", "server/samples.npz",
                                               "server/manifest.json"]}}}

    out = make_bundle(head, ctx.ds.in_shape, out, precisions, xc, xs, batch=batch, dynamic_batch=dynamic_batch,
                      opset=ctx.recipe.export.opset, kernels_dir=kernels, output_name=FEATURES, extra=server_side,
                      source={"run": str(Path(run_dir).resolve()), "recipe_hash": manifest["recipe_hash"],
                              "model": manifest["model"], "plan_sha256": manifest["artifacts"].get(PLAN),
                              "split": point.name})
    log(f"split bundle written to {out} (head: {', '.join(precisions)}; tail: server/)")
    return out
