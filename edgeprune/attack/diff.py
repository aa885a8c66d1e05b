"""A compression-specific attack: the gap between the dense and the compressed model on the same sample.

Pruning + fine-tuning changes members' and non-members' outputs differently (Yuan & Zhang '22); an
attacker who can query both models (the dense one was published, the compressed one deployed) learns that
difference from shadow pairs (shadow dense, shadow compressed) and scores the target pair.
"""

from __future__ import annotations

import numpy as np

from edgeprune.attack.base import AttackInputs, register
from edgeprune.attack.nn import fit_and_score
from edgeprune.attack.signals import Signals


def pair_features(dense: Signals, comp: Signals) -> np.ndarray:
    kl = (dense.probs * (dense.log_probs - comp.log_probs)).sum(1)
    top_d, top_c = dense.probs.max(1), comp.probs.max(1)
    return np.stack([
        dense.loss, comp.loss, comp.loss - dense.loss, dense.phi, comp.phi, comp.phi - dense.phi,
        kl, top_d, top_c, (dense.logits.argmax(1) == comp.logits.argmax(1)).astype(float),
    ], 1)


@register("diff", needs=("shadows", "dense"), threshold=0.5)
def diff(inp: AttackInputs) -> np.ndarray:
    """dense-vs-compressed difference signals (losses, logit gaps, KL), MLP trained on shadow pairs"""
    xs = np.concatenate([pair_features(s.dense, s.target) for s in inp.shadows])
    ys = np.concatenate([s.is_in for s in inp.shadows])
    return fit_and_score(xs, ys, pair_features(inp.dense, inp.target), inp.seed)
