"""Attack metrics: AUC, attack accuracy at the attacker's own threshold, oracle balanced accuracy, TPR at
low FPR with the number of false positives it rests on, and confidence intervals that fit each figure.

Conventions (docs/README "Reading an audit"):
- ``tpr@{p}fpr`` is the TPR at a threshold that lets through at most ``floor(p * n_nonmembers)`` false
  positives (the "false-positive budget"). A figure whose budget is below ``MIN_FALSE_POSITIVES`` is set
  by one or two samples: it is reported as ``None`` with the text ``below resolution (n_neg=...)``.
- ``attack_accuracy`` is the balanced accuracy (members and non-members weighed equally, which is the
  accuracy on the seed papers' balanced candidate sets) at a threshold the attacker chose without the
  target's labels (on shadow models, or on a reference model playing the target).
- ``oracle_balanced_accuracy`` is the best balanced accuracy over all thresholds, chosen on the target's
  own labels: an upper bound no real attacker reaches. It is labelled as such everywhere.
- Intervals (95%): AUC, oracle balanced accuracy and attack accuracy use the percentile bootstrap over
  candidates (members and non-members resampled separately). TPR at a fixed FPR is a tail proportion whose
  percentile bootstrap is biased and skewed, so it uses the bias-corrected and accelerated (BCa) bootstrap
  with the threshold re-chosen at the fixed FPR in every resample (the threshold's own noise is in it).
"""

from __future__ import annotations

import numpy as np

FPR_POINTS = (0.01, 0.001, 0.0001)
TPR_KEYS = tuple(f"tpr@{p:g}fpr" for p in FPR_POINTS)
METRIC_KEYS = ("auc", "oracle_balanced_accuracy") + TPR_KEYS
MIN_FALSE_POSITIVES = 5  # a TPR@FPR figure must rest on at least this many non-members above the threshold


def fp_budget(fpr: float, n_neg: int) -> int:
    """How many false positives a threshold at ``fpr`` may let through with ``n_neg`` non-members."""
    return int(np.floor(fpr * n_neg + 1e-9))


def below_resolution(n_neg: int) -> str:
    return f"below resolution (n_neg={n_neg})"


def _clean(scores) -> np.ndarray:
    return np.clip(np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=-np.inf), -1e300, 1e300)


def threshold_at_fpr(neg_scores: np.ndarray, fpr: float) -> float:
    """The lowest threshold (member if score > threshold) with at most ``fp_budget`` false positives."""
    k = fp_budget(fpr, neg_scores.size)
    if k >= neg_scores.size:
        return -np.inf
    return float(-np.partition(-neg_scores, k)[k])  # the (k+1)-th largest non-member score


def tpr_at_fpr(is_member: np.ndarray, scores: np.ndarray, fpr: float) -> dict:
    """TPR at ``fpr`` with what it rests on: threshold, false-positive budget and count, resolution."""
    is_member = np.asarray(is_member, bool)
    scores = _clean(scores)
    neg = scores[~is_member]
    thr = threshold_at_fpr(neg, fpr)
    budget = fp_budget(fpr, neg.size)
    ok = budget >= MIN_FALSE_POSITIVES
    return {
        "tpr": float((scores[is_member] > thr).mean()) if ok else None,
        "fp_budget": budget,
        "false_positives": int((neg > thr).sum()),
        "n_neg": int(neg.size),
        "resolved": ok,
        "text": None if ok else below_resolution(int(neg.size)),
    }


def balanced_accuracy_at(is_member: np.ndarray, scores: np.ndarray, threshold: float) -> float:
    """(TPR + TNR) / 2 with "member" meaning score >= threshold."""
    is_member = np.asarray(is_member, bool)
    pred = _clean(scores) >= threshold
    return float((pred[is_member].mean() + (~pred[~is_member]).mean()) / 2)


def attack_metrics(is_member: np.ndarray, scores: np.ndarray, threshold: float | None = None) -> dict:
    """Point estimates. ``threshold``: the attacker's own (shadow-chosen) threshold, if it has one."""
    from sklearn.metrics import roc_auc_score  # lazily: `edgeprune attacks` must stay fast

    is_member = np.asarray(is_member, bool)
    scores = _clean(scores)
    w = _weighted_metrics(scores, is_member, np.ones((1, scores.size)))
    out = {
        "auc": float(roc_auc_score(is_member.astype(int), scores)),
        "oracle_balanced_accuracy": float(w["oracle_balanced_accuracy"][0]),
        "attack_accuracy": None if threshold is None else balanced_accuracy_at(is_member, scores, threshold),
        "attack_threshold": None if threshold is None else float(threshold),
        "n_members": int(is_member.sum()),
        "n_nonmembers": int((~is_member).sum()),
        "tpr_at_fpr": {},
    }
    for p, key in zip(FPR_POINTS, TPR_KEYS, strict=True):
        d = tpr_at_fpr(is_member, scores, p)
        out[key] = d["tpr"]
        out["tpr_at_fpr"][f"{p:g}"] = d
    return out


