"""RMIA offline (Zarifzadeh et al., ICML '24): pairwise likelihood ratios against population samples.

Pr(x) is approximated from OUT reference models as ((1 + a) / 2) * mean_out p(x) + (1 - a) / 2; the score of
x is the fraction of population samples z with (p(x|target) / Pr(x)) / (p(z|target) / Pr(z)) > gamma.
``a`` is tuned attacker-side: one reference plays the target and the others the references.
"""

from __future__ import annotations

import numpy as np

from edgeprune.attack.base import AttackInputs, register

A_GRID = np.round(np.linspace(0.0, 1.0, 11), 2)


def _prx(prob: np.ndarray, out_mask: np.ndarray, a: float) -> np.ndarray:
    cnt = np.maximum(out_mask.sum(0), 1)
    mean_out = (prob * out_mask).sum(0) / cnt
    return (1 + a) / 2 * mean_out + (1 - a) / 2


def rmia_scores(p_x: np.ndarray, pr_x: np.ndarray, p_z: np.ndarray, pr_z: np.ndarray, gamma: float = 1.0) -> np.ndarray:
    from scipy.stats import rankdata  # lazily: `edgeprune attacks` must stay fast

    ratio_x = p_x / np.maximum(pr_x, 1e-30)
    ratio_z = np.sort(p_z / np.maximum(pr_z, 1e-30))
    # fraction of z with ratio_x / ratio_z > gamma  <=>  ratio_z < ratio_x / gamma
    frac = np.searchsorted(ratio_z, ratio_x / gamma, side="left") / len(ratio_z)
    # the fraction only takes len(z) + 1 values; break its ties by ratio_x itself (the fraction is monotone
    # in ratio_x, so this changes no order, it only separates candidates that saturate at 0 or 1). Equal
    # ratios get their average rank: equal scores, never an order taken from the candidates' positions.
    rank = rankdata(ratio_x, method="average")
    return frac + rank / (len(ratio_x) + 1) / (len(ratio_z) + 1)


def tune_a(prob: np.ndarray, is_in: np.ndarray, pop_prob: np.ndarray) -> float:
    """Pick ``a`` by playing the attack with reference 0 as target and the rest as references."""
    from sklearn.metrics import roc_auc_score  # lazily: `edgeprune attacks` must stay fast

    if prob.shape[0] < 2:
        return 0.5
    tgt_p, tgt_in = prob[0], is_in[0]
    rest, rest_in = prob[1:], is_in[1:]
    pop_rest = pop_prob[1:]
    best, best_auc = 0.5, -1.0
    if tgt_in.all() or (~tgt_in).all():
        return best
    for a in A_GRID:
        s = rmia_scores(tgt_p, _prx(rest, ~rest_in, a), pop_prob[0], _prx(pop_rest, np.ones_like(pop_rest, bool), a))
        auc = roc_auc_score(tgt_in, s)
        if auc > best_auc:
            best, best_auc = float(a), auc
    return best


@register("rmia", needs=("references",))
def rmia(inp: AttackInputs) -> np.ndarray:
    """RMIA offline with a tuned a, against population samples"""
    r = inp.refs
    a = tune_a(r.prob, r.is_in, r.pop_prob)
    pr_x = _prx(r.prob, ~r.is_in, a)
    pr_z = _prx(r.pop_prob, np.ones_like(r.pop_prob, bool), a)
    return rmia_scores(inp.target.true_prob, pr_x, inp.population.true_prob, pr_z)
