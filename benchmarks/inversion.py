"""Model inversion from split-point features: does pruning make the input harder to reconstruct?

Huang et al. ("Privacy-preserving learning via deep net pruning") find that magnitude pruning acts like
noise on the hidden layers, so inverting hidden-layer outputs gets worse as pruning grows. We test that
direction on our models: for each model / data set and seed, one dense model and its compressed variants
(structured L1 at 0.5 and 0.8, the 0.5 model's int8 QDQ artifact, unstructured magnitude at 0.8), all from
the same dense weights, each inverted at several split points with the black-box decoder attack
(`edgeprune audit RUN --attacks inversion --layer ...`); PSNR / SSIM on 2 x SAMPLES candidates with
bootstrap 95% CIs, plus the spread across seeds; feature bytes per sample of each variant.

    .venv/bin/python benchmarks/inversion.py [--seeds 0,1,2] [--configs lenet5/digits,resnet20/digits]
        [--samples 200] [--epochs 30] [--out benchmarks/results/inversion_cpu.json]

Writes the JSON (every figure, the machine, the command) and a picture grid per model (originals, then the
reconstructions of each variant at each split point) next to it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("EDGEPRUNE_NO_PROGRESS", "1")

CONFIGS = {
    "lenet5/digits": {"model": "lenet5", "data": "digits", "train": {"epochs": 60, "lr": 0.003},
                      "finetune": {"epochs": 15, "lr": 5e-4},
                      "layers": ["features.2", "features", "classifier.2", "classifier.4"]},
    "resnet20/digits": {"model": "resnet20", "data": "digits", "train": {"epochs": 20, "lr": 0.003},
                        "finetune": {"epochs": 5, "lr": 5e-4},
                        "layers": ["layers.1.2", "layers.2.2", "pool"]},
}
# (label, prune method, sparsity, quant): the 0.5 structured run also yields the int8 variant
PRUNINGS = [("structured 0.5", "structured", 0.5, "int8"), ("structured 0.8", "structured", 0.8, "none"),
            ("unstructured 0.8", "unstructured", 0.8, "none")]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--samples", type=int, default=200, help="candidates per side (members / non-members)")
    ap.add_argument("--epochs", type=int, default=30, help="decoder training epochs")
    ap.add_argument("--out", default="benchmarks/results/inversion_cpu.json")
    ap.add_argument("--prunings", default=",".join(p[0] for p in PRUNINGS), help="subset of the pruning configs")
    ap.add_argument("--merge", default=None, help="comma-separated result files (other seeds) to merge into --out")
    args = ap.parse_args()
    if args.merge:
        report(merge(args.merge.split(","), Path(args.out)))
        return 0
    import torch

    torch.set_num_threads(1)
    from edgeprune import api
    from edgeprune.attack.inversion import InversionPlan
    from edgeprune.recipe import Recipe, from_dict

    seeds = [int(s) for s in args.seeds.split(",")]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results: dict = {"command": " ".join([sys.executable.split("/")[-1], *sys.argv]), "machine": api.machine(),
                     "settings": {"samples_per_side": args.samples, "decoder_epochs": args.epochs, "seeds": seeds,
                                  "attack": "inversion (black-box decoder trained on the attacker pool)"},
                     "configs": {}}
    t_all = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="inv-bench-"))
    try:
        for key in args.configs.split(","):
            cfg = CONFIGS[key]
            per_seed: list[dict] = []
            pictures: dict = {}
            for seed in seeds:
                figures: dict = {"_seed": seed}
                for label, method, sparsity, quant in [p for p in PRUNINGS if p[0] in args.prunings.split(",")]:
                    recipe = from_dict(Recipe, {"model": cfg["model"], "data": cfg["data"], "seed": seed,
                                                "train": cfg["train"], "finetune": cfg["finetune"],
                                                "prune": {"method": method, "sparsity": sparsity},
                                                "quant": {"mode": quant}})
                    run = work / f"{key.replace('/', '-')}-{method}-{sparsity}-s{seed}"
                    t0 = time.perf_counter()
                    api.compress(recipe, run, log=lambda m: None,
                                 stages=["train", "prune", "finetune", "export", "quantize"])
                    t1 = time.perf_counter()
                    plan = InversionPlan(samples=args.samples, epochs=args.epochs)
                    inv = api.inversion_audit(run, ["inversion"], cfg["layers"], plan=plan, log=lambda m: None)
                    names = {"pruned": label, "pruned+int8": "structured 0.5 + int8"}
                    if label == "structured 0.5":
                        names["dense"] = "dense"
                    for variant, layers in inv["variants"].items():
                        if variant not in names:
                            continue
                        figures[names[variant]] = {
                            layer: {"feature_shape": e["feature_shape"], "bytes_per_sample_fp32": e["bytes_per_sample_fp32"],
                                    **{k: e["attacks"]["inversion"][k] for k in ("psnr", "ssim", "mse", "judge_accuracy")}}
                            for layer, e in layers.items()}
                    figures.setdefault("_accuracy", {})[label] = json.loads((run / "manifest.json").read_text())[
                        "stages"]["finetune"]["results"]["test_accuracy"]
                    figures.setdefault("_seconds", {})[label] = {"compress": round(t1 - t0, 1),
                                                                 "inversion": round(time.perf_counter() - t1, 1)}
                    if seed == seeds[0]:
                        for layer in cfg["layers"]:
                            grid = run / "inversion" / f"{layer}.png"
                            pictures.setdefault(layer, {})[label] = grid
                    print(f"{key} seed {seed} {label}: " + ", ".join(
                        f"{layer} {figures[label][layer]['psnr']['mean']:.2f} dB" for layer in cfg["layers"]), flush=True)
                per_seed.append(figures)
            results["configs"][key] = summarise(cfg["layers"], per_seed)
            grid_path = out.with_name(out.stem + f"_{key.replace('/', '-')}.png")
            _combined_grid(pictures, grid_path)
            results["configs"][key]["grid"] = grid_path.name
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["total_seconds"] = round(time.perf_counter() - t_all, 1)
    out.write_text(json.dumps(results, indent=2) + "\n")
    report(results)
    print(f"written {args.out} in {results['total_seconds']}s")
    return 0


def report(results: dict) -> None:
    for key, r in results["configs"].items():
        print(f"\n{key}: PSNR dB, mean over {r['seeds']} seed(s) (std)")
        print("variant".ljust(24) + "".join(layer.rjust(18) for layer in r["layers"]))
        for v, row in r["summary"].items():
            print(v.ljust(24) + "".join(
                f"{row[layer]['psnr']['mean_over_seeds']:8.2f} ({row[layer]['psnr']['std_over_seeds']:.2f})".rjust(18)
                for layer in r["layers"]))
        for line in r["verdict"]:
            print("  " + line)


def summarise(layers: list[str], per_seed: list[dict]) -> dict:
    """Across seeds: mean and spread of the per-seed means, and the verdict against the dense model."""
    import numpy as np

    variants = [v for v in ("dense", *(p[0] for p in PRUNINGS), "structured 0.5 + int8") if v in per_seed[0]]
    summary = {}
    for v in variants:
        summary[v] = {}
        for layer in layers:
            row = {"feature_shape": per_seed[0][v][layer]["feature_shape"],
                   "bytes_per_sample_fp32": per_seed[0][v][layer]["bytes_per_sample_fp32"]}
            for k in ("psnr", "ssim", "judge_accuracy"):
                vals = np.array([s[v][layer][k]["mean"] for s in per_seed])
                row[k] = {"mean_over_seeds": float(vals.mean()),
                          "std_over_seeds": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0,
                          "per_seed": vals.tolist(), "ci95_per_seed": [s[v][layer][k]["ci95"] for s in per_seed]}
            summary[v][layer] = row
    return {"layers": layers, "seeds": len(per_seed), "summary": summary, "per_seed": per_seed,
            "accuracy_per_seed": [s["_accuracy"] for s in per_seed], "verdict": verdict(summary, layers)}


def merge(paths: list[str], out: Path) -> dict:
    """One result from runs of the same configs on different seeds (run in parallel processes)."""
    parts = [json.loads(Path(p).read_text()) for p in paths]
    res = dict(parts[0])
    res["command"] = [p["command"] for p in parts]
    res["settings"] = {**parts[0]["settings"], "seeds": sorted({s for p in parts for s in p["settings"]["seeds"]})}
    res["configs"] = {}
    for key, c in parts[0]["configs"].items():
        by_seed: dict = {}  # parts may hold other seeds or other pruning configs of the same seed
        for i, p in enumerate(parts):
            for j, s in enumerate(p["configs"][key]["per_seed"]):
                e = by_seed.setdefault(s.get("_seed", f"part{i}-{j}"), {})
                for k, v in s.items():
                    e[k] = {**e[k], **v} if isinstance(v, dict) and k in e else v
        per_seed = list(by_seed.values())
        res["configs"][key] = {**summarise(c["layers"], per_seed), "grid": c.get("grid")}
    res["total_seconds"] = sum(p["total_seconds"] for p in parts)
    out.write_text(json.dumps(res, indent=2) + "\n")
    return res


def verdict(summary: dict, layers: list[str]) -> list[str]:
    """Per layer: is each pruned variant's inversion PSNR below the dense one's, outside the spread?
    'lower' / 'higher' needs every seed's bootstrap CI to sit below / above the dense CI of the same seed;
    otherwise 'no measurable difference'."""
    lines = []
    dense = summary["dense"]
    for v, rows in summary.items():
        if v == "dense":
            continue
        words = []
        for layer in layers:
            d_ci, v_ci = dense[layer]["psnr"]["ci95_per_seed"], rows[layer]["psnr"]["ci95_per_seed"]
            if all(b[1] < a[0] for a, b in zip(d_ci, v_ci, strict=True)):
                words.append(f"{layer}: lower")
            elif all(b[0] > a[1] for a, b in zip(d_ci, v_ci, strict=True)):
                words.append(f"{layer}: higher")
            else:
                words.append(f"{layer}: no measurable difference")
        lines.append(f"{v} vs dense PSNR: " + "; ".join(words))
    return lines


def _combined_grid(pictures: dict, path: Path) -> None:
    """Stack the per-run grids (one per pruning config and layer) into one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt

    cells = [(layer, label, p) for layer, by in pictures.items() for label, p in by.items() if p.is_file()]
    if not cells:
        return
    layers = list(pictures)
    labels = list(next(iter(pictures.values())))
    fig, axes = plt.subplots(len(layers), len(labels), figsize=(6 * len(labels), 4.2 * len(layers)), squeeze=False)
    for i, layer in enumerate(layers):
        for j, label in enumerate(labels):
            ax = axes[i][j]
            ax.axis("off")
            p = pictures[layer].get(label)
            if p is not None and p.is_file():
                ax.imshow(mpimg.imread(p))
                ax.set_title(f"{label} run, split at {layer}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
