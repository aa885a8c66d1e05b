"""Independent check of privacy_tradeoff.py: recompute the LiRA (online, fixed variance) and loss-attack figures
from the saved signals with numpy and scikit-learn only (no edgeprune code), and compare them with what the
audit reported.

privacy_tradeoff.py --keep-signals DIR writes, per configuration and seed, a manifest.json naming the cached
logits (.npz: `logits` (N, K), `labels` (N,)) of the target (each variant) and of R reference models on the N
audit candidates, with is_member (target) and is_in (each reference). From those alone this script computes,
per variant, phi = log(p_y / (1 - p_y)) = z_y - logsumexp_{j != y} z_j and:
  * "audit" LiRA-online-fixed, as the audit documents it: per-candidate MEAN of the IN / OUT reference phi,
    one pooled variance per side (sum of squared deviations / (pairs - candidates with >= 1 observation)),
    std = sqrt(max(var, 1e-6)), score = log N(phi; mu_in, std_in) - log N(phi; mu_out, std_out);
  * "carlini" LiRA as in Carlini et al.'s released code (tensorflow/privacy research/mi_lira_2021/plot.py,
    generate_ours with fix_variance=True): per-candidate MEDIAN, np.std over all IN observations used for both
    sides (see carlini_scores);
  * AUC (sklearn roc_auc_score), TPR@0.1% / 1% FPR (None when floor(p * n_nonmembers) < 5; else the threshold
    is the (budget+1)-th largest non-member score and TPR = share of members strictly above it), the loss
    attack's AUC (score log p_y), and the target's accuracy on the non-member candidates.
The audit figures are compared with --results for the same config / seed / variant; exit status 1 when any
differs by more than 1e-6 (or a figure cannot be matched).

    .venv/bin/python benchmarks/check_privacy_tradeoff.py --signals DIR --results RESULT.json \
        [--out benchmarks/results/privacy_tradeoff_check_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

FPRS = (0.001, 0.01)
KEYS = ("auc", "tpr@0.001fpr", "tpr@0.01fpr", "loss_auc")
TOL = 1e-6


def load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return z["logits"].astype(np.float64), z["labels"].astype(np.int64)


def lse(x: np.ndarray) -> np.ndarray:
    m = x.max(1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    return (m + np.log(np.exp(x - m).sum(1, keepdims=True)))[:, 0]


def phi_and_logp(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """phi = z_y - logsumexp_{j!=y} z_j (stable logit-scaled confidence); log p_y = z_y - logsumexp_j z_j."""
    rows = np.arange(len(labels))
    zy = logits[rows, labels]
    others = logits.copy()
    others[rows, labels] = -np.inf
    return zy - lse(others), zy - lse(logits)


def gauss_llr(x, mu_in, sd_in, mu_out, sd_out) -> np.ndarray:
    return (-np.log(sd_in) - 0.5 * ((x - mu_in) / sd_in) ** 2) - (-np.log(sd_out) - 0.5 * ((x - mu_out) / sd_out) ** 2)


def audit_scores(ref_phi: np.ndarray, is_in: np.ndarray, target_phi: np.ndarray) -> np.ndarray:
    """ref_phi, is_in: (R, N). Per-candidate means; one pooled variance per side with (pairs - groups) dof."""
    side = {}
    for name, mask in (("in", is_in), ("out", ~is_in)):
        cnt = mask.sum(0)
        if (cnt == 0).any():
            raise ValueError(f"{int((cnt == 0).sum())} candidates have no {name.upper()} reference: mu undefined")
        mu = np.where(mask, ref_phi, 0.0).sum(0) / cnt
        ss = float((np.where(mask, ref_phi - mu, 0.0) ** 2).sum())
        dof = int(cnt.sum()) - int((cnt > 0).sum())
        var = ss / dof if dof > 0 else 0.0
        side[name] = (mu, np.sqrt(max(var, 1e-6)))
    return gauss_llr(target_phi, *side["in"], *side["out"])


def carlini_scores(ref_phi: np.ndarray, is_in: np.ndarray, target_phi: np.ndarray) -> np.ndarray:
    """Faithful to generate_ours(fix_variance=True) in mi_lira_2021/plot.py: each candidate's IN (OUT) list is
    truncated to the smallest IN (OUT) count over candidates (first ones in reference order), centre = np.median,
    std_in = std_out = np.std(dat_in) (ddof 0, over ALL IN observations: the released code uses the IN
    observations for BOTH sides in the fixed-variance branch), plus 1e-30; score = logpdf_in - logpdf_out
    (the released code negates both and sorts by -score, which is the same ordering)."""
    dat = {}
    for name, mask in (("in", is_in), ("out", ~is_in)):
        size = int(mask.sum(0).min())
        if size == 0:
            raise ValueError(f"a candidate has no {name.upper()} reference")
        dat[name] = np.stack([ref_phi[mask[:, j], j][:size] for j in range(ref_phi.shape[1])])
    sd = float(np.std(dat["in"])) + 1e-30
    return gauss_llr(target_phi, np.median(dat["in"], 1), sd, np.median(dat["out"], 1), sd)


def tpr_at(scores: np.ndarray, member: np.ndarray, p: float) -> float | None:
    neg = np.sort(scores[~member])[::-1]
    budget = int(np.floor(p * len(neg) + 1e-9))
    if budget < 5:
        return None  # below resolution
    return float((scores[member] > neg[budget]).mean())


def metrics(scores: np.ndarray, member: np.ndarray) -> dict:
    out = {"auc": float(roc_auc_score(member, scores))}
    out.update({f"tpr@{p}fpr": tpr_at(scores, member, p) for p in FPRS})
    return out


def diff(a, b) -> float:
    if a is None and b is None:
        return 0.0
    if a is None or b is None:
        return float("inf")
    return abs(float(a) - float(b))


def check_manifest(path: Path, reported: dict) -> dict:
    man = json.loads(path.read_text())
    root = path.parent
    member = np.asarray(man["is_member"], dtype=bool)
    is_in = np.asarray([r["is_in"] for r in man["references"]], dtype=bool)
    runs = [r for r in reported.get(man["config"], {}).get("runs", []) if r.get("seed") == man["seed"]]
    run = runs[0] if runs else None
    res = {"manifest": str(path), "config": man["config"], "seed": man["seed"], "references": len(is_in),
           "members": int(member.sum()), "nonmembers": int((~member).sum()),
           "deployed": run.get("deployed") if run else None, "variants": {}}
    if run is None:
        res["error"] = "no reported run for this config / seed"
    for v in man["variants"]:
        logits, labels = load(root / man["targets"][v])
        t_phi, t_logp = phi_and_logp(logits, labels)
        refs = [load(root / r["signals"][v]) for r in man["references"]]
        ref_phi = np.stack([phi_and_logp(lg, lb)[0] for lg, lb in refs])
        row = {"nonmember_accuracy": float((logits.argmax(1) == labels)[~member].mean())}
        try:
            row["audit"] = metrics(audit_scores(ref_phi, is_in, t_phi), member)
            row["audit"]["loss_auc"] = float(roc_auc_score(member, t_logp))
            row["carlini"] = metrics(carlini_scores(ref_phi, is_in, t_phi), member)
        except ValueError as e:
            row["error"] = str(e)
        rv = (run or {}).get("variants", {}).get(v)
        if rv is not None and "audit" in row:
            lira, loss = rv["attacks"]["lira-online-fixed"], rv["attacks"]["loss"]
            row["reported"] = {"auc": lira["auc"], "tpr@0.001fpr": lira.get("tpr@0.001fpr"),
                               "tpr@0.01fpr": lira.get("tpr@0.01fpr"), "loss_auc": loss["auc"],
                               "test_accuracy": rv.get("test_accuracy")}
            row["abs_diff"] = {k: diff(row["audit"][k], row["reported"][k]) for k in KEYS}
            row["max_abs_diff"] = max(row["abs_diff"].values())
        else:
            row["max_abs_diff"] = float("inf")
            row.setdefault("error", "no reported figures for this variant")
        res["variants"][v] = row
    res["max_abs_diff"] = max(r["max_abs_diff"] for r in res["variants"].values())
    return res


def fmt(x) -> str:
    return "-" if x is None else f"{x:.6f}" if isinstance(x, float) else str(x)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--signals", type=Path, required=True, help="directory searched recursively for manifest.json")
    ap.add_argument("--results", type=Path, required=True, help="privacy_tradeoff.py result JSON")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/privacy_tradeoff_check_cpu.json"))
    a = ap.parse_args()
    reported = json.loads(a.results.read_text())["results"]
    manifests = sorted(a.signals.rglob("manifest.json"))
    if not manifests:
        print(f"no manifest.json under {a.signals}", file=sys.stderr)
        return 2
    runs = [check_manifest(m, reported) for m in manifests]
    worst = max(r["max_abs_diff"] for r in runs)
    doc = {"benchmark": "privacy_tradeoff_check", "command": " ".join(sys.argv), "signals": str(a.signals),
           "results": str(a.results), "tolerance": TOL, "max_abs_diff": worst, "agrees": worst <= TOL, "runs": runs}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=a.out.parent, prefix=a.out.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:  # inf is written as the JSON extension Infinity
        json.dump(doc, f, indent=2)
    os.replace(tmp, a.out)

    head = ("config", "seed", "variant", "auc", "rep auc", "tpr@1%", "rep", "carlini auc", "carlini tpr@1%",
            "tpr@.1%", "loss auc", "rep", "nonmem acc", "max |diff|")
    table = [head]
    for r in runs:
        for v, row in r["variants"].items():
            au, ca, rp = row.get("audit", {}), row.get("carlini", {}), row.get("reported", {})
            table.append((r["config"], r["seed"], v + (" *" if v == r["deployed"] else ""), au.get("auc"),
                          rp.get("auc"), au.get("tpr@0.01fpr"), rp.get("tpr@0.01fpr"), ca.get("auc"),
                          ca.get("tpr@0.01fpr"), au.get("tpr@0.001fpr"), au.get("loss_auc"), rp.get("loss_auc"),
                          row["nonmember_accuracy"], row["max_abs_diff"]))
            if "error" in row:
                print(f"{r['config']} seed {r['seed']} {v}: {row['error']}", file=sys.stderr)
    cells = [[fmt(c) for c in line] for line in table]
    widths = [max(len(line[i]) for line in cells) for i in range(len(head))]
    for line in cells:
        print("  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)))
    print(f"(* = deployed; '-' = below resolution / missing)  largest |audit - reported| = {worst:.3g}  "
          f"-> {'AGREE' if worst <= TOL else 'DISAGREE'} (tolerance {TOL:g}); wrote {a.out}")
    return 0 if worst <= TOL else 1


if __name__ == "__main__":
    sys.exit(main())
