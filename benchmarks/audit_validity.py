"""Is the audit believable? Three measurements on purchase-synth (MLP, 50% structured pruning + int8):

(a) LiRA online with per-example variance vs fixed (global) variance vs the default (per-example only from
    ``lira.MIN_PER_SIDE`` references per side) at 4 / 8 / 16 / 32 reference models: AUC and TPR@0.1%FPR;
(b) the kl defense under both threat models against no defense: the loss / mentr / nn attacks' accuracy at
    the attacker's own (shadow-chosen) threshold, the oracle balanced accuracy, AUC and TPR@0.1%FPR, with
    the per-run bootstrap intervals and the mean / sd / t-interval across ``--seeds`` training seeds; the
    adaptive attacker's shadows go through the defense, the non-adaptive attacker's do not;
(c) the spread across training seeds: AUC and TPR@0.1%FPR (and attack accuracy) of the loss attack and LiRA
    online (default and fixed variance) on the dense, the 50%-pruned and the pruned+int8 model, ``--seeds``
    targets against ``--seed-references`` reference models, next to each run's own bootstrap interval.

    .venv/bin/python benchmarks/audit_validity.py [--parts a,b,c] [--data purchase-synth]
        [--references 4,8,16,32] [--seed-references 16] [--seeds 3] [--shadows 4] [--epochs 40]
        [--finetune-epochs 10] [--workdir DIR] [--dump DIR] [--out benchmarks/results/audit_validity_cpu.json]

Parts run in the order c, b, a and share one undefended run (its reference models and other-seed targets
are cached in it: (a)'s first 16 reference models are (c)'s). The JSON is rewritten after every part; parts
not run this time are kept from an existing ``--out`` file with their own command and date (``provenance``).
``--workdir`` keeps the runs (and lets a later call reuse them); ``--dump DIR`` writes, for (b)'s kl run, the
pruned+int8 targets' and shadows' logits for an independent recomputation of the loss attack's figures.
Prints the tables as Markdown.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("EDGEPRUNE_NO_PROGRESS", "1")

VARIANTS = ("dense", "pruned", "pruned+int8")
B_ATTACKS = ["loss", "mentr", "nn"]
C_ATTACKS = ["loss", "lira-online", "lira-online-fixed"]
FIGURES = ("auc", "attack_accuracy", "oracle_balanced_accuracy", "tpr@0.01fpr", "tpr@0.001fpr")
quiet = lambda m: None  # noqa: E731


def _fig(r: dict) -> dict:
    return {"auc": r["auc"], "tpr@0.1%": r["tpr@0.001fpr"], "tpr@1%": r["tpr@0.01fpr"],
            "attack_accuracy": r.get("attack_accuracy"), "note": r.get("note")}


@contextlib.contextmanager
def recording():
    """Every attack's per-seed scores as the audit computes them (``audit._seed_scores``), in call order:
    the audit reports per-seed AUC / TPR / attack accuracy but not the oracle balanced accuracy, and the
    independent check needs the signals the attack saw. A benchmark-only hook; the library is unchanged."""
    from edgeprune.attack import audit as audit_mod

    calls: list[tuple[str, list, list]] = []
    original = audit_mod._seed_scores

    def record(atk, inputs):
        scores = original(atk, inputs)
        calls.append((atk.name, inputs, scores))
        return scores

    audit_mod._seed_scores = record
    try:
        yield calls
    finally:
        audit_mod._seed_scores = original


def _by_cell(audit: dict, calls: list, threats: list[str]) -> dict:
    """(threat, variant, attack) -> (inputs, per-seed scores): the audit evaluates threats, then variants, then
    its attacks in the order of its result dicts."""
    by_threat = audit.get("threats") or {threats[0]: audit["variants"]}
    cells = [(t, v, n) for t in threats for v in by_threat[t] for n in by_threat[t][v]["attacks"]]
    if len(cells) != len(calls) or any(c[2] != k[0] for c, k in zip(cells, calls, strict=True)):
        raise RuntimeError("recorded attack calls do not match the audit's results")
    return {c: (k[1], k[2]) for c, k in zip(cells, calls, strict=True)}


def _is_member(audit: dict):
    import numpy as np

    c = audit["candidates"]  # the audit stores members first, then non-members
    return np.r_[np.ones(c["members"], bool), np.zeros(c["nonmembers"], bool)]


def _cell(res: dict, scores: list, is_member) -> dict:
    """One attack on one variant: every figure with the seed-0 run's bootstrap interval, its value per seed and
    mean / sd / 95% t-interval across seeds; TPR figures with the false positives they rest on."""
    from edgeprune.attack.audit import across_seeds
    from edgeprune.attack.metrics import attack_metrics

    per_seed = dict(res["per_seed"])
    per_seed["oracle_balanced_accuracy"] = [attack_metrics(is_member, s)["oracle_balanced_accuracy"] for s in scores]
    out = {k: {"value": res[k], "ci95_bootstrap": res["ci95"].get(k), "per_seed": per_seed[k],
               "across_seeds": across_seeds(per_seed[k]) if len(scores) > 1 else None} for k in FIGURES}
    out["tpr_resolution"] = {p: {k: d[k] for k in ("fp_budget", "false_positives", "n_neg", "resolved", "text")}
                             for p, d in res["tpr_at_fpr"].items()}
    out["threshold"] = {"value": res["attack_threshold"], "how": res["attack_accuracy_threshold"]}
    out["models"], out["note"] = res["models"], res.get("note")
    return out


def _cells(audit: dict, calls: list, threats: list[str]) -> dict:
    is_member = _is_member(audit)
    cells = _by_cell(audit, calls, threats)
    by_threat = audit.get("threats") or {threats[0]: audit["variants"]}
    return {t: {v: {n: _cell(by_threat[t][v]["attacks"][n], cells[(t, v, n)][1], is_member)
                    for n in by_threat[t][v]["attacks"]} for v in by_threat[t]} for t in threats}


def part_c(api, run, args) -> dict:
    """Across training seeds, undefended run: loss and LiRA online (default and fixed variance)."""
    t0 = time.perf_counter()
    with recording() as calls:
        audit = api.audit_run(run, C_ATTACKS, 0, args.seed_references, seeds=args.seeds, log=quiet)
    cells = _cells(audit, calls, ["adaptive"])["adaptive"]
    return {"seeds": args.seeds, "training_seeds": audit["seeds"]["training_seeds"],
            "references": audit["references"]["used"], "candidates": audit["candidates"],
            "seconds": round(time.perf_counter() - t0, 1), "variants": cells,
            "vs_dense": {v: audit["variants"][v].get("vs_dense") for v in VARIANTS if v != "dense"},
            "test_accuracy": {v: audit["variants"][v]["test_accuracy"] for v in VARIANTS},
            "train_accuracy": {v: audit["variants"][v]["train_accuracy"] for v in VARIANTS}}


def part_b(api, run, kl_run, args) -> dict:
    """The kl defense under both threat models against the undefended run, each with --seeds targets."""
    from edgeprune.attack.audit import paired

    t0 = time.perf_counter()
    with recording() as calls:
        undefended = api.audit_run(run, B_ATTACKS, args.shadows, 0, threat="adaptive", seeds=args.seeds, log=quiet)
    und = _cells(undefended, calls, ["adaptive"])["adaptive"]
    with recording() as calls:
        kl = api.audit_run(kl_run, B_ATTACKS, args.shadows, 0, threat="both", seeds=args.seeds, log=quiet)
    threats = ["adaptive", "non-adaptive"]
    kl_cells = _cells(kl, calls, threats)
    if args.dump:
        _dump(Path(args.dump), kl, _by_cell(kl, calls, threats))
    vs_undefended = {t: {v: {n: {k: paired(kl_cells[t][v][n][k]["per_seed"], und[v][n][k]["per_seed"])
                                 for k in ("auc", "attack_accuracy", "oracle_balanced_accuracy", "tpr@0.001fpr")}
                             for n in B_ATTACKS} for v in VARIANTS} for t in threats}
    return {"defense": "kl", "strength": "default (lambda 4.0), scope finetune: the dense model is undefended",
            "shadows": args.shadows, "seeds": args.seeds, "training_seeds": kl["seeds"]["training_seeds"],
            "candidates": kl["candidates"], "seconds": round(time.perf_counter() - t0, 1),
            "undefended": und, "kl": kl_cells, "kl_threat_comparison": kl["threat_comparison"],
            "kl_vs_undefended": vs_undefended,
            "test_accuracy": {"undefended": {v: undefended["variants"][v]["test_accuracy"] for v in VARIANTS},
                              "kl": {v: kl["variants"][v]["test_accuracy"] for v in VARIANTS}},
            "train_accuracy": {"undefended": {v: undefended["variants"][v]["train_accuracy"] for v in VARIANTS},
                               "kl": {v: kl["variants"][v]["train_accuracy"] for v in VARIANTS}}}


def _dump(folder: Path, audit: dict, cells: dict) -> None:
    """The kl run's pruned+int8 loss-attack inputs: every seed's target logits and, per threat, the shadows'
    logits and membership, for a recomputation that shares no metric code with edgeprune."""
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    for threat in ("adaptive", "non-adaptive"):
        inputs, _ = cells[(threat, "pruned+int8", "loss")]
        np.savez_compressed(
            folder / f"kl_pruned+int8_loss_{threat}.npz",
            is_member=_is_member(audit),
            target_logits=np.stack([i.target.logits for i in inputs]),
            target_labels=inputs[0].target.labels,
            shadow_logits=np.stack([s.target.logits for s in inputs[0].shadows]),
            shadow_labels=np.stack([s.target.labels for s in inputs[0].shadows]),
            shadow_is_in=np.stack([s.is_in for s in inputs[0].shadows]))


def part_a(api, run, args) -> dict:
    """LiRA online per-example (forced) vs fixed vs the default rule at each reference count."""
    from edgeprune.attack import lira

    refs = [int(r) for r in args.references.split(",")]
    default_min = lira.MIN_PER_SIDE
    rows = []
    for r in sorted(refs, reverse=True):  # the largest first: it trains every reference model
        t0 = time.perf_counter()
        row = {"references": r, "per_side": r // 2}
        for label, min_per_side in (("per-example", 0), ("default", default_min)):
            lira.MIN_PER_SIDE = min_per_side
            try:
                audit = api.audit_run(run, ["lira-online", "lira-online-fixed"], 0, r, log=quiet)
            finally:
                lira.MIN_PER_SIDE = default_min
            for v in VARIANTS:
                row.setdefault(v, {})[label] = _fig(audit["variants"][v]["attacks"]["lira-online"])
                row[v]["fixed"] = _fig(audit["variants"][v]["attacks"]["lira-online-fixed"])
        row["seconds"] = round(time.perf_counter() - t0, 1)
        row["n_nonmembers"] = audit["candidates"]["nonmembers"]
        rows.append(row)
        print(f"(a) {r} references done ({row['seconds']}s)", file=sys.stderr)
    return {"lira_min_per_side": default_min, "rows": sorted(rows, key=lambda x: x["references"])}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", default="a,b,c", help="which measurements to run (comma-separated: a, b, c)")
    ap.add_argument("--data", default="purchase-synth")
    ap.add_argument("--references", default="4,8,16,32", help="(a): reference-model counts")
    ap.add_argument("--seed-references", type=int, default=16, help="(c): reference models behind LiRA")
    ap.add_argument("--seeds", type=int, default=3, help="(b), (c): trained targets")
    ap.add_argument("--shadows", type=int, default=4, help="(b): shadow models per threat model")
    ap.add_argument("--epochs", type=int, default=40, help="training epochs of the target and every attacker model")
    ap.add_argument("--finetune-epochs", type=int, default=10)
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--workdir", default=None, help="keep the runs here (reused when they exist); default: temporary")
    ap.add_argument("--dump", default=None, help="(b): write the kl run's loss-attack signals here")
    ap.add_argument("--out", default="benchmarks/results/audit_validity_cpu.json")
    args = ap.parse_args()
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if not parts or set(parts) - {"a", "b", "c"}:
        ap.error(f"--parts takes a comma-separated subset of a, b, c, got {args.parts!r}")

    from edgeprune import api
    from edgeprune.recipe import Recipe, from_dict

    base = Recipe(model="mlp", data=args.data)
    base.train.epochs, base.finetune.epochs = args.epochs, args.finetune_epochs
    base.audit.attacks = ["loss"]
    base.audit.bootstrap = args.bootstrap
    base.bench.batches, base.bench.duration_s, base.bench.warmup_s = [1], 0.1, 0.0
    settings = {"data": args.data, "model": "mlp", "sparsity": base.prune.sparsity, "quant": base.quant.mode,
                "epochs": args.epochs, "finetune_epochs": args.finetune_epochs, "bootstrap": args.bootstrap}
    out = Path(args.out)
    doc = json.loads(out.read_text()) if out.is_file() else {}
    doc.update({"benchmark": "audit_validity", "machine": api.machine()})
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp())
    work.mkdir(parents=True, exist_ok=True)
    key = {"c": "seeds", "b": "kl_threats", "a": "lira_references"}
    try:
        run = api.compress(base, work / "run", resume=True, log=quiet)
        for part in [p for p in ("c", "b", "a") if p in parts]:
            t0 = time.perf_counter()
            if part == "c":
                res = part_c(api, run, args)
            elif part == "b":
                kl = from_dict(Recipe, base.to_dict())
                kl.defense.name = "kl"
                res = part_b(api, run, api.compress(kl, work / "kl", resume=True, log=quiet), args)
            else:
                res = part_a(api, run, args)
            res["provenance"] = {"command": " ".join(sys.argv), "settings": settings,
                                 "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
                                 "wall_s": round(time.perf_counter() - t0, 1)}
            doc[key[part]] = res
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(doc, indent=2) + "\n")  # after every part: a later failure keeps it
            print(f"({part}) done in {res['provenance']['wall_s']}s; wrote {out}", file=sys.stderr)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    print(markdown(doc))
    return 0


def _num(v, digits: int = 3) -> str:
    return "below res." if v is None else f"{v:.{digits}f}"


def _ci(c) -> str:
    return "" if not c else f" [{c[0]:.3f}, {c[1]:.3f}]"


def _seedstat(f: dict) -> str:
    s = f.get("across_seeds")
    if not s or s["mean"] is None or s["sd"] is None:
        return "-"
    return f"{s['mean']:.3f} ± {s['sd']:.3f}{_ci(s['ci95'])}"


def _tpr(cell: dict, key: str = "tpr@0.001fpr", p: str = "0.001") -> str:
    f, r = cell[key], cell["tpr_resolution"][p]
    if f["value"] is None:
        return f"{r['text']}"
    return f"{f['value']:.3f}{_ci(f['ci95_bootstrap'])} (fp {r['false_positives']}/{r['fp_budget']})"


def _val(f: dict) -> str:
    return f"{_num(f['value'])}{_ci(f['ci95_bootstrap'])}"


def _table(title: str, headers: list[str], rows: list[list[str]]) -> list[str]:
    return [title, "", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers),
            *["| " + " | ".join(r) + " |" for r in rows], ""]


def markdown(doc: dict) -> str:
    lines: list[str] = []
    if "kl_threats" in doc:
        b = doc["kl_threats"]
        rows = []
        for v in ("pruned", "pruned+int8", "dense"):
            for n in B_ATTACKS:
                for who, c in [("none", b["undefended"][v][n])] + [(f"kl, {t}", b["kl"][t][v][n])
                                                                   for t in ("adaptive", "non-adaptive")]:
                    rows.append([v, n, who, _val(c["attack_accuracy"]), _seedstat(c["attack_accuracy"]),
                                 _val(c["oracle_balanced_accuracy"]), _val(c["auc"]), _seedstat(c["auc"]), _tpr(c)])
        lines += _table(f"(b) kl vs no defense, {b['shadows']} shadows per threat model, {b['seeds']} training seeds; "
                        "seed-0 value [bootstrap 95% CI]; mean ± sd [t-interval] across seeds",
                        ["variant", "attack", "attacker", "attack acc. (shadow thr.)", "across seeds",
                         "oracle bal. acc.", "AUC", "AUC across seeds", "TPR@0.1%FPR"], rows)
    if "seeds" in doc:
        s = doc["seeds"]
        rows = [[v, n, _val(c["auc"]), _seedstat(c["auc"]), _tpr(c), _seedstat(c["tpr@0.001fpr"]),
                 _seedstat(c["attack_accuracy"])] for v in VARIANTS for n, c in s["variants"][v].items()]
        lines += _table(f"(c) across {s['seeds']} training seeds ({s['references']} reference models): seed-0 value "
                        "[bootstrap 95% CI]; mean ± sd [t-interval]",
                        ["variant", "attack", "AUC (seed 0)", "AUC across seeds", "TPR@0.1% (seed 0)",
                         "TPR@0.1% across seeds", "attack acc. across seeds"], rows)
    if "lira_references" in doc and "rows" in doc["lira_references"]:
        rows = [[f"{row['references']} ({row['per_side']})", v,
                 *[f"{row[v][k]['auc']:.3f} / {_num(row[v][k]['tpr@0.1%'])}" for k in ("per-example", "fixed", "default")],
                 row[v]["default"]["note"] or ""] for row in doc["lira_references"]["rows"] for v in ("dense", "pruned+int8")]
        lines += _table("(a) LiRA online AUC / TPR@0.1%FPR",
                        ["refs (per side)", "variant", "per-example", "fixed", "default", "default uses"], rows)
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
