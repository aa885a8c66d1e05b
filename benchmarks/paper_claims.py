"""The seed papers' claims next to our measurement, over seeds, with a verdict for each.

- Yuan & Zhang (USENIX Security '22): (a) pruned-and-fine-tuned models leak more than dense ones (SAMIA with
  shadow models that are pruned the same way); (b) their KL pair-balancing defense lowers attack accuracy
  while keeping accuracy: measured against BOTH threat models, adaptive (the attacker's shadows use the
  defense) and non-adaptive (plain shadows, as in the paper).
- MCMIA (IJCAI '21): ADMM pruning lowers attack accuracy by up to 13.6% against the dense model and by 10%
  against the min-max game (AdvReg, here applied while training the dense model; both threat models).
- Famili & Lao (Sensors '23): quantization lowers attack accuracy (~14%) and TPR (~37%) against full
  precision (the pruned model in fp32 vs its int8 QDQ artifact; threshold attacks and SAMIA, shadows
  compressed the same way).

Every run is edgeprune's pipeline (benchmarks/privacy_tradeoff.run_one). **Attack accuracy** is the seed
papers' metric: the balanced accuracy (= accuracy on their balanced member / non-member sets) at the
threshold a real attacker picks without the target's labels (on its shadow models; SAMIA's classifier
decides by itself). The oracle balanced accuracy (best threshold chosen on the target's own labels, an upper
bound no attacker reaches) is kept beside it, labelled as such. A claim is confirmed when the 95% t-interval
of the per-seed paired difference lies on the claimed side of zero, refuted when it lies on the other side,
and "no measurable difference" otherwise; with fewer than 3 seeds there is no claim ("no claim (N seeds)").

Every run writes its result into ``--out`` as soon as it finishes (a partial run is not lost); run seeds as
separate processes and join them with ``--merge``:

    for s in 0 1 2; do .venv/bin/python benchmarks/paper_claims.py --seeds $s --out /tmp/pc$s.json & done; wait
    .venv/bin/python benchmarks/paper_claims.py --merge /tmp/pc0.json,/tmp/pc1.json,/tmp/pc2.json

``--runs plain`` (comma-separated names of RUNS) makes only some runs; the claims they support are reported.
``--keep-signals DIR`` keeps the seed's signal cache and writes ``DIR/seed<S>/manifest.json`` naming the
cached signals of the plain run (targets and shadows, every variant): benchmarks/check_paper_claims.py
recomputes figures from them with numpy and scikit-learn only.
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

from privacy_tradeoff import audit_keys, join_seeds, make_recipe, mean_ci, run_one, save_manifest  # noqa: E402
from privacy_tradeoff import save_json as write  # noqa: E402

SAMIA = "samia"
ACC = "attack_accuracy"  # at the attacker's own (shadow-chosen) threshold
ORACLE = "oracle_balanced_accuracy"
TPR = "tpr@0.01fpr"  # TPR@0.1% needs >= 5,000 non-members to be resolved (metrics.MIN_FALSE_POSITIVES)
# name -> (recipe overrides, attacks, dense only, also audited by the non-adaptive attacker)
RUNS = {
    "plain": ({}, ["loss", "confidence", SAMIA], False, False),
    "kl": ({"defense": {"name": "kl", "strength": 4.0}}, ["loss", SAMIA], False, True),
    "admm": ({"prune": {"schedule": "admm"}}, ["loss", SAMIA], False, False),
    "advreg-dense": ({"defense": {"name": "advreg", "strength": 1.0, "scope": "train"}}, ["loss", SAMIA], True, True),
}
NON_ADAPTIVE = " non-adaptive"


def run_names() -> list[str]:
    return [n + s for n, spec in RUNS.items() for s in ("", NON_ADAPTIVE) if s == "" or spec[3]]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--data", default="purchase-synth")
    ap.add_argument("--model", default="mlp")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--finetune-epochs", type=int, default=10)
    ap.add_argument("--sparsity", type=float, default=0.5)
    ap.add_argument("--shadows", type=int, default=4)
    ap.add_argument("--reference-samples", type=int, default=2000)
    ap.add_argument("--max-samples", type=int, default=5000, help="audited members (and non-members) per seed")
    ap.add_argument("--runs", default="all", help=f"comma-separated runs of {list(RUNS)}, or all")
    ap.add_argument("--out", default="benchmarks/results/paper_claims_cpu.json")
    ap.add_argument("--keep-signals", default="", help="keep the signal caches under this directory (see above)")
    ap.add_argument("--evaluate-only", action="store_true", help="recompute the verdicts of the runs in --out")
    ap.add_argument("--merge", default="", help="comma-separated result files (e.g. one per seed, run in parallel) "
                    "whose runs are joined into --out and evaluated")
    args = ap.parse_args()
    out = Path(args.out)
    if args.merge:
        doc = merge([json.loads(Path(f).read_text()) for f in args.merge.split(",")])
        doc["command"] = " ".join(sys.argv)
        return report(doc, out)
    if args.evaluate_only:
        return report(json.loads(out.read_text()), out)
    return measure(args, out)


def measure(args, out: Path) -> int:
    from privacy_tradeoff import base_recipe

    from edgeprune import api

    args.quant = "int8"  # every run exports its int8 QDQ artifact: the runs share the plain attacker's models
    base = base_recipe(args)
    base["export"] = {"max_int8_drop": 1.0}  # the int8 claim needs the artifact even where it loses accuracy
    seeds = [int(s) for s in args.seeds.split(",")]
    selected = list(RUNS) if args.runs == "all" else [r.strip() for r in args.runs.split(",")]
    if any(r not in RUNS for r in selected):
        sys.exit(f"unknown run(s) in --runs {args.runs!r}; choose from {list(RUNS)}")
    t0 = time.perf_counter()
    settings = {k: v for k, v in vars(args).items() if k not in ("merge", "evaluate_only")}
    doc = {"benchmark": "paper_claims", "command": " ".join(sys.argv), "machine": api.machine(),
           "settings": settings, "complete": False, "total_seconds": 0.0, "runs": {k: [] for k in run_names()}}
    for seed in seeds:
        keep = Path(args.keep_signals) / f"seed{seed}" if args.keep_signals else None
        cache = keep / "cache" if keep else Path(tempfile.mkdtemp())  # one signal cache per seed
        plain = make_recipe(base, {}, seed)  # the non-adaptive attacker's recipe: its models are the plain run's
        try:
            for name, (over, attacks, dense_only, both) in RUNS.items():
                if name not in selected:
                    continue
                recipe = make_recipe(base, over, seed)
                for label, attacker in ((name, None), (name + NON_ADAPTIVE, plain))[: 2 if both else 1]:
                    work = Path(tempfile.mkdtemp())
                    try:
                        r = run_one(recipe, attacks, args.shadows, 0, work, attacker_recipe=attacker,
                                    dense_only=dense_only, cache=cache, max_samples=args.max_samples)
                    finally:
                        shutil.rmtree(work, ignore_errors=True)
                    r["threat"] = "non-adaptive" if attacker is not None else "adaptive"
                    doc["runs"][label].append(r)
                    doc["total_seconds"] = time.perf_counter() - t0
                    write(doc, out)  # after every run: a partial run is not lost
                    print(f"seed {seed} {label}: done ({time.perf_counter() - t0:.0f}s)", file=sys.stderr, flush=True)
            if keep and "plain" in selected:
                write_manifest(keep, plain, RUNS["plain"][1], args)
        finally:
            if not keep:
                shutil.rmtree(cache, ignore_errors=True)
    doc["complete"] = True
    return report(doc, out)


def merge(parts: list[dict]) -> dict:
    """One document from per-seed result files; a seed present twice for one run is an error."""
    doc = {**parts[0], "parts": [p["command"] for p in parts], "complete": all(p.get("complete") for p in parts),
           "total_seconds": sum(p["total_seconds"] for p in parts), "runs": {}}
    for name in run_names():
        doc["runs"][name] = join_seeds([r for p in parts for r in p["runs"].get(name, [])], name)
    doc["settings"] = {**parts[0]["settings"], "seeds": ",".join(str(r["seed"]) for r in doc["runs"]["plain"]),
                       "runs": ",".join(n for n in RUNS if doc["runs"][n])}
    return doc


def write_manifest(keep: Path, recipe, attacks: list[str], args) -> None:
    """Where the plain run's signals lie in the cache: the target's and every shadow's, per variant, with
    which candidates are members (the cache file names are hashes of model and sample keys)."""
    import numpy as np

    from edgeprune.attack.attackers import model_key
    from edgeprune.attack.audit import needs_of, shadow_samples
    from edgeprune.attack.signals import SignalCache, sample_key

    split, key, cand, ck = audit_keys(recipe, args.max_samples)
    sens = "sensitivity" in needs_of(attacks)
    cache = SignalCache(keep / "cache")
    variants = ["dense", "pruned", "pruned+int8"]
    man = {"seed": recipe.seed, "run": "plain", "variants": variants, "is_member": cand.is_member.astype(int).tolist(),
           "targets": {}, "shadows": []}
    for v in variants:
        man["targets"][v] = str(cache.path(f"target-{v}-{key}", ck, sens).relative_to(keep))
    for i in range(args.shadows):
        _, ev, is_in, _ = shadow_samples(split.pool, split.members.size, args.max_samples, 0, recipe.seed + 1000 + i)
        sk = sample_key(ev, f"shadow{i}")
        man["shadows"].append({"is_in": is_in.astype(int).tolist(), "signals": {
            v: str(cache.path(model_key(f"shadow{i}-s{recipe.seed}", v, key), sk, sens).relative_to(keep))
            for v in variants}})
    assert np.asarray(man["is_member"]).sum() == cand.is_member.sum()
    save_manifest(keep, man, [*man["targets"].values(), *(p for s in man["shadows"] for p in s["signals"].values())])


# --- evaluation ---------------------------------------------------------------------------------------


def _fig(run: dict, variant: str, attack: str | None, key: str):
    v = run["variants"][variant]
    return v["test_accuracy"] if attack is None else v["attacks"][attack].get(key)


def paired(runs_a: list[dict], va: str, runs_b: list[dict], vb: str, attack: str | None, key: str) -> dict:
    """a - b per seed (seeds present in both): mean, 95% t-interval, per-seed values, relative change."""
    b_by_seed = {r["seed"]: r for r in runs_b}
    rows = [(r["seed"], _fig(r, va, attack, key), _fig(b_by_seed[r["seed"]], vb, attack, key))
            for r in runs_a if r["seed"] in b_by_seed]
    out = {"seeds": [s for s, _, _ in rows], "a": [a for _, a, _ in rows], "b": [b for _, _, b in rows],
           "n": len(rows)}
    if not rows or any(a is None or b is None for _, a, b in rows):
        out["missing"] = "no seeds" if not rows else "a figure is missing (below resolution or no threshold)"
        return out
    diffs = [a - b for _, a, b in rows]
    d = mean_ci(diffs)
    ma, mb = mean_ci(out["a"]), mean_ci(out["b"])
    out.update(per_seed_difference=diffs, mean=d["mean"], ci95=d["ci95"], a_mean=ma["mean"], a_ci95=ma["ci95"],
               b_mean=mb["mean"], b_ci95=mb["ci95"], relative=d["mean"] / mb["mean"] if mb["mean"] else None)
    return out


def verdict(d: dict, claimed_sign: int, min_seeds: int = 3) -> str:
    if "mean" not in d:
        return f"not measurable ({d['missing']})"
    if d["n"] < min_seeds:
        side = "no difference" if d["mean"] == 0 else (
            "mean on the claimed side" if claimed_sign * d["mean"] > 0 else "mean on the opposite side")
        return f"no claim ({d['n']} seed{'s' if d['n'] != 1 else ''}; {side})"
    ends = (claimed_sign * (d["mean"] - d["ci95"]), claimed_sign * (d["mean"] + d["ci95"]))
    if min(ends) > 0:  # the whole interval on the claimed side of zero
        return "confirmed"
    if max(ends) < 0:
        return "refuted"
    return "no measurable difference"


def two_threats(adaptive: str, non_adaptive: str) -> str:
    if adaptive == non_adaptive:
        return adaptive
    if non_adaptive == "confirmed":
        return "confirmed only under the non-adaptive attacker"
    return f"adaptive attacker: {adaptive}; non-adaptive attacker: {non_adaptive}"


def txt(d: dict, what: str, scale: float = 100.0, unit: str = " pts") -> str:
    if "mean" not in d:
        return f"{what}: {d['missing']}"
    rel = f", {100 * d['relative']:+.1f}% relative" if d.get("relative") is not None else ""
    per = ", ".join(f"{scale * x:+.2f}" for x in d["per_seed_difference"])
    return (f"{what} {d['a_mean']:.4f} vs {d['b_mean']:.4f}: {scale * d['mean']:+.2f} ± {scale * d['ci95']:.2f}"
            f"{unit} (95% CI, {d['n']} seeds; per seed {per}){rel}")


def size_against_paper(d: dict, paper: float) -> dict:
    """Our effect against the paper's figure, read both ways the papers leave open: as points of attack
    accuracy and as a relative change."""
    lo, hi = d["mean"] - d["ci95"], d["mean"] + d["ci95"]
    as_points, as_relative = d["mean"] / paper, (d["relative"] or 0.0) / paper
    if lo <= paper <= hi:
        reading = "the paper's figure (read as points) is inside our interval"
    elif max(as_points, as_relative) < 0.5:
        reading = f"under half the paper's figure (ours {100 * d['mean']:+.2f} pts, {100 * (d['relative'] or 0):+.1f}% " \
                  f"relative; paper {100 * paper:+.1f}%)"
    else:
        reading = f"ours {100 * d['mean']:+.2f} pts ({100 * (d['relative'] or 0):+.1f}% relative) vs paper {100 * paper:+.1f}%"
    return {"paper": paper, "ours_points": d["mean"], "ours_ci95": [lo, hi], "ours_relative": d["relative"],
            "fraction_of_paper_as_points": as_points, "fraction_of_paper_as_relative": as_relative, "reading": reading}


def evaluate(runs: dict) -> list[dict]:
    out = []
    p = runs.get("plain", [])

    def claim(paper, text, paper_figure, sign, primary, extra, threat_note=None, paper_size=None, **more):
        v = verdict(primary, sign)
        row = {"paper": paper, "claim": text, "paper_figure": paper_figure, "verdict": v, "primary": primary,
               "extra": extra, **more}
        if paper_size is not None and "mean" in primary:
            row["size"] = size_against_paper(primary, paper_size)
        row["measured"] = "; ".join(txt(d, w) for w, d in [(row.pop("primary_label"), primary), *extra.items()])
        if threat_note:
            row["threats"] = threat_note
        return row

    # Yuan & Zhang (a): pruned leaks more than dense (no defense: both threat models are the same attacker)
    out.append(claim("Yuan & Zhang '22", "pruned-and-fine-tuned models leak more than dense ones (SAMIA)",
                     "higher SAMIA attack accuracy on pruned models", +1,
                     paired(p, "pruned", p, "dense", SAMIA, ACC),
                     {"SAMIA oracle balanced accuracy": paired(p, "pruned", p, "dense", SAMIA, ORACLE),
                      "SAMIA AUC": paired(p, "pruned", p, "dense", SAMIA, "auc"),
                      "loss attack accuracy": paired(p, "pruned", p, "dense", "loss", ACC)},
                     primary_label="SAMIA attack accuracy (shadow threshold) pruned vs dense",
                     threat_note="no defense: the adaptive and non-adaptive attackers are the same"))
    # Yuan & Zhang (b): KL lowers attack accuracy while keeping accuracy; both threat models
    k, kn = runs.get("kl", []), runs.get("kl" + NON_ADAPTIVE, [])
    ad, non = paired(k, "pruned", p, "pruned", SAMIA, ACC), paired(kn, "pruned", p, "pruned", SAMIA, ACC)
    acc = paired(k, "pruned", p, "pruned", None, "test_accuracy")
    row = claim("Yuan & Zhang '22", "the KL defense lowers attack accuracy while maintaining sparsity and accuracy",
                "lower SAMIA attack accuracy at equal sparsity and accuracy", -1, ad,
                {"non-adaptive SAMIA attack accuracy kl vs plain pruned": non,
                 "adaptive loss attack accuracy": paired(k, "pruned", p, "pruned", "loss", ACC),
                 "non-adaptive loss attack accuracy": paired(kn, "pruned", p, "pruned", "loss", ACC),
                 "adaptive SAMIA oracle balanced accuracy": paired(k, "pruned", p, "pruned", SAMIA, ORACLE),
                 "test accuracy kl vs plain pruned": acc},
                primary_label="adaptive SAMIA attack accuracy kl vs plain pruned")
    row["verdict_adaptive"], row["verdict_non_adaptive"] = verdict(ad, -1), verdict(non, -1)
    row["verdict"] = two_threats(row["verdict_adaptive"], row["verdict_non_adaptive"])
    acc_v = verdict(acc, -1)
    row["accuracy_cost"] = {"confirmed": "accuracy measurably lower", "refuted": "accuracy measurably higher",
                            "no measurable difference": "accuracy maintained"}.get(
        acc_v, f"accuracy: {acc_v.split(';')[0]})" if "mean" not in acc else
        f"accuracy: {acc_v.split(';')[0]}, {100 * acc['mean']:+.1f} pts)")
    out.append(row)
    # MCMIA: ADMM pruning vs dense, and vs AdvReg (min-max game on the dense model)
    a, g, gn = runs.get("admm", []), runs.get("advreg-dense", []), runs.get("advreg-dense" + NON_ADAPTIVE, [])
    out.append(claim("MCMIA '21", "ADMM pruning lowers attack accuracy vs the dense model",
                     "up to -13.6%", -1, paired(a, "pruned", a, "dense", SAMIA, ACC), paper_size=-0.136,
                     extra={"loss attack accuracy": paired(a, "pruned", a, "dense", "loss", ACC),
                      "SAMIA oracle balanced accuracy": paired(a, "pruned", a, "dense", SAMIA, ORACLE),
                      "test accuracy": paired(a, "pruned", a, "dense", None, "test_accuracy")},
                     primary_label="SAMIA attack accuracy ADMM-pruned vs dense",
                     threat_note="no defense: the adaptive and non-adaptive attackers are the same"))
    ad, non = paired(a, "pruned", g, "dense", SAMIA, ACC), paired(a, "pruned", gn, "dense", SAMIA, ACC)
    row = claim("MCMIA '21", "ADMM pruning lowers attack accuracy vs the min-max game (AdvReg)", "-10%", -1, ad,
                paper_size=-0.10, extra={"vs AdvReg under the non-adaptive attacker": non,
                 "loss attack accuracy (adaptive)": paired(a, "pruned", g, "dense", "loss", ACC),
                 "test accuracy ADMM-pruned vs AdvReg dense": paired(a, "pruned", g, "dense", None, "test_accuracy")},
                primary_label="SAMIA attack accuracy ADMM-pruned vs AdvReg dense (adaptive attacker)")
    row["verdict_adaptive"], row["verdict_non_adaptive"] = verdict(ad, -1), verdict(non, -1)
    row["verdict"] = two_threats(row["verdict_adaptive"], row["verdict_non_adaptive"])
    out.append(row)
    # Famili & Lao: int8 vs fp32 (the plain pruned model and its QDQ artifact)
    for attack in ("loss", "confidence", SAMIA):
        tpr = paired(p, "pruned+int8", p, "pruned", attack, TPR)
        row = claim("Famili & Lao '23", f"quantization lowers attack accuracy and TPR vs full precision ({attack})",
                    "about -14% attack accuracy, -37% TPR", -1, paired(p, "pruned+int8", p, "pruned", attack, ACC),
                    paper_size=-0.14, extra={"TPR@1%FPR": tpr, "AUC": paired(p, "pruned+int8", p, "pruned", attack, "auc"),
                     "test accuracy": paired(p, "pruned+int8", p, "pruned", None, "test_accuracy")},
                    primary_label=f"{attack} attack accuracy int8 vs fp32",
                    threat_note="no defense: the adaptive and non-adaptive attackers are the same")
        row["verdict_tpr"] = verdict(tpr, -1)
        out.append(row)
    return [c for c in out if c["primary"]["n"] > 0]  # claims whose runs were not made (--runs) are left out


def report(doc: dict, out: Path) -> int:
    doc["claims"] = evaluate(doc["runs"])
    write(doc, out)
    for c in doc["claims"]:
        print(f"[{c['verdict'].upper()}] {c['paper']}: {c['claim']} (paper: {c['paper_figure']})\n"
              f"    measured: {c['measured']}")
    print("\n" + markdown_table(doc))
    print(f"wrote {out}")
    return 0


def markdown_table(doc: dict) -> str:
    """claim | paper's figure | our measurement (mean, 95% CI) | verdict: the table in benchmarks/README.md."""
    lines = ["| claim | paper's figure | our measurement (mean ± 95% CI over seeds, attack accuracy at the "
             "attacker's threshold) | verdict |", "|---|---|---|---|"]
    for c in doc["claims"]:
        d = c["primary"]
        if "mean" not in d:
            meas = d["missing"]
        else:
            meas = (f"{d['a_mean']:.3f} vs {d['b_mean']:.3f}: {100 * d['mean']:+.2f} ± {100 * d['ci95']:.2f} pts"
                    + (f" ({100 * d['relative']:+.1f}% rel.)" if d.get("relative") is not None else ""))
        extra = c["extra"]
        for label in ("non-adaptive SAMIA attack accuracy kl vs plain pruned", "vs AdvReg under the non-adaptive "
                      "attacker", "TPR@1%FPR", "test accuracy kl vs plain pruned"):
            e = extra.get(label)
            if e and "mean" in e:
                meas += (f"; {label.replace(' kl vs plain pruned', '')}: {e['a_mean']:.3f} vs {e['b_mean']:.3f}, "
                         f"{100 * e['mean']:+.2f} ± {100 * e['ci95']:.2f} pts")
        v = c["verdict"] + (f"; TPR: {c['verdict_tpr']}" if "verdict_tpr" in c else "") + (
            f"; {c['accuracy_cost']}" if "accuracy_cost" in c else "") + (
            f"; size: {c['size']['reading']}" if "size" in c and c["verdict"] == "confirmed" else "")
        lines.append(f"| {c['paper']}: {c['claim']} | {c['paper_figure']} | {meas} | {v} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
