"""Privacy / accuracy trade-off of privacy-aware compression, over seeds, against the dense undefended model.

Each configuration (pruning, defense, defense scope, rewind, training options) runs the library's pipeline
(edgeprune.pipeline.run_pipeline: the function behind `edgeprune compress` and behind the attacker's
models) for every seed; the target's variants are audited with an adaptive attacker (shadow / reference
models through the same pipeline) by edgeprune.attack.audit.run_audit. Per configuration: mean and 95%
t-interval over seeds of test accuracy and each attack's AUC / TPR@0.1%FPR on the deployed variant
(pruned+int8 with --quant int8, the fp32 pruned model with --quant none), the Pareto front (accuracy vs
LiRA TPR@0.1%) and the issue-16 goal check: LiRA TPR@0.1% at most half the dense undefended model's with
test accuracy within 1 point of it.

    .venv/bin/python benchmarks/privacy_tradeoff.py [--configs all] [--seeds 0,1,2] [--references 16]
        [--data purchase-synth] [--epochs 20] [--quant int8] [--out benchmarks/results/privacy_tradeoff_cpu.json]

The full preset (the defaults: purchase-synth 20,000 samples, 20 epochs, 16 references, int8) takes hours on
2 CPU cores; the scaled run in benchmarks/README.md says exactly what it changed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("EDGEPRUNE_NO_PROGRESS", "1")

# label -> recipe overrides (merged into the base recipe); every one at the same sparsity and quantization
CONFIGS = {
    "pruned l1": {},
    "regularised (wd, ls 0.1, early stop)": {
        "train": {"weight_decay": 5e-4, "label_smoothing": 0.1, "early_stopping": 3},
        "finetune": {"weight_decay": 5e-4, "label_smoothing": 0.1}},
    "kl:4": {"defense": {"name": "kl", "strength": 4.0}},
    "advreg:1 both": {"defense": {"name": "advreg", "strength": 1.0, "scope": "both"}},
    "relaxloss both": {"defense": {"name": "relaxloss", "scope": "both"}},
    "relaxloss + rewind init": {"defense": {"name": "relaxloss"}, "prune": {"rewind": "init"}, "finetune": "train"},
    "dmp": {"defense": {"name": "dmp"}, "finetune": "train"},
    "dmp both": {"defense": {"name": "dmp", "scope": "both"}, "finetune": "train"},
    "distill-reg:0.9": {"defense": {"name": "distill-reg", "strength": 0.9}},
    "dpsgd:1 train": {"defense": {"name": "dpsgd", "strength": 1.0, "scope": "train"}, "finetune": {"epochs": 0}},
    # weight decay through training and a fine-tune as long as the training (at its rate): recovers the
    # accuracy one-shot pruning costs (no defense)
    "wd 5e-4 + long fine-tune": {"train": {"weight_decay": 5e-4}, "finetune": "train"},
    # plain L1 pruning fine-tuned twice as long as the dense training, at its rate (what tune chose on CIFAR-10)
    "pruned l1 + long fine-tune": {"finetune": {"epochs": "train:2", "lr": 1e-3}},
    # DMP whose teacher is trained with label smoothing + weight decay (a better teacher, itself leakier:
    # the deployed student never sees a member), the defender's reference data 80% of the pool, the student
    # trained for twice the teacher's epochs
    "dmp (regularised teacher + large reference)": {
        "train": {"label_smoothing": 0.1, "weight_decay": 5e-4},
        "defense": {"name": "dmp", "reference_samples": "pool:0.8"},
        "finetune": {"epochs": "train:2", "lr": 1e-3}},
    "dmp (large reference)": {"defense": {"name": "dmp", "reference_samples": "pool:0.8"},
                              "finetune": {"epochs": "train:2", "lr": 1e-3}},
    # the same with the student trained four times as long as the teacher (Location: 80 epochs over 2,004
    # reference samples; chosen over train:2 on the validation split, never on the audited non-members)
    "dmp (large reference + long student)": {"defense": {"name": "dmp", "reference_samples": "pool:0.8"},
                                             "finetune": {"epochs": "train:4", "lr": 1e-3}},
    # DMP with the reference samples' own labels mixed in (defense.hard_labels 0.5: Hinton-style distillation
    # with ground truth; still no member in the loss), and the reference data alone (hard_labels 1: no
    # teacher), the baseline that says how much of a DMP student's accuracy and leakage its teacher brings
    "dmp (large reference + hard labels 0.5)": {
        "defense": {"name": "dmp", "reference_samples": "pool:0.8", "hard_labels": 0.5},
        "finetune": {"epochs": "train:2", "lr": 1e-3}},
    "reference data only (no teacher)": {
        "defense": {"name": "dmp", "reference_samples": "pool:0.8", "hard_labels": 1.0},
        "finetune": {"epochs": "train:2", "lr": 1e-3}},
}
ATTACKS = ["loss", "lira-online-fixed"]
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def base_recipe(args) -> dict:
    return {"model": args.model, "data": args.data,
            "train": {"epochs": args.epochs, "lr": 1e-3},
            "finetune": {"epochs": args.finetune_epochs, "lr": 5e-4},
            "prune": {"sparsity": args.sparsity, "criterion": "l1"},
            "quant": {"mode": args.quant},
            "defense": {"reference_samples": args.reference_samples},
            # paper_claims.py shares this base and has no split options: the recipe's defaults there
            "split": {"member_fraction": getattr(args, "member_fraction", 0.25),
                      "max_members": getattr(args, "max_members", None)}}


def make_recipe(base: dict, overrides: dict, seed: int, pool_size: int | None = None,
                max_reference: int | None = None):
    """The base recipe with a configuration's overrides; ``"finetune": "train"`` retrains for as many epochs
    (at the training rate) as the dense model had, for configurations that train from scratch. Two relative
    values keep a configuration meaningful on every data set: ``"epochs": "train:K"`` (K times the dense
    model's epochs) and ``"reference_samples": "pool:F"`` (that share of the attacker pool, ``pool_size``, at
    most ``max_reference``)."""
    from edgeprune.recipe import Recipe, from_dict

    d = json.loads(json.dumps(base))
    for section, values in overrides.items():
        if values == "train":
            d[section] = dict(d["train"])
        elif isinstance(values, dict):
            d.setdefault(section, {}).update(values)
        else:
            d[section] = values
    for section in d.values():
        if not isinstance(section, dict):
            continue
        if isinstance(section.get("epochs"), str) and section["epochs"].startswith("train:"):
            section["epochs"] = round(float(section["epochs"][6:]) * d["train"]["epochs"])
        if isinstance(section.get("reference_samples"), str) and section["reference_samples"].startswith("pool:"):
            if pool_size is None:
                raise ValueError("a pool-relative reference_samples needs the pool size")
            section["reference_samples"] = int(float(section["reference_samples"][5:]) * pool_size)
            if max_reference is not None:
                section["reference_samples"] = min(section["reference_samples"], max_reference)
    d["seed"] = seed
    return from_dict(Recipe, d).validate()


def pool_size(recipe_dict: dict) -> int:
    """Size of the attacker pool the split leaves (the same for every seed)."""
    from edgeprune.data import load_dataset, make_split

    split = recipe_dict.get("split", {})
    ds = load_dataset(recipe_dict["data"])
    return int(make_split(ds, 0, split.get("member_fraction", 0.25), split.get("max_members")).pool.size)


def run_one(recipe, attacks: list[str], shadows: int, references: int, work: Path, attacker_recipe=None,
            dense_only: bool = False, cache: Path | None = None, max_samples: int = 5000) -> dict:
    """Train the target through the pipeline and audit its variants. ``attacker_recipe``: the recipe the
    attacker's own models follow (default: the target's: adaptive); ``cache``: a signal cache shared by runs
    (attacker models with the same recipe, seed and split are trained once)."""
    import torch

    from edgeprune.attack.audit import AuditPlan, ModelFactory, pipeline_key, run_audit
    from edgeprune.attack.signals import SignalCache, onnx_predictor, torch_predictor
    from edgeprune.data import load_dataset, make_split
    from edgeprune.models import build_model
    from edgeprune.pipeline import quant_variant, run_pipeline, split_reference

    ds = load_dataset(recipe.data)
    split = make_split(ds, recipe.seed, recipe.split.member_fraction, recipe.split.max_members)
    x, y = torch.from_numpy(ds.x), torch.from_numpy(ds.y)
    xm, ym = x[split.members], y[split.members]
    reference = split_reference(x[split.pool], y[split.pool], recipe.defense.reference_samples, recipe.seed + 5)

    def make_model():
        return build_model(recipe.model, ds.in_shape, ds.num_classes)

    t0 = time.perf_counter()
    out = run_pipeline(make_model, ds.in_shape, xm, ym, recipe, recipe.seed, work, "target", reference=reference,
                       dense_only=dense_only)
    train_s = time.perf_counter() - t0
    key = pipeline_key(recipe, split.hash())
    targets = {v: torch_predictor(m, key=f"target-{v}-{key}") for v, m in out.models.items()}
    label = quant_variant(recipe)
    if label and not dense_only:
        targets[label] = onnx_predictor(out.onnx[label], key=f"target-{label}-{key}")
    arecipe = attacker_recipe or recipe
    factory = ModelFactory(make_model, ds.in_shape, arecipe, pipeline_key(arecipe, split.hash()), list(targets),
                           pool=split.pool)
    plan = AuditPlan(attacks, shadows, references, max_samples, 2000, 200, recipe.seed)
    audit = run_audit(ds, split, targets, plan, factory, SignalCache(cache or work / "cache"))
    res = {"seed": recipe.seed, "train_seconds": train_s, "audit_seconds": audit["timing"]["total_s"],
           "variants": {}}
    for v, a in audit["variants"].items():
        res["variants"][v] = {"test_accuracy": a["test_accuracy"], "train_accuracy": a["train_accuracy"],
                              "attacks": {n: {k: r[k] for k in ("auc", "attack_accuracy", "oracle_balanced_accuracy",
                                                                "tpr@0.001fpr", "tpr@0.01fpr", "ci95") if k in r}
                                          for n, r in a["attacks"].items()}}
    res["deployed"] = "dense" if dense_only else label or "pruned"
    return res


def mean_ci(values: list[float]) -> dict:
    """Mean and the 95% t-interval over seeds (half-width; 0 for one seed)."""
    n = len(values)
    m = sum(values) / n
    if n < 2:
        return {"mean": m, "ci95": 0.0, "n": n}
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))
    return {"mean": m, "ci95": T975.get(n - 1, 1.96) * sd / math.sqrt(n), "n": n}


def summarise(runs: list[dict], variant: str, attacks: list[str]) -> dict:
    rows = [r["variants"][variant if variant != "deployed" else r["deployed"]] for r in runs]
    out = {"test_accuracy": mean_ci([r["test_accuracy"] for r in rows])}
    for name in attacks:
        for metric in ("auc", "tpr@0.001fpr", "tpr@0.01fpr", "attack_accuracy", "oracle_balanced_accuracy"):
            vals = [r["attacks"][name].get(metric) for r in rows if name in r["attacks"]]
            if any(v is None for v in vals):  # below resolution (or no attacker threshold) in some seed: no mean
                continue
            if vals:
                out[f"{name} {metric}"] = mean_ci(vals)
    return out


def goal(dense: dict, deployed: dict, lira: str = "lira-online-fixed", fpr: str = "0.001") -> dict:
    """Issue 16's goal: LiRA TPR@0.1% at most half the dense undefended model's, accuracy within 1 point.
    ``fpr`` "0.01" where 0.1% is below resolution (fewer than 5,000 non-members: Location)."""
    k = f"{lira} tpr@{fpr}fpr"
    if k not in dense or k not in deployed:
        return {"evaluated": False, "metric": k}
    half = dense[k]["mean"] / 2
    acc_gap = dense["test_accuracy"]["mean"] - deployed["test_accuracy"]["mean"]
    return {"evaluated": True, "tpr_dense": dense[k]["mean"], "tpr": deployed[k]["mean"],
            "tpr_ci95": deployed[k]["ci95"], "tpr_at_most_half": deployed[k]["mean"] <= half,
            "tpr_upper_ci_at_most_half": deployed[k]["mean"] + deployed[k]["ci95"] <= half,
            "accuracy_gap_points": 100 * acc_gap, "accuracy_within_1_point": acc_gap <= 0.01, "metric": k,
            "met": deployed[k]["mean"] <= half and acc_gap <= 0.01}


def pareto(points: dict[str, tuple[float, float]]) -> list[str]:
    """Labels no other point beats on both higher accuracy and lower TPR."""
    return [a for a, (acc, tpr) in points.items()
            if not any(b != a and acc2 >= acc and tpr2 <= tpr and (acc2, tpr2) != (acc, tpr)
                       for b, (acc2, tpr2) in points.items())]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", default="all", help="comma- (or ;-) separated labels of CONFIGS, or all")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--data", default="purchase-synth")
    ap.add_argument("--model", default="mlp")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--finetune-epochs", type=int, default=10)
    ap.add_argument("--sparsity", type=float, default=0.5)
    ap.add_argument("--quant", default="int8", choices=["int8", "none"])
    ap.add_argument("--references", type=int, default=16)
    ap.add_argument("--reference-samples", type=int, default=2000)
    ap.add_argument("--max-reference-samples", type=int, default=None,
                    help="cap on the pool-relative reference data of the dmp configurations (large pools: MNIST)")
    ap.add_argument("--member-fraction", type=float, default=0.25)
    ap.add_argument("--max-members", type=int, default=None)
    ap.add_argument("--goal-fpr", default="0.001", choices=["0.001", "0.01"],
                    help="FPR of the goal's LiRA TPR (0.01 where 0.1%% is below resolution: < 5,000 non-members)")
    ap.add_argument("--merge", default=None, help="comma-separated result JSONs of this script (same settings but "
                    "--configs / --seeds): join their configurations into --out instead of running")
    ap.add_argument("--keep-signals", default="", help="keep each run's signal cache under DIR/<config>/seed<S> "
                    "with a manifest.json naming the target's and every reference model's logits on the "
                    "candidates (for benchmarks/check_privacy_tradeoff.py)")
    ap.add_argument("--out", default="benchmarks/results/privacy_tradeoff_cpu.json")
    args = ap.parse_args()

    from edgeprune import api

    out = Path(args.out)
    if args.merge:
        docs = [json.loads(Path(f).read_text()) for f in args.merge.split(",")]
        results = {}
        for d in docs:  # a configuration run in several processes (one per seed): its runs are joined
            for k, v in d["results"].items():
                results[k] = config_result(v["overrides"], join_seeds(results[k]["runs"] + v["runs"], k)) \
                    if k in results else v
        settings = docs[0]["settings"]
        settings["seeds"] = ",".join(sorted({str(r["seed"]) for v in results.values() for r in v["runs"]}, key=int))
        settings["merged_from"] = [{"file": Path(f).name, "command": d["command"], "total_seconds": d["total_seconds"]}
                                   for f, d in zip(args.merge.split(","), docs, strict=True)]
        doc = finish(results, argparse.Namespace(**settings), time.perf_counter()
                     - sum(d["total_seconds"] for d in docs), docs[0]["machine"])
        write(doc, out)
        return 0
    sep = ";" if ";" in args.configs else ","  # labels with commas in them: separate with ";"
    labels = list(CONFIGS) if args.configs == "all" else [c.strip() for c in args.configs.split(sep) if c.strip()]
    unknown = [c for c in labels if c not in CONFIGS]
    if unknown:
        sys.exit(f"unknown configuration(s) {unknown}; choose from {list(CONFIGS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    base = base_recipe(args)
    pool = pool_size(base)
    t_start = time.perf_counter()
    results = {}
    machine = api.machine()
    for label in labels:
        runs = []
        for seed in seeds:
            work = Path(tempfile.mkdtemp())
            keep = Path(args.keep_signals) / slug(label) / f"seed{seed}" if args.keep_signals else None
            try:
                recipe = make_recipe(base, CONFIGS[label], seed, pool, args.max_reference_samples)
                r = run_one(recipe, ATTACKS, 0, args.references, work, cache=keep / "cache" if keep else None)
                if keep:
                    write_manifest(keep, label, recipe, args.references)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            r["recipe"] = recipe.to_dict()
            runs.append(r)
            dep = r["variants"][r["deployed"]]["attacks"]["lira-online-fixed"]
            print(f"{label} seed {seed}: acc {r['variants'][r['deployed']]['test_accuracy']:.3f} LiRA TPR@0.1% "
                  f"{dep['tpr@0.001fpr']} TPR@1% {dep['tpr@0.01fpr']} "
                  f"({r['train_seconds'] + r['audit_seconds']:.0f}s)", file=sys.stderr, flush=True)
        results[label] = config_result(CONFIGS[label], runs)
        write(finish(results, args, t_start, machine), out, quiet=True)  # partial results survive a stop
    write(finish(results, args, t_start, machine), out)
    return 0


def slug(label: str) -> str:
    """A configuration label as a directory name."""
    return "".join(c if c.isalnum() or c in ".-" else "_" for c in label).strip("_")


def write_manifest(keep: Path, label: str, recipe, references: int, max_samples: int = 5000) -> None:
    """Where one run's LiRA inputs lie in its signal cache (file names are hashes of model and sample keys):
    the target's logits on the audit candidates per variant, which candidates are members, and every
    reference model's logits on the same candidates with the candidates it trained on."""
    from edgeprune.attack.attackers import model_key
    from edgeprune.attack.audit import reference_membership, reference_tag
    from edgeprune.attack.signals import SignalCache
    from edgeprune.pipeline import quant_variant

    _, key, cand, ck = audit_keys(recipe, max_samples)
    cache = SignalCache(keep / "cache")
    variants = ["dense", "pruned"] + ([quant_variant(recipe)] if quant_variant(recipe) else [])

    def rel(model: str) -> str:  # the audit's attacks here need no sensitivity: the entry without it
        return str(cache.path(model, ck, False).relative_to(keep))

    ref_in = reference_membership(references, cand.idx.size, recipe.seed)
    man = {"config": label, "seed": recipe.seed, "variants": variants, "candidate_index": cand.idx.tolist(),
           "is_member": cand.is_member.astype(int).tolist(),
           "targets": {v: rel(f"target-{v}-{key}") for v in variants},
           "references": [{"is_in": ref_in[r].astype(int).tolist(),
                           "signals": {v: rel(model_key(reference_tag(r, recipe.seed, ck), v, key)) for v in variants}}
                          for r in range(references)]}
    save_manifest(keep, man, [*man["targets"].values(), *(p for r in man["references"] for p in r["signals"].values())])


