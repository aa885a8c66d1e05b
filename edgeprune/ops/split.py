"""Split deployment of a finished run (edgeprune.export.split): the head on the device, the tail on a
server; the ONNX pair in RUN/split/ and the Jetson bundle of the head."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from edgeprune.errors import ConfigError
from edgeprune.ops.bundle import KERNELS_DIR, bundle_inputs, locks_output
from edgeprune.stages.common import INVERSION, SPLIT_DIR, Context, load_pruned, open_run


def split_point(ctx: Context, model, name: str):
    from edgeprune.models.splits import resolve

    if not name:
        raise ConfigError("--split needs a split-point name (see `edgeprune inspect MODEL`)")
    return resolve(model, ctx.ds.in_shape, [name])[0]


def inversion_at(run_dir: Path, name: str) -> dict | None:
    """The inversion figures of a run at one split point (mean PSNR / SSIM / judge accuracy per variant)."""
    from edgeprune.run import read_manifest, read_verified_json

    manifest = read_manifest(run_dir)
    if not (Path(run_dir) / INVERSION).is_file() and INVERSION not in manifest["artifacts"]:
        return None
    inv = read_verified_json(run_dir, manifest, INVERSION)  # at its recorded sha256, like every file read
    if name not in inv.get("layers", {}):
        return None
    out = {}
    for variant, layers in inv["variants"].items():
        for attack, a in layers.get(name, {}).get("attacks", {}).items():
            out.setdefault(variant, {})[attack] = {k: a[k] for k in ("psnr", "ssim", "mse", "judge_accuracy") if k in a}
    return out


def feature_std(ctx: Context, model, point) -> float:
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
        point = split_point(ctx, model, split)
        xv, _ = ctx.arrays("nonmembers", ctx.recipe.export.verify_samples)
        sigma = feature_std(ctx, model, point) * noise if noise > 0 else 0.0
        tmp = up.staged_path(f"{SPLIT_DIR}/split.json").parent
        info = export_split(model, ctx.ds.in_shape, point, tmp, xv, opset=opset, rtol=ctx.recipe.export.rtol,
                            noise_sigma=sigma)
        if noise > 0:
            info["noise"]["sigma_relative"] = noise
        info["inversion"] = inversion_at(run_dir, point.name)
        for name in ("head.onnx", "tail.onnx"):
            up.commit(f"{SPLIT_DIR}/{name}")
        up.write_json(f"{SPLIT_DIR}/split.json", info)
        up.manifest["split_deployment"] = {k: v for k, v in info.items() if k != "inversion"}
    log(f"head.onnx and tail.onnx written to {run_dir / SPLIT_DIR}")
    return info


@locks_output
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

    def locked(ctx, model):  # the split point and the run's inversion figures, read under the run's lock
        point = split_point(ctx, model, split)
        return point, inversion_at(Path(run_dir), point.name)

    precisions, ctx, model, xc, xs, source, (point, inversion) = bundle_inputs(run_dir, out, precisions, locked)
    head, tail = cut(model, point)
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
                          "inversion": inversion,
                          "server": {"files": ["server/tail.onnx", "server/run_onnx.py", "server/samples.npz",
                                               "server/manifest.json"]}}}

    out = make_bundle(head, ctx.ds.in_shape, out, precisions, xc, xs, batch=batch, dynamic_batch=dynamic_batch,
                      opset=ctx.recipe.export.opset, kernels_dir=KERNELS_DIR, output_name=FEATURES, extra=server_side,
                      source={**source, "split": point.name})
    log(f"split bundle written to {out} (head: {', '.join(precisions)}; tail: server/)")
    return out
