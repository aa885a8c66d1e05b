"""`edgeprune bench`: time a finished run's variants (or one ONNX file) on the chosen backends, a remote
Jetson included; entries are appended to bench.json."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

from edgeprune.bench.machine import machine
from edgeprune.errors import ConfigError
from edgeprune.stages.bench import run_targets
from edgeprune.stages.common import Context, load_dense, load_pruned, open_run


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
    data = json.loads(out.read_text()) if out.is_file() else {"entries": []}
    data["machine"] = machine()
    data["entries"].extend(entries)
    if update is not None:
        update.write_json("bench.json", data)  # swapped in with the manifest when the update closes
    else:
        atomic_write_bytes(out, (json.dumps(data, indent=2) + "\n").encode())
    return out, entries


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
