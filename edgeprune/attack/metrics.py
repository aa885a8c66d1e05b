"""Attack metrics from scikit-learn's ROC: AUC, best balanced accuracy, TPR at low FPR."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

FPR_POINTS = (0.01, 0.001)


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, target: float) -> float:
    """The highest TPR reached at a false-positive rate no greater than ``target``."""
    ok = fpr <= target + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


def attack_metrics(is_member: np.ndarray, scores: np.ndarray) -> dict:
    y = np.asarray(is_member, dtype=int)
    fpr, tpr, _ = roc_curve(y, scores)
    out = {
        "auc": float(roc_auc_score(y, scores)),
        "balanced_accuracy": float(((tpr + 1.0 - fpr) / 2.0).max()),
    }
    for p in FPR_POINTS:
        out[f"tpr@{p:g}fpr"] = tpr_at_fpr(fpr, tpr, p)
    return out
