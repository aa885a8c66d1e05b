"""Independent recomputation of audit_validity.py part (b)'s loss-attack figures, with numpy and scikit-learn
only (no edgeprune code): from the logits ``audit_validity.py --dump DIR`` saved for the kl run's pruned+int8
model (every training seed's target, and each threat model's shadows), recompute per seed the loss attack's
AUC, the attacker's threshold (best balanced accuracy on the shadows), the attack accuracy at it, the oracle
balanced accuracy and TPR@0.1%FPR, and compare them with the results JSON.

    .venv/bin/python benchmarks/audit_validity_check.py DIR [--json benchmarks/results/audit_validity_cpu.json]

Prints one line per figure and exits 1 if any differs by more than 1e-9.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import balanced_accuracy_score, roc_auc_score, roc_curve


def loss_score(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Minus the cross-entropy of the true class (higher = member), in float64."""
    z = logits.astype(np.float64)
    z = z - z.max(1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(1))
    return z[np.arange(len(labels)), labels] - log_norm


def shadow_threshold(scores: np.ndarray, is_in: np.ndarray) -> float:
    """The threshold (member if score >= it) with the best balanced accuracy on the shadows: scikit-learn's ROC
    thresholds, the best of tpr - fpr."""
    fpr, tpr, thr = roc_curve(is_in.astype(int), scores, drop_intermediate=False)
    return float(thr[int(np.argmax(tpr - fpr))])


def figures(is_member: np.ndarray, scores: np.ndarray, thr: float) -> dict:
    fpr, tpr, _ = roc_curve(is_member.astype(int), scores, drop_intermediate=False)
    n_neg = int((~is_member).sum())
    budget = int(np.floor(0.001 * n_neg + 1e-9))
    return {"auc": float(roc_auc_score(is_member.astype(int), scores)),
            "attack_accuracy": float(balanced_accuracy_score(is_member, scores >= thr)),
            "oracle_balanced_accuracy": float(((tpr + 1 - fpr) / 2).max()),
            "tpr@0.001fpr": float(tpr[np.round(fpr * n_neg) <= budget].max()) if budget >= 5 else None}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("dump")
    ap.add_argument("--json", default="benchmarks/results/audit_validity_cpu.json")
    args = ap.parse_args()
    doc = json.loads(Path(args.json).read_text())["kl_threats"]
    worst, lines = 0.0, []
    for threat in ("adaptive", "non-adaptive"):
        z = np.load(Path(args.dump) / f"kl_pruned+int8_loss_{threat}.npz", allow_pickle=False)
        sh = np.concatenate([loss_score(lg, lb) for lg, lb in zip(z["shadow_logits"], z["shadow_labels"], strict=True)])
        thr = shadow_threshold(sh, z["shadow_is_in"].ravel())
        cell = doc["kl"][threat]["pruned+int8"]["loss"]
        diff = abs(thr - cell["threshold"]["value"])
        lines.append(f"{threat:>12} threshold: {thr:.10f} vs {cell['threshold']['value']:.10f}")
        worst = max(worst, diff)
        for k, logits in enumerate(z["target_logits"]):
            mine = figures(z["is_member"], loss_score(logits, z["target_labels"]), thr)
            for name, v in mine.items():
                theirs = cell[name]["per_seed"][k]
                d = 0.0 if v is None and theirs is None else abs(v - theirs) if None not in (v, theirs) else np.inf
                worst = max(worst, d)
                lines.append(f"{threat:>12} seed {k} {name:>24}: {_f(v)} vs {_f(theirs)}  |diff| {d:.1e}")
    print("\n".join(lines))
    print(f"largest difference: {worst:.2e} over {len(lines)} figures")
    return 0 if worst <= 1e-9 else 1


def _f(v) -> str:
    return "below res." if v is None else f"{v:.10f}"


if __name__ == "__main__":
    sys.exit(main())
