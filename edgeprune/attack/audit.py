"""Run the selected attacks on cached signals and collect their metrics."""

from __future__ import annotations

from edgeprune.attack.metric import ATTACKS
from edgeprune.attack.metrics import attack_metrics
from edgeprune.attack.signals import Signals


def audit_signals(sig: Signals, attacks: list[str]) -> dict:
    results = {name: attack_metrics(sig.is_member, ATTACKS.get(name)(sig)) for name in attacks}
    return {
        "members": int(sig.is_member.sum()),
        "nonmembers": int((~sig.is_member).sum()),
        "train_accuracy": sig.accuracy(members=True),
        "test_accuracy": sig.accuracy(members=False),
        "attacks": results,
        "strongest": max(results, key=lambda k: results[k]["auc"]) if results else None,
    }
