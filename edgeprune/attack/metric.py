"""Metric (threshold) attacks: each maps cached signals to a membership score, higher = member."""

from __future__ import annotations

import numpy as np

from edgeprune.attack.signals import Signals
from edgeprune.registry import Registry

ATTACKS: Registry = Registry("attack")


@ATTACKS.register("loss")
def loss_attack(sig: Signals) -> np.ndarray:
    """Yeom et al. '18: members have lower loss."""
    return -sig.loss


@ATTACKS.register("confidence")
def confidence_attack(sig: Signals) -> np.ndarray:
    """Ground-truth-class confidence."""
    return sig.probs[np.arange(len(sig.labels)), sig.labels]


@ATTACKS.register("top1")
def top1_attack(sig: Signals) -> np.ndarray:
    """Highest softmax probability (label-free)."""
    return sig.probs.max(1)


@ATTACKS.register("entropy")
def entropy_attack(sig: Signals) -> np.ndarray:
    """Members get low-entropy predictions (label-free)."""
    p = np.clip(sig.probs, 1e-30, 1.0)
    return (p * np.log(p)).sum(1)