def audit_keys(recipe, max_samples: int):
    """What the audit of a run names its cached signals by: the split, the pipeline key, the candidates and
    their sample key (also used by paper_claims.py's manifest)."""
    from edgeprune.attack.audit import pick_candidates, pipeline_key
    from edgeprune.attack.signals import sample_key
    from edgeprune.data import load_dataset, make_split

    ds = load_dataset(recipe.data)
    split = make_split(ds, recipe.seed, recipe.split.member_fraction, recipe.split.max_members)
    cand = pick_candidates(split, max_samples, recipe.seed)
    return split, pipeline_key(recipe, split.hash()), cand, sample_key(cand.idx, "candidates")


def save_manifest(keep: Path, man: dict, paths: list[str]) -> None:
    """Write keep/manifest.json after checking that every signal file it names is in the cache."""
    missing = [p for p in paths if not (keep / p).is_file()]
    if missing:
        raise RuntimeError(f"signals named in the manifest are not in the cache: {missing[:3]}")
    save_json(man, keep / "manifest.json")


def config_result(overrides: dict, runs: list[dict]) -> dict:
    """A configuration's runs and its dense / deployed figures over them."""
    return {"overrides": overrides, "runs": runs, "dense": summarise(runs, "dense", ATTACKS),
            "deployed": summarise(runs, "deployed", ATTACKS)}


