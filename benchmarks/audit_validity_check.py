"""Independent recomputation of audit_validity.py part (b)'s loss-attack figures, with numpy and scikit-learn
only (no edgeprune code): from the logits ``audit_validity.py --dump DIR`` saved for the kl run's pruned+int8
model (every training seed's target, and each threat model's shadows), recompute per seed the loss attack's
AUC, the attacker's threshold (best balanced accuracy on the shadows), the attack accuracy at it, the oracle
balanced accuracy and TPR@0.1%FPR, and compare them with the results JSON.

With ``--run KL_RUN`` (the kl run kept by ``audit_validity.py --workdir``) it also rebuilds the data (scikit-learn's
make_classification with purchase-synth's parameters, per-feature standardisation) and the member / non-member
split by hand, checks both against the run's manifest (data fingerprint, split hash), scores the run's exported
fp32 models (dense and pruned ONNX) with onnxruntime, and compares the seed-0 loss attack's AUC, oracle balanced
accuracy and TPR@0.1% with the JSON; it also reports how far onnxruntime's int8 logits on this CPU are from the
audited ones (reference QDQ numerics, so not expected to match exactly: informational).

    .venv/bin/python benchmarks/audit_validity_check.py DIR [--run KL_RUN] [--json benchmarks/results/audit_validity_cpu.json]

Prints one line per figure and exits 1 if any differs by more than 1e-9.
"""

from __future__ import annotations

import argparse
import hashlib
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
    ap.add_argument("--run", default=None, help="the kept kl run: recompute the fp32 targets' signals from its ONNX files")
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
                d = _diff(v, theirs)
                worst = max(worst, d)
                lines.append(f"{threat:>12} seed {k} {name:>24}: {_f(v)} vs {_f(theirs)}  |diff| {d:.1e}")
    if args.run:
        worst = max(worst, from_models(Path(args.run), doc, lines, Path(args.dump)))
    print("\n".join(lines))
    compared = sum("  |diff|" in line or "threshold:" in line for line in lines)
    print(f"largest difference: {worst:.2e} over {compared} figures (thresholds included)")
    return 0 if worst <= 1e-9 else 1


def from_models(run: Path, doc: dict, lines: list[str], dump: Path) -> float:
    """The seed-0 loss figures of the dense and pruned (fp32) variants from the run's ONNX files; returns the
    largest difference to the JSON."""
    import onnxruntime as ort
    from sklearn.datasets import make_classification

    manifest = json.loads((run / "manifest.json").read_text())
    n = manifest["data"]["samples"]
    x, y = make_classification(n_samples=n, n_features=600, n_informative=50, n_redundant=0, n_classes=100,
                               n_clusters_per_class=1, class_sep=3.0, random_state=0)
    x = x.astype(np.float32)
    x = ((x - x.mean(0, keepdims=True)) / (x.std(0, keepdims=True) + 1e-6)).astype(np.float32)
    y = y.astype(np.int64)
    fp = hashlib.sha256(np.ascontiguousarray(x).tobytes() + np.ascontiguousarray(y).tobytes()).hexdigest()
    seed = manifest["recipe"]["seed"]
    order = np.random.default_rng(seed).permutation(n)
    k = int(n * manifest["recipe"]["split"]["member_fraction"])
    parts = [np.sort(order[:k]), np.sort(order[k : 2 * k]), np.sort(order[2 * k :])]
    h = hashlib.sha256(fp.encode())
    for part in parts:
        h.update(np.ascontiguousarray(part, dtype=np.int64).tobytes())
    lines.append(f"data fingerprint {'matches' if fp == manifest['data']['fingerprint'] else 'DIFFERS'}; "
                 f"split hash {'matches' if h.hexdigest() == manifest['split']['hash'] else 'DIFFERS'}")
    worst = 0.0 if fp == manifest["data"]["fingerprint"] and h.hexdigest() == manifest["split"]["hash"] else np.inf
    cand = np.concatenate(parts[:2])  # every member and non-member: 5,000 each is within the audit's max_samples
    is_member = np.r_[np.ones(k, bool), np.zeros(k, bool)]
    logits = {}
    for variant, rel in (("dense", "dense/model.onnx"), ("pruned", "model.onnx"), ("pruned+int8", "model.int8.onnx")):
        sess = ort.InferenceSession(str(run / rel), providers=["CPUExecutionProvider"])
        logits[variant] = sess.run(None, {sess.get_inputs()[0].name: x[cand]})[0].astype(np.float64)
    for variant in ("dense", "pruned"):
        cell = doc["kl"]["adaptive"][variant]["loss"]
        mine = figures(is_member, loss_score(logits[variant], y[cand]), np.inf)
        for name in ("auc", "oracle_balanced_accuracy", "tpr@0.001fpr"):
            theirs = cell[name]["per_seed"][0]
            d = _diff(mine[name], theirs)
            worst = max(worst, d)
            lines.append(f"  onnx {variant:>6} seed 0 {name:>24}: {_f(mine[name])} vs {_f(theirs)}  |diff| {d:.1e}")
    audited = np.load(dump / "kl_pruned+int8_loss_adaptive.npz")["target_logits"][0]
    auc_ort = roc_auc_score(is_member, loss_score(logits["pruned+int8"], y[cand]))
    lines.append(f"  (informational) onnxruntime int8 on this CPU vs the audited reference-QDQ logits: max |diff| "
                 f"{np.abs(logits['pruned+int8'] - audited).max():.2e}, loss AUC {auc_ort:.6f} vs "
                 f"{doc['kl']['adaptive']['pruned+int8']['loss']['auc']['per_seed'][0]:.6f}")
    return worst


def _diff(a: float | None, b: float | None) -> float:
    """|a - b|; a figure below resolution (None) agrees only with another one."""
    if a is None or b is None:
        return 0.0 if a is b else float("inf")
    return abs(a - b)


def _f(v) -> str:
    return "below res." if v is None else f"{v:.10f}"


if __name__ == "__main__":
    sys.exit(main())
