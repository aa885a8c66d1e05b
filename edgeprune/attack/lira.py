"""LiRA (Carlini et al., S&P '22): Gaussian likelihood ratio of the logit-scaled confidence.

Online: per-candidate IN and OUT Gaussians from reference models that did / did not train on it.
Offline: only the OUT Gaussian, one-sided. Fixed variance: one variance shared by all candidates.

Per-example variances need many references: with 2 IN and 2 OUT points the smallest estimated standard
deviations sit at the floor and the scores explode. Measured on purchase-synth (MLP, 5,000 non-members,
dense / 50%-pruned + int8; benchmarks/README.md "audit_validity"), TPR@0.1%FPR per-example vs fixed:
4 references 0.003 vs 0.25 / 0.003 vs 0.11; 16 references 0.28 vs 0.47 / 0.05 vs 0.19; 32 references
(16 per side) still 0.36 vs 0.47 / 0.20 vs 0.25. Carlini et al. use per-example variances only with many
references (64+). So ``lira-online`` and ``lira-offline`` use the per-example variance only when every
candidate has at least ``MIN_PER_SIDE`` references on each side they use, and the global (fixed) variance
otherwise; the audit says which (``note``). ``-fixed`` always uses the global variance.
"""

from __future__ import annotations

import numpy as np

from edgeprune.attack.base import AttackInputs, register


def _stats(phi: np.ndarray, mask: np.ndarray, fixed: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per-candidate mean and std of phi over the references selected by mask (R, N)."""
    cnt = mask.sum(0)
    mean = np.where(cnt > 0, (phi * mask).sum(0) / np.maximum(cnt, 1), np.nan)
    resid = (phi - mean) * mask
    var = (resid**2).sum(0) / np.maximum(cnt - 1, 1)
    if fixed:
        pooled = (resid**2).sum() / max(int(cnt.sum()) - int((cnt > 0).sum()), 1)
        var = np.full_like(var, pooled)
    # candidates without any IN (or OUT) reference fall back to the global statistics
    glob_mean = float(np.nanmean(mean)) if np.isfinite(mean).any() else 0.0
    mean = np.where(np.isfinite(mean), mean, glob_mean)
    return mean, np.sqrt(np.maximum(var, 1e-6))


def _logpdf(x, mean, std):
    return -0.5 * ((x - mean) / std) ** 2 - np.log(std)


MIN_PER_SIDE = 32  # references per side (IN / OUT) below which the per-example variance is not used: at 16
# per side it still lost to the global variance (see above), so it is used from 32 per side (64 models)


def per_side(refs, online: bool) -> int:
    """The fewest references any candidate has on a side the attack uses (IN and OUT online, OUT offline)."""
    n_in = refs.is_in.sum(0)
    n_out = refs.is_in.shape[0] - n_in
    return int(min(n_in.min(), n_out.min()) if online else n_out.min())


def use_fixed(inp: AttackInputs, online: bool) -> bool:
    """Global variance below MIN_PER_SIDE references per side (decided on the attacker's full reference set)."""
    return per_side(inp.full_refs or inp.refs, online) < MIN_PER_SIDE


def variance_note(online: bool):
    def note(inp: AttackInputs) -> str:
        k = per_side(inp.refs, online)
        if k < MIN_PER_SIDE:
            return f"global (fixed) variance: {k} references per side < {MIN_PER_SIDE}"
        return f"per-example variance ({k} references per side)"

    return note


def lira_online(inp: AttackInputs, fixed: bool) -> np.ndarray:
    r = inp.refs
    phi_t = inp.target.phi
    mu_in, sd_in = _stats(r.phi, r.is_in, fixed)
    mu_out, sd_out = _stats(r.phi, ~r.is_in, fixed)
    return _logpdf(phi_t, mu_in, sd_in) - _logpdf(phi_t, mu_out, sd_out)


def lira_offline(inp: AttackInputs, fixed: bool) -> np.ndarray:
    r = inp.refs
    mu_out, sd_out = _stats(r.phi, ~r.is_in, fixed)
    return (inp.target.phi - mu_out) / sd_out


register("lira-online", needs=("references",), note=variance_note(True),
         doc=f"LiRA online; per-example variance from {MIN_PER_SIDE} references per side, global below")(
    lambda inp: lira_online(inp, fixed=use_fixed(inp, True)))
register("lira-online-fixed", needs=("references",), doc="LiRA online, fixed (global) variance")(
    lambda inp: lira_online(inp, fixed=True))
register("lira-offline", needs=("references",), note=variance_note(False),
         doc=f"LiRA offline (OUT references only); per-example variance from {MIN_PER_SIDE} OUT references, global below")(
    lambda inp: lira_offline(inp, fixed=use_fixed(inp, False)))
register("lira-offline-fixed", needs=("references",), doc="LiRA offline, fixed (global) variance")(
    lambda inp: lira_offline(inp, fixed=True))