def join_seeds(rows: list[dict], name: str) -> list[dict]:
    """One configuration's runs gathered from several result files (e.g. one process per seed), by seed; the
    same seed in two files is an error (also used by paper_claims.py --merge)."""
    seeds = [r["seed"] for r in rows]
    if len(set(seeds)) != len(seeds):
        sys.exit(f"seed given twice for {name!r} (the same seed in two files): {sorted(seeds)}")
    return sorted(rows, key=lambda r: r["seed"])


def save_json(doc: dict, out: Path) -> None:
    from edgeprune.run import atomic_write_bytes

    atomic_write_bytes(out, json.dumps(doc, indent=2).encode())


def write(doc: dict, out: Path, quiet: bool = False) -> None:
    save_json(doc, out)
    if quiet:
        return
    _plot(doc, out.with_suffix(".png"))
    print_table(doc)
    print(f"wrote {out} and {out.with_suffix('.png')}")


def finish(results: dict, args, t_start: float, machine: dict) -> dict:
    fpr = getattr(args, "goal_fpr", "0.001")
    lira = f"lira-online-fixed tpr@{fpr}fpr"
    dense = results.get("pruned l1", next(iter(results.values())))["dense"]  # the dense undefended model
    points = {"dense (undefended)": (dense["test_accuracy"]["mean"], dense.get(lira, {}).get("mean", 0.0))}
    for label, r in results.items():
        r["goal"] = goal(dense, r["deployed"], fpr=fpr)
        points[label] = (r["deployed"]["test_accuracy"]["mean"], r["deployed"].get(lira, {}).get("mean", 0.0))
    return {"benchmark": "privacy_tradeoff", "command": " ".join(sys.argv), "machine": machine,
            "settings": {k: v for k, v in vars(args).items()}, "attacks": ATTACKS, "goal_metric": lira,
            "total_seconds": time.perf_counter() - t_start, "dense_undefended": dense, "results": results,
            "pareto": pareto(points), "goal_met_by": [k for k, r in results.items() if r["goal"].get("met")]}