def _weighted_metrics(scores: np.ndarray, is_member: np.ndarray, weights: np.ndarray,
                      threshold: float | None = None) -> dict:
    """The metrics of ``attack_metrics`` for B weightings of the samples at once (rows of ``weights``).

    Hand-written because the bootstrap needs B ROC curves: sorting once and taking weighted cumulative
    sums is ~100x faster than calling scikit-learn B times. Ties are grouped like roc_curve does. The
    TPR at FPR p allows at most floor(p * total non-member weight) false positives, as ``tpr_at_fpr``.
    """
    order = np.argsort(-scores, kind="stable")
    s = scores[order]
    pos_w = weights[:, order] * is_member[order]
    neg_w = weights[:, order] * ~is_member[order]
    ends = np.flatnonzero(np.r_[s[1:] != s[:-1], True])  # last index of each tie group
    tp = np.cumsum(pos_w, 1)[:, ends]
    fp = np.cumsum(neg_w, 1)[:, ends]
    P, N = tp[:, -1:], fp[:, -1:]
    tpr = np.concatenate([np.zeros((len(weights), 1)), tp / P], 1)
    fpr = np.concatenate([np.zeros((len(weights), 1)), fp / N], 1)
    fpc = np.concatenate([np.zeros((len(weights), 1)), fp], 1)
    out = {"auc": np.trapezoid(tpr, fpr, axis=1), "oracle_balanced_accuracy": ((tpr + 1 - fpr) / 2).max(1)}
    for p, key in zip(FPR_POINTS, TPR_KEYS, strict=True):
        out[key] = np.where(fpc <= np.floor(p * N + 1e-9), tpr, 0.0).max(1)
    if threshold is not None:
        hit = scores >= threshold
        out["attack_accuracy"] = ((weights * (hit & is_member)).sum(1) / P[:, 0]
                                  + (weights * (~hit & ~is_member)).sum(1) / N[:, 0]) / 2
    return out


def _bca_tpr_acceleration(is_member: np.ndarray, scores: np.ndarray, fpr: float) -> float:
    """BCa's acceleration for TPR at a fixed FPR from the exact jackknife, computed in closed form.

    Hand-written (not scipy.stats.bootstrap) because scipy's jackknife re-evaluates the statistic n times
    on (n, n-1) arrays: 5,000 candidates per side would take gigabytes. Leaving one member out changes
    the TPR by its own indicator; leaving one non-member out moves the threshold to one of two order
    statistics. The multi-sample formula is scipy's (Efron & Tibshirani 14.15 per sample)."""
    pos, neg = scores[is_member], np.sort(scores[~is_member])[::-1]
    n_pos, n_neg = pos.size, neg.size
    thr = threshold_at_fpr(neg, fpr)
    hit = pos > thr
    jack_pos = (hit.sum() - hit) / max(n_pos - 1, 1)
    k1 = fp_budget(fpr, n_neg - 1)  # budget without one non-member

    def tpr_above(i: int) -> float:
        return float((pos > (neg[i] if i < n_neg else -np.inf)).mean())

    inside = min(k1 + 1, n_neg)  # removing one of the top k1+1 shifts the threshold one place down
    jack_neg = np.r_[np.full(inside, tpr_above(k1 + 1)), np.full(n_neg - inside, tpr_above(k1))]
    nums, dens = 0.0, 0.0
    for jack in (jack_pos, jack_neg):
        n = jack.size
        u = (n - 1) * (jack.mean() - jack)
        nums += (u**3).sum() / n**3
        dens += (u**2).sum() / n**2
    return float(nums / 6 / dens**1.5) if dens > 0 else 0.0


def _bca_interval(samples: np.ndarray, estimate: float, accel: float, level: float) -> list[float]:
    from scipy.stats import norm

    # ties with the estimate count half (TPR is discrete: many resamples land exactly on it)
    frac = ((samples < estimate).sum() + 0.5 * (samples == estimate).sum()) / samples.size
    z0 = norm.ppf(np.clip(frac, 1e-6, 1 - 1e-6))
    za = norm.ppf([(1 - level) / 2, (1 + level) / 2])
    alpha = norm.cdf(z0 + (z0 + za) / (1 - accel * (z0 + za)))
    lo, hi = np.quantile(samples, alpha)
    return [float(lo), float(hi)]


