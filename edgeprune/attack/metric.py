"""Metric attacks, with a global score and with class-wise thresholds calibrated on shadow models."""

from __future__ import annotations

import numpy as np

from edgeprune.attack.base import AttackInputs, register
from edgeprune.attack.signals import Signals


def loss_score(s: Signals) -> np.ndarray:
    return -s.loss


def confidence_score(s: Signals) -> np.ndarray:
    return s.true_prob


def top1_score(s: Signals) -> np.ndarray:
    return s.probs.max(1)


def entropy_score(s: Signals) -> np.ndarray:
    p = np.clip(s.probs, 1e-30, 1.0)
    return (p * np.log(p)).sum(1)


def mentr_score(s: Signals) -> np.ndarray:
    """Song & Mittal's modified entropy (negated so that higher = member)."""
    p = np.clip(s.probs, 1e-30, 1 - 1e-16)
    n = np.arange(len(s.labels))
    py = p[n, s.labels]
    terms = -p * np.log(1 - p)
    terms[n, s.labels] = 0.0
    return -(-(1 - py) * np.log(py) + terms.sum(1))


METRICS = {
    "loss": (loss_score, "Yeom et al.: members have lower loss"),
    "confidence": (confidence_score, "ground-truth-class confidence"),
    "top1": (top1_score, "highest softmax probability (label-free)"),
    "entropy": (entropy_score, "prediction entropy (label-free)"),
    "mentr": (mentr_score, "modified entropy (Song & Mittal '21)"),
}


def best_threshold(scores: np.ndarray, is_in: np.ndarray) -> float:
    """The threshold on ``scores`` (member if >=) with the best balanced accuracy."""
    if is_in.all() or (~is_in).all():
        return float(np.median(scores))
    order = np.argsort(-scores, kind="stable")
    s, lab = scores[order], is_in[order]
    tpr = np.cumsum(lab) / lab.sum()
    fpr = np.cumsum(~lab) / (~lab).sum()
    i = int(np.argmax(tpr - fpr))
    return float(s[i])


def classwise(score_fn):
    """Subtract a per-class threshold learned on the shadows (Song & Mittal): scores become comparable."""

    def attack(inp: AttackInputs) -> np.ndarray:
        sh_scores = np.concatenate([score_fn(s.target) for s in inp.shadows])
        sh_labels = np.concatenate([s.target.labels for s in inp.shadows])
        sh_in = np.concatenate([s.is_in for s in inp.shadows])
        glob = best_threshold(sh_scores, sh_in)
        scores = score_fn(inp.target)
        out = scores - glob
        for c in np.unique(inp.target.labels):
            sel = sh_labels == c
            t = best_threshold(sh_scores[sel], sh_in[sel]) if sel.sum() >= 4 else glob
            tgt = inp.target.labels == c
            out[tgt] = scores[tgt] - t
        return out

    return attack


for _name, (_fn, _doc) in METRICS.items():
    register(_name, doc=_doc)(lambda inp, fn=_fn: fn(inp.target))
    register(f"{_name}-classwise", needs=("shadows",), doc=f"{_doc}; per-class thresholds from shadows", threshold=0.0)(
        classwise(_fn)
    )