def _fmt(s: dict | None) -> str:
    return "below resolution" if s is None else f"{s['mean']:.3f} ± {s['ci95']:.3f}"


def print_table(doc: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table("configuration", "test acc", "loss AUC", "LiRA AUC", "LiRA TPR@0.1%", "LiRA TPR@1%", "goal",
              title=f"privacy trade-off, deployed variant, mean ± 95% CI over seeds ({doc['settings']['seeds']})")
    d = doc["dense_undefended"]
    t.add_row("dense (undefended)", _fmt(d["test_accuracy"]), _fmt(d["loss auc"]), _fmt(d["lira-online-fixed auc"]),
              _fmt(d.get("lira-online-fixed tpr@0.001fpr")), _fmt(d.get("lira-online-fixed tpr@0.01fpr")), "-")
    for label, r in doc["results"].items():
        s = r["deployed"]
        g = r["goal"]
        t.add_row(label, _fmt(s["test_accuracy"]), _fmt(s["loss auc"]), _fmt(s["lira-online-fixed auc"]),
                  _fmt(s.get("lira-online-fixed tpr@0.001fpr")), _fmt(s.get("lira-online-fixed tpr@0.01fpr")),
                  ("MET" if g["met"] else f"no (TPR {'<=' if g['tpr_at_most_half'] else '>'} half, "
                   f"acc gap {g['accuracy_gap_points']:.1f} pt)") if g.get("evaluated") else "-")
    Console(width=200).print(t)
    print(f"Pareto front (accuracy vs {doc.get('goal_metric', 'LiRA TPR@0.1%')}):", ", ".join(doc["pareto"]))
    print("goal met by:", ", ".join(doc["goal_met_by"]) or "none")


def _plot(doc: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = doc.get("goal_metric", "lira-online-fixed tpr@0.001fpr")
    fig, ax = plt.subplots(figsize=(7, 4.8))
    d = doc["dense_undefended"]
    if k in d:  # below resolution in some seed (too few non-members): no dense point and no TPR goal line
        ax.errorbar([d["test_accuracy"]["mean"]], [d[k]["mean"]], xerr=[d["test_accuracy"]["ci95"]],
                    yerr=[d[k]["ci95"]], fmt="s", c="black", label="dense (undefended)")
        ax.axhline(d[k]["mean"] / 2, ls="--", c="grey", lw=0.8, label="goal: half the dense TPR")
    for label, r in doc["results"].items():
        s = r["deployed"]
        if k not in s:  # below resolution in some seed: no point to draw
            continue
        ax.errorbar([s["test_accuracy"]["mean"]], [s[k]["mean"]], xerr=[s["test_accuracy"]["ci95"]],
                    yerr=[s[k]["ci95"]], fmt="*" if label in doc["pareto"] else "o", capsize=2)
        ax.annotate(label, (s["test_accuracy"]["mean"], s[k]["mean"]), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    ax.axvline(d["test_accuracy"]["mean"] - 0.01, ls=":", c="grey", lw=0.8, label="goal: dense accuracy - 1 pt")
    ax.set_xlabel("test accuracy (deployed variant)")
    ax.set_ylabel(f"LiRA (fixed variance) TPR @ {float(k.split('@')[1][:-3]):.1%} FPR")
    ax.set_title(f"{doc['settings']['data']}, sparsity {doc['settings']['sparsity']}, mean ± 95% CI")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
