import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from edgeprune.attack.audit import ATTACKS, resolve_attacks
from edgeprune.attack.base import AttackInputs, References, ShadowSet
from edgeprune.attack.metrics import (
    METRIC_KEYS,
    _weighted_metrics,
    attack_metrics,
    bootstrap_ci,
    per_class_auc,
)
from edgeprune.attack.signals import Signals, sensitivity, true_class_logit_gap


def test_auc_agrees_with_sklearn_on_random_scores():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500).astype(bool)
    s = rng.normal(size=500) + y
    assert attack_metrics(y, s)["auc"] == pytest.approx(roc_auc_score(y, s))


def test_weighted_metrics_match_sklearn_with_ties():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 3000).astype(bool)
    s = np.round(rng.normal(size=3000) + y, 1)  # many ties
    w = _weighted_metrics(s, y, np.ones((1, 3000)))
    ref = attack_metrics(y, s)
    for k in METRIC_KEYS:
        if ref[k] is not None:  # below resolution: no number to compare
            assert w[k][0] == pytest.approx(ref[k], abs=1e-12), k
    ci = bootstrap_ci(y, s, n=100, seed=0)
    assert ci["auc"][0] < ref["auc"] < ci["auc"][1]
    assert ci["auc"][1] - ci["auc"][0] < 0.06


def test_tpr_at_fpr_on_a_hand_made_score_set():
    # 10,000 non-members with scores 0..9999, 100 members: 50 above every non-member, 50 at the bottom
    nonmember = np.arange(10000, dtype=float)
    member = np.concatenate([np.full(50, 50000.0), np.full(50, -1.0)])
    y = np.concatenate([np.zeros(10000, bool), np.ones(100, bool)])
    m = attack_metrics(y, np.concatenate([nonmember, member]))
    assert m["tpr@0.001fpr"] == pytest.approx(0.5)
    assert m["tpr@0.01fpr"] == pytest.approx(0.5)
    assert m["tpr@0.0001fpr"] is None  # 1 false positive allowed: below resolution, not a number
    assert m["tpr_at_fpr"]["0.0001"]["text"] == "below resolution (n_neg=10000)"
    assert m["tpr_at_fpr"]["0.001"]["fp_budget"] == 10 and m["tpr_at_fpr"]["0.01"]["fp_budget"] == 100
    # 30 members tie with the 100 highest non-members: at 1% FPR (100 FP) they count, at 0.1% they do not
    member2 = np.concatenate([np.full(50, 50000.0), np.full(30, 9995.0), np.full(20, -1.0)])
    nonmember2 = nonmember.copy()
    nonmember2[-100:] = 9995.0
    m2 = attack_metrics(y, np.concatenate([nonmember2, member2]))
    assert m2["tpr@0.01fpr"] == pytest.approx(0.8) and m2["tpr@0.001fpr"] == pytest.approx(0.5)
    assert m2["tpr_at_fpr"]["0.01"]["false_positives"] == 100 and m2["tpr_at_fpr"]["0.001"]["false_positives"] == 0
    perfect = attack_metrics(y, np.concatenate([nonmember, np.full(100, 50000.0)]))
    assert perfect["auc"] == 1.0 and perfect["tpr@0.001fpr"] == 1.0 and perfect["oracle_balanced_accuracy"] == 1.0


def test_per_class_auc():
    y = np.array([1, 1, 0, 0, 1, 1, 0, 0], bool)
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    scores = np.array([3, 4, 1, 2, 1, 2, 3, 4], float)
    assert per_class_auc(y, scores, labels) == {"0": 1.0, "1": 0.0}


def test_logit_gap_and_sensitivity():
    logits = np.array([[2.0, 0.0, 0.0], [0.0, 5.0, -1.0]])
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = np.array([0, 2])
    want = np.log(p[[0, 1], labels] / (1 - p[[0, 1], labels]))
    np.testing.assert_allclose(true_class_logit_gap(logits, labels), want, rtol=1e-10)
    const = sensitivity(lambda x: np.zeros((len(x), 3)), np.ones((4, 2), np.float32))
    assert np.all(const == 0)
    lin = sensitivity(lambda x: np.stack([x[:, 0], -x[:, 0]], 1) * 10, np.zeros((4, 2), np.float32))
    assert np.all(lin > 0)


