"""The Jetson deployment bundle: ONNX + plugin sources + engine build / bench scripts + manifest.

Engines are never shipped (they are specific to a GPU and a TensorRT version): ``build_engine.sh`` builds
them on the device with trtexec, ``bench.sh`` times them, ``run_onnx.py`` checks and times the ONNX files
with onnxruntime where TensorRT is absent.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
from importlib import resources
from pathlib import Path

import numpy as np

from edgeprune import __version__
from edgeprune.export.lint import lint
from edgeprune.run import output_path, sha256_file, staged_dir

TARGET = {"device": "NVIDIA Jetson Orin", "jetpack": "6.x", "tensorrt": "10.3", "cuda": "12.6", "sm": "87"}
CHECK = {"fp32": (1e-3, 1.0), "fp16": (2e-2, 0.98), "int8": (0.25, 0.9)}  # (rtol, min top-1 agreement)


def is_two_four(w: np.ndarray) -> bool:
    """True when every group of 4 consecutive input weights of every output row has at most 2 non-zeros."""
    w = w.reshape(w.shape[0], -1) if w.ndim > 1 else None
    if w is None or w.shape[1] % 4:
        return False
    return bool(((w.reshape(w.shape[0], -1, 4) != 0).sum(-1) <= 2).all())


def two_four_sparse(model) -> bool:
    """The model's Linear / Conv weights all follow the 2:4 pattern TensorRT's --sparsity=enable uses."""
    from torch import nn

    weights = [m.weight.detach().numpy() for m in model.modules()
               if isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.groups == 1)]
    return bool(weights) and all(is_two_four(w) for w in weights)


def _script_head(comment: list[str]) -> list[str]:
    """Shebang, strict mode, cd into the bundle and find trtexec (both scripts start this way)."""
    return ["#!/usr/bin/env bash", *comment, "set -euo pipefail", 'cd "$(dirname "$0")"',
            'TRTEXEC="${TRTEXEC:-$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)}"',
            'if [ ! -x "$TRTEXEC" ]; then echo "trtexec not found (set TRTEXEC); use run_onnx.py instead" >&2; exit 1; fi']


def _build_engine_sh(models: list[dict], sparse: bool, dynamic: bool, in_shape, plugins: bool) -> str:
    lines = _script_head([
        "# Build TensorRT engines on the device (engines are specific to the GPU and TensorRT version).",
        "# Usage: ./build_engine.sh    (set TRTEXEC=/path/to/trtexec if it is not on PATH)",
    ]) + ["mkdir -p engines", "PLUGIN_ARGS=()"]
    if plugins:
        lines += [
            "# the block-sparse plugin: build it once for this device (sm_87 on Orin)",
            "if [ ! -f plugins/build/libedgeprune_plugins.so ]; then",
            "  cmake -S plugins -B plugins/build -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=87",
            "  cmake --build plugins/build -j",
            "fi",
            'if "$TRTEXEC" --help 2>&1 | grep -q -- "--staticPlugins"; then',
            '  PLUGIN_ARGS=(--staticPlugins=plugins/build/libedgeprune_plugins.so)',
            "else",
            '  PLUGIN_ARGS=(--plugins=plugins/build/libedgeprune_plugins.so)',
            "fi",
        ]
    shape = "x".join(str(d) for d in in_shape)
    for m in models:
        flags = ["--onnx=" + m["file"], "--saveEngine=engines/" + m["engine"], "--timingCacheFile=engines/timing.cache"]
        if m["precision"] == "fp16":
            flags.append("--fp16")
        if m["precision"] == "int8":
            flags += ["--int8", "--fp16"]  # explicit QDQ decides int8 layers; fp16 for the rest
        if sparse:
            flags.append("--sparsity=enable")
        if dynamic:
            flags += [f"--minShapes=input:1x{shape}", f"--optShapes=input:8x{shape}", f"--maxShapes=input:64x{shape}"]
        lines.append(f'echo "building engines/{m["engine"]}"')
        lines.append('"$TRTEXEC" ' + " ".join(shlex.quote(f) for f in flags) + ' "${PLUGIN_ARGS[@]}"')
    lines.append('echo "engines written to $(pwd)/engines"')
    return "\n".join(lines) + "\n"


def _bench_sh(models: list[dict], plugins: bool) -> str:
    lines = _script_head([
        "# Time the engines built by build_engine.sh: CUDA graphs, no host<->device copies, p50/p90/p99.",
        "# Results: results/<engine>.times.json, results/<engine>.log",
    ]) + ['DURATION="${DURATION:-10}"', "mkdir -p results", "PLUGIN_ARGS=()"]
    if plugins:
        lines += ["if [ -f plugins/build/libedgeprune_plugins.so ]; then",
                  "  PLUGIN_ARGS=(--plugins=plugins/build/libedgeprune_plugins.so)", "fi"]
    for m in models:
        eng = m["engine"]
        lines += [
            f"if [ -f engines/{eng} ]; then",
            f'  "$TRTEXEC" --loadEngine=engines/{eng} --useCudaGraph --noDataTransfers --separateProfileRun \\',
            f'    --percentile=50,90,99 --duration="$DURATION" --exportTimes=results/{eng}.times.json \\',
            f'    "${{PLUGIN_ARGS[@]}}" | tee results/{eng}.log',
            "else",
            f'  echo "engines/{eng} missing: run ./build_engine.sh first" >&2',
            "fi",
        ]
    return "\n".join(lines) + "\n"


def make_bundle(model, in_shape, out: str | Path, precisions: list[str], calibration: np.ndarray,
                samples: np.ndarray, batch: int = 1, dynamic_batch: bool = False, opset: int = 20,
                source: dict | None = None, kernels_dir: str | Path | None = None, output_name: str = "logits",
                extra=None, preprocessing: dict | None = None) -> Path:
    """Write the bundle into a temp dir next to ``out`` and rename it into place at the end. ``output_name``
    names the graph output (``features`` for the head of a split deployment, whose check then compares values
    only: no top-1); ``extra(tmp)`` writes more files and returns manifest entries (the split's server side)."""
    import torch

    from edgeprune.export.onnx import export_onnx, to_fp16
    from edgeprune.quant.numerics import predict
    from edgeprune.quant.ptq import quantize_int8

    out = output_path(out)
    with staged_dir(out, "bundle") as tmp:
        fp32 = export_onnx(model, in_shape, tmp / "model.fp32.onnx", opset=opset, dynamic_batch=dynamic_batch,
                           batch=batch, output_name=output_name)
        with torch.no_grad():
            ref = model.eval()(torch.from_numpy(samples)).numpy()
        models, outputs = [], {}
        for p in precisions:
            f = tmp / f"model.{p}.onnx"
            if p == "fp16":
                to_fp16(fp32, f)
            elif p == "int8":  # TensorRT takes signed, symmetric int8 QDQ
                quantize_int8(fp32, f, calibration, activations="int8")
            elif p != "fp32":
                raise ValueError(p)
            # expected outputs: int8 with reference QDQ semantics (what TensorRT computes, up to rounding),
            # not whatever this CPU's int8 kernels compute
            outputs[f"outputs_{p}"] = predict(f, samples, "reference" if p == "int8" else "cpu")
            rtol, top1 = CHECK[p]
            top1 = top1 if output_name == "logits" else 0.0
            models.append({"file": f.name, "precision": p, "engine": f"model.{p}.engine",
                           "batch": None if dynamic_batch else batch, "check_rtol": rtol, "check_top1": top1})
        # block-sparse layers ship as the ai.edgeprune custom op only with the plugin sources that run it
        from edgeprune.export.sparse_op import sparsify_onnx

        bsr_layers = sparsify_onnx(fp32, tmp / "model.bsr.onnx")
        have_plugin = bool(kernels_dir) and (Path(kernels_dir) / "CMakeLists.txt").is_file()
        if bsr_layers and have_plugin:
            outputs["outputs_bsr"] = ref
            models.append({"file": "model.bsr.onnx", "precision": "bsr", "engine": "model.bsr.engine",
                           "batch": None if dynamic_batch else batch, "check_rtol": 1e-3, "check_top1": 1.0})
        else:
            (tmp / "model.bsr.onnx").unlink()
        block_sparse = {"layers": bsr_layers,
                        "export": ("custom op ai.edgeprune::BlockSparseLinear + plugin sources" if bsr_layers and have_plugin
                                   else "dense fallback: no plugin sources (kernels/CMakeLists.txt) to run the custom op"
                                   if bsr_layers else "none")}
        if "fp32" not in precisions:
            fp32.unlink()
        np.savez(tmp / "samples.npz", inputs=samples, reference_torch=ref, **outputs)
        findings = {m["file"]: [f.to_json() for f in lint(tmp / m["file"])] for m in models}
        sparse = two_four_sparse(model)
        plugins = any(f["rule"] == "plugin" for fs in findings.values() for f in fs)
        if plugins and kernels_dir and Path(kernels_dir).is_dir():
            shutil.copytree(kernels_dir, tmp / "plugins")
        (tmp / "build_engine.sh").write_text(_build_engine_sh(models, sparse, dynamic_batch, in_shape, plugins))
        (tmp / "bench.sh").write_text(_bench_sh(models, plugins))
        (tmp / "run_onnx.py").write_text(resources.files("edgeprune.export").joinpath("templates/run_onnx.py").read_text())
        for script in ("build_engine.sh", "bench.sh", "run_onnx.py"):
            os.chmod(tmp / script, 0o755)
        (tmp / "README.md").write_text(_readme(models, sparse))
        if preprocessing and preprocessing.get("size"):  # a model of image files: run_onnx.py IMAGE... repeats it
            (tmp / "preprocessing.json").write_text(json.dumps(preprocessing, indent=2) + "\n")
            (tmp / "preprocess.py").write_text(resources.files("edgeprune.data").joinpath("preprocess.py").read_text())
        more = extra(tmp) if extra else {}
        files = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
        manifest = {
            "edgeprune": __version__,
            "target": TARGET,
            "input": {"name": "input", "shape": ["batch" if dynamic_batch else batch, *in_shape], "dtype": "float32"},
            "output": {"name": output_name, "shape": ["batch" if dynamic_batch else batch, *(int(d) for d in ref.shape[1:])]},
            "models": models,
            "sparsity_2_4": sparse,
            "block_sparse": block_sparse,
            "plugins": plugins,
            "lint": findings,
            "source": source or {},
            "preprocessing": preprocessing or {},
            **more,
            "files": {f: sha256_file(tmp / f) for f in files},
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return out


def _readme(models: list[dict], sparse: bool) -> str:
    names = ", ".join(m["file"] for m in models)
    return f"""# edgeprune deployment bundle

Models: {names}. 2:4 sparse weights: {"yes (engines are built with --sparsity=enable)" if sparse else "no"}.

On the Jetson (JetPack 6, TensorRT 10.3):

    ./build_engine.sh      # trtexec builds engines/ (never shipped: they are device-specific)
    ./bench.sh             # p50/p90/p99 with CUDA graphs, results/*.times.json
    python3 run_onnx.py    # where TensorRT is absent: onnxruntime check against samples.npz + latency

`manifest.json` lists every file with its sha256, the input/output shapes and the TensorRT lint findings.
"""
