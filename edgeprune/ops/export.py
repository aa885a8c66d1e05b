"""`edgeprune export RUN`: the run's compressed model again into RUN/export/ (fp32, fp16, int8 QDQ,
block-sparse, TensorRT lint / engines), each file verified."""

from __future__ import annotations

import json
from pathlib import Path

from edgeprune.errors import ConfigError
from edgeprune.ops.bundle import bundle_run
from edgeprune.stages.common import load_pruned, open_run


class VerificationFailed(ConfigError):
    """An exported artifact does not meet its tolerance (reported as one line, exit 2)."""


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