def bootstrap_weights(is_member: np.ndarray, n: int, seed: int) -> np.ndarray:
    """(n, N) multinomial counts: resampling members and non-members separately, with replacement."""
    rng = np.random.default_rng(seed)
    weights = np.zeros((n, is_member.size))
    for side in (np.flatnonzero(is_member), np.flatnonzero(~is_member)):
        m = side.size
        draws = rng.integers(0, m, (n, m)) + np.arange(n)[:, None] * m  # row b draws m of its m samples
        weights[:, side] = np.bincount(draws.ravel(), minlength=n * m).reshape(n, m)
    return weights


def bootstrap_ci(is_member: np.ndarray, scores: np.ndarray, n: int = 200, seed: int = 0, level: float = 0.95,
                 threshold: float | None = None) -> dict:
    """95% intervals of every metric (see the module docstring); ``None`` for a TPR below resolution."""
    if n <= 0:
        return {}
    is_member = np.asarray(is_member, bool)
    scores = _clean(scores)
    samples = _weighted_metrics(scores, is_member, bootstrap_weights(is_member, n, seed), threshold)
    lo, hi = (1 - level) / 2, (1 + level) / 2
    out = {k: [float(np.quantile(samples[k], lo)), float(np.quantile(samples[k], hi))]
           for k in ("auc", "oracle_balanced_accuracy", "attack_accuracy") if k in samples}
    n_neg = int((~is_member).sum())
    for p, key in zip(FPR_POINTS, TPR_KEYS, strict=True):
        if fp_budget(p, n_neg) < MIN_FALSE_POSITIVES:
            out[key] = None
            continue
        est = tpr_at_fpr(is_member, scores, p)["tpr"]
        out[key] = _bca_interval(samples[key], est, _bca_tpr_acceleration(is_member, scores, p), level)
    return out


def per_class_auc(is_member: np.ndarray, scores: np.ndarray, labels: np.ndarray, min_per_side: int = 2) -> dict:
    """AUC within each class (classes with fewer than ``min_per_side`` members or non-members are left out).

    One weighted-ROC pass with a 0/1 weight row per class instead of one scikit-learn call per class."""
    is_member = np.asarray(is_member, bool)
    classes = [c for c in np.unique(labels)
               if (is_member & (labels == c)).sum() >= min_per_side and (~is_member & (labels == c)).sum() >= min_per_side]
    if not classes:
        return {}
    scores = _clean(scores)
    weights = np.stack([(labels == c).astype(np.float64) for c in classes])
    auc = _weighted_metrics(scores, is_member, weights)["auc"]
    return {str(int(c)): float(a) for c, a in zip(classes, auc, strict=True)}


def roc_points(is_member: np.ndarray, scores: np.ndarray, max_points: int = 400) -> dict:
    """A thinned ROC curve (log-spaced in FPR) for plots, cut at the FPR the non-members can resolve."""
    from sklearn.metrics import roc_curve

    is_member = np.asarray(is_member, bool)
    fpr, tpr, _ = roc_curve(is_member.astype(int), _clean(scores))
    n_neg = int((~is_member).sum())
    lowest = MIN_FALSE_POSITIVES / max(n_neg, 1)  # below this the curve is set by a handful of samples
    grid = np.unique(np.concatenate([np.logspace(np.log10(min(lowest, 1.0)), 0, max_points)]))
    return {"fpr": grid.tolist(), "tpr": np.interp(grid, fpr, tpr).tolist(), "min_fpr": lowest}


def strongest(results: dict) -> str | None:
    """The strongest attack: highest TPR at 0.1% FPR among figures within resolution, ties (and attacks
    whose TPR@0.1% is below resolution) by AUC. One attack, whose own figures the reports show."""
    if not results:
        return None
    return max(results, key=lambda k: (results[k]["tpr@0.001fpr"] is not None,
                                       results[k]["tpr@0.001fpr"] or 0.0, results[k]["auc"], k))


def fmt_tpr(res: dict, key: str, digits: int = 3) -> str:
    """A TPR figure for a table: the number, or why there is none."""
    v = res.get(key)
    if v is not None:
        return f"{v:.{digits}f}"
    p = key.removeprefix("tpr@").removesuffix("fpr")
    d = res.get("tpr_at_fpr", {}).get(p)
    return d["text"] if d else "-"
