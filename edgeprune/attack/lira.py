"""LiRA (Carlini et al., S&P '22): Gaussian likelihood ratio of the logit-scaled confidence.

Online: per-candidate IN and OUT Gaussians from reference models that did / did not train on it.
Offline: only the OUT Gaussian, one-sided. Fixed variance: one variance shared by all candidates.
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


register("lira-online", needs=("references",), doc="LiRA online, per-example variance")(
    lambda inp: lira_online(inp, fixed=False))
register("lira-online-fixed", needs=("references",), doc="LiRA online, fixed (global) variance")(
    lambda inp: lira_online(inp, fixed=True))
register("lira-offline", needs=("references",), doc="LiRA offline (OUT references only), per-example variance")(
    lambda inp: lira_offline(inp, fixed=False))
register("lira-offline-fixed", needs=("references",), doc="LiRA offline, fixed (global) variance")(
    lambda inp: lira_offline(inp, fixed=True))
