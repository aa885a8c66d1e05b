"""Independent check of paper_claims.py: recompute the threshold attacks' figures from the saved signals with
numpy and scikit-learn only (no edgeprune code), and compare them with what the audit reported.

paper_claims.py --keep-signals DIR writes DIR/seed<S>/manifest.json naming the cached logits of the plain
run's target (dense, pruned, pruned+int8 on the audit candidates) and of its shadow models (each variant,
on their own IN / OUT samples). From those alone this script recomputes, per variant, for the loss and
confidence attacks: AUC (sklearn.metrics.roc_auc_score), the oracle balanced accuracy (best point of
sklearn.metrics.roc_curve), the attack accuracy at the threshold that maximises balanced accuracy on the
shadows, the TPR at that threshold and TPR@1%FPR; then the int8 - fp32 differences that the Famili & Lao
claim rests on.

    .venv/bin/python benchmarks/check_paper_claims.py --signals DIR/seed0 --results RESULT.json \
        [--out benchmarks/results/paper_claims_check_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

ATTACKS = ("loss", "confidence")
KEYS = ("auc", "oracle_balanced_accuracy", "attack_accuracy", "tpr@0.01fpr")


def load_logits(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return z["logits"].astype(np.float64), z["labels"].astype(np.int64)


def score(attack: str, logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Higher = member. loss: log p(true class) (minus the cross-entropy); confidence: p(true class)."""
    m = logits.max(1, keepdims=True)
    logp = logits - (m + np.log(np.exp(logits - m).sum(1, keepdims=True)))
    lp = logp[np.arange(len(labels)), labels]
    return lp if attack == "loss" else np.exp(lp)


def shadow_threshold(scores: np.ndarray, is_in: np.ndarray) -> float:
    """The threshold (member if score >= it) with the best balanced accuracy on the shadows' IN / OUT samples,
    among the operating points roc_curve lists (every distinct score)."""
    fpr, tpr, thr = roc_curve(is_in, scores, drop_intermediate=False)
    return float(thr[int(np.argmax(tpr - fpr))])


def figures(is_member: np.ndarray, scores: np.ndarray, threshold: float) -> dict:
    fpr, tpr, _ = roc_curve(is_member, scores, drop_intermediate=False)
    n_neg = int((~is_member).sum())
    fp = np.rint(fpr * n_neg)
    pred = scores >= threshold
    tpr_thr, tnr_thr = pred[is_member].mean(), (~pred[~is_member]).mean()
    return {"auc": float(roc_auc_score(is_member, scores)),
            "oracle_balanced_accuracy": float(((tpr + 1 - fpr) / 2).max()),
            "attack_accuracy": float((tpr_thr + tnr_thr) / 2),
            "tpr_at_attack_threshold": float(tpr_thr),
            "tpr@0.01fpr": float(tpr[fp <= np.floor(0.01 * n_neg + 1e-9)].max()),
            "threshold": threshold}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--signals", required=True, help="DIR/seed<S> written by paper_claims.py --keep-signals")
    ap.add_argument("--results", required=True, help="paper_claims result JSON holding that seed's plain run")
    ap.add_argument("--out", default="benchmarks/results/paper_claims_check_cpu.json")
    args = ap.parse_args()
    root = Path(args.signals)
    man = json.loads((root / "manifest.json").read_text())
    res = json.loads(Path(args.results).read_text())
    run = next(r for r in res["runs"]["plain"] if r["seed"] == man["seed"])
    is_member = np.asarray(man["is_member"], bool)
    ours: dict = {}
    worst = 0.0
    for v in man["variants"]:
        logits, labels = load_logits(root / man["targets"][v])
        assert len(labels) == is_member.size
        shadows = [(load_logits(root / s["signals"][v]), np.asarray(s["is_in"], bool)) for s in man["shadows"]]
        ours[v] = {"test_accuracy": float((logits.argmax(1) == labels)[~is_member].mean())}
        worst = max(worst, abs(ours[v]["test_accuracy"] - run["variants"][v]["test_accuracy"]))
        for attack in ATTACKS:
            sh_scores = np.concatenate([score(attack, lg, lb) for (lg, lb), _ in shadows])
            sh_in = np.concatenate([i for _, i in shadows])
            f = figures(is_member, score(attack, logits, labels), shadow_threshold(sh_scores, sh_in))
            reported = run["variants"][v]["attacks"][attack]
            f["reported"] = {k: reported.get(k) for k in KEYS}
            f["abs_difference"] = {k: (abs(f[k] - reported[k]) if reported.get(k) is not None else None) for k in KEYS}
            worst = max([worst] + [d for d in f["abs_difference"].values() if d is not None])
            ours[v][attack] = f
    claim = {}
    for attack in ATTACKS:
        a, b = ours["pruned+int8"][attack], ours["pruned"][attack]
        claim[attack] = {k: {"recomputed": a[k] - b[k],
                             "reported": (a["reported"][k] - b["reported"][k])
                             if k in KEYS and None not in (a["reported"][k], b["reported"][k]) else None}
                         for k in ("attack_accuracy", "tpr@0.01fpr", "auc", "tpr_at_attack_threshold")}
    doc = {"check": "paper_claims independent recomputation (numpy + scikit-learn only)", "seed": man["seed"],
           "run": man["run"], "results_file": args.results, "n_candidates": int(is_member.size),
           "n_shadows": len(man["shadows"]), "variants": ours, "int8_minus_fp32": claim,
           "max_abs_difference": worst, "agree": worst < 1e-9}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2))
    for v in man["variants"]:
        for attack in ATTACKS:
            f = ours[v][attack]
            print(f"{v:12s} {attack:10s} " + "  ".join(
                f"{k} {f[k]:.4f} (reported {f['reported'][k] if f['reported'][k] is None else round(f['reported'][k], 4)})"
                for k in KEYS) + f"  TPR at the attacker's threshold {f['tpr_at_attack_threshold']:.4f}")
    for attack, c in claim.items():
        print(f"int8 - fp32, {attack}: " + ", ".join(
            f"{k} {d['recomputed']:+.4f}" + (f" (reported {d['reported']:+.4f})" if d["reported"] is not None else "")
            for k, d in c.items()))
    print(f"largest |recomputed - reported| = {worst:.2e}: {'AGREE' if doc['agree'] else 'DISAGREE'}; wrote {out}")
    return 0 if doc["agree"] else 1


if __name__ == "__main__":
    sys.exit(main())