def _signals(rng, n, k, member_boost):
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += member_boost
    sens = np.abs(rng.normal(size=(n, k)))
    return Signals(logits, y, sens)


def test_a_constant_model_leaks_nothing_to_any_attack():
    rng = np.random.default_rng(0)
    n, k = 1000, 10
    labels = rng.integers(0, k, 2 * n)
    is_member = np.arange(2 * n) < n
    target = Signals(np.tile(np.linspace(-1, 1, k), (2 * n, 1)), labels, np.zeros((2 * n, k)))
    shadows = []
    for _ in range(2):  # real-looking shadows where members do stand out
        sin, sout = _signals(rng, n, k, 3.0), _signals(rng, n, k, 1.0)
        sig = Signals(np.concatenate([sin.logits, sout.logits]), np.concatenate([sin.labels, sout.labels]),
                      np.concatenate([sin.sens, sout.sens]))
        shadows.append(ShadowSet(sig, is_member.copy(), dense=sig))
    r = 8
    ref_in = np.zeros((r, 2 * n), bool)
    for i in range(0, r, 2):
        half = rng.permutation(2 * n) < n
        ref_in[i], ref_in[i + 1] = half, ~half
    phi = rng.normal(size=(r, 2 * n)) + ref_in
    refs = References(phi, 1 / (1 + np.exp(-phi)), ref_in, rng.uniform(0.1, 0.9, size=(r, 500)))
    pop = Signals(np.tile(np.linspace(-1, 1, k), (500, 1)), rng.integers(0, k, 500))
    inp = AttackInputs(target, dense=target, shadows=shadows, refs=refs, population=pop, seed=0)
    for name in resolve_attacks(["all"]):
        atk = ATTACKS.get(name)
        assert atk.missing(inp) is None, name
        auc = attack_metrics(is_member, atk.fn(inp))["auc"]
        assert abs(auc - 0.5) < 0.05, (name, auc)


def test_attacks_say_what_they_need():
    rng = np.random.default_rng(0)
    inp = AttackInputs(_signals(rng, 20, 3, 1.0))
    assert ATTACKS.get("loss").missing(inp) is None
    assert "shadow" in ATTACKS.get("samia").missing(inp)
    assert "reference" in ATTACKS.get("lira-online").missing(inp)
    from edgeprune.errors import UnknownNameError

    with pytest.raises(UnknownNameError):
        resolve_attacks(["loss", "telepathy"])


def test_per_class_auc_matches_sklearn():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 7, 2000)
    y = rng.integers(0, 2, 2000).astype(bool)
    s = np.round(rng.normal(size=2000) + y * (labels / 5), 1)
    got = per_class_auc(y, s, labels)
    for c, auc in got.items():
        sel = labels == int(c)
        assert auc == pytest.approx(roc_auc_score(y[sel], s[sel]), abs=1e-12)


def test_all_expands_alone_or_beside_other_names():
    from edgeprune.attack.audit import AuditPlan, check_plan
    from edgeprune.attack.base import names_of_kind
    from edgeprune.errors import ConfigError, UnknownNameError

    membership = names_of_kind("membership")
    assert "inversion" not in membership and {"loss", "lira-online", "nn"} <= set(membership)
    assert resolve_attacks(["all"]) == resolve_attacks("all") == membership
    assert resolve_attacks(["all", "loss"]) == membership
    assert resolve_attacks(["loss", "all"]) == ["loss", *[n for n in membership if n != "loss"]]  # no repeats
    with pytest.raises(UnknownNameError, match="telepathy"):
        resolve_attacks(["all", "telepathy"])
    check_plan(AuditPlan(["all"]))  # 'all' runs what the settings allow
    with pytest.raises(ConfigError, match="nn needs shadow"):
        check_plan(AuditPlan(["all", "nn"]))  # a name given beside it is checked
