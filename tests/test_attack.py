import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from edgeprune.attack.audit import audit_signals
from edgeprune.attack.metric import ATTACKS
from edgeprune.attack.metrics import attack_metrics
from edgeprune.attack.signals import Signals


def test_auc_agrees_with_sklearn_on_random_scores():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500).astype(bool)
    s = rng.normal(size=500) + y
    assert attack_metrics(y, s)["auc"] == pytest.approx(roc_auc_score(y, s))


def test_tpr_at_fpr_on_a_hand_made_score_set():
    # 1000 non-members with scores 0..999, 100 members: 50 above every non-member, 50 at the bottom
    nonmember = np.arange(1000, dtype=float)
    member = np.concatenate([np.full(50, 5000.0), np.full(50, -1.0)])
    y = np.concatenate([np.zeros(1000, bool), np.ones(100, bool)])
    m = attack_metrics(y, np.concatenate([nonmember, member]))
    assert m["tpr@0.001fpr"] == pytest.approx(0.5)  # 1 false positive allowed: still only the 50 top members
    assert m["tpr@0.01fpr"] == pytest.approx(0.5)
    perfect = attack_metrics(y, np.concatenate([nonmember, np.full(100, 5000.0)]))
    assert perfect["auc"] == 1.0 and perfect["tpr@0.001fpr"] == 1.0 and perfect["balanced_accuracy"] == 1.0


def test_constant_model_leaks_nothing():
    rng = np.random.default_rng(0)
    x_in, x_out = rng.normal(size=(300, 4)), rng.normal(size=(300, 4))
    y_in, y_out = rng.integers(0, 3, 300), rng.integers(0, 3, 300)
    const = np.array([0.2, 1.0, -0.5])
    sig = Signals.compute(lambda x: np.tile(const, (len(x), 1)), x_in, y_in, x_out, y_out)
    res = audit_signals(sig, ATTACKS.names())
    for name, r in res["attacks"].items():
        assert abs(r["auc"] - 0.5) < 0.05, name


def test_an_overconfident_model_on_members_is_caught():
    rng = np.random.default_rng(1)
    n, k = 400, 5
    y = rng.integers(0, k, 2 * n)
    logits = rng.normal(size=(2 * n, k))
    logits[np.arange(n), y[:n]] += 4.0  # members: confident in the true class
    sig = Signals(logits, y, np.arange(2 * n) < n)
    res = audit_signals(sig, ["loss", "confidence", "top1", "entropy"])
    assert res["attacks"]["loss"]["auc"] > 0.9
    assert res["strongest"] in ("loss", "confidence")
    np.testing.assert_allclose(sig.probs.sum(1), 1.0)
