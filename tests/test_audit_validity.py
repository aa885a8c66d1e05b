"""Is the audit right? A synthetic model with known leakage, and one test per defect of issue 12."""

import numpy as np
import pytest
from scipy.stats import norm

from edgeprune.attack.audit import (
    ATTACKS,
    check_plan,
    defender_reference,
    pipeline_key,
    population_indices,
    shadow_samples,
)
from edgeprune.attack.base import AttackInputs, References, ShadowSet, attacker_threshold
from edgeprune.attack.metrics import attack_metrics, bootstrap_ci, strongest
from edgeprune.attack.signals import Signals

TRUE_AUC = norm.cdf(1 / np.sqrt(2))  # members ~ N(1, 1), non-members ~ N(0, 1): 0.760


def _true_tpr(fpr: float) -> float:
    return float(norm.sf(norm.isf(fpr) - 1))


def _gaussian(rng, n):
    return np.r_[np.ones(n, bool), np.zeros(n, bool)], np.r_[rng.normal(1, 1, n), rng.normal(0, 1, n)]


def test_synthetic_model_with_known_leakage():
    y, s = _gaussian(np.random.default_rng(0), 5000)
    m = attack_metrics(y, s)
    ci = bootstrap_ci(y, s, n=200, seed=0)
    assert TRUE_AUC == pytest.approx(0.760, abs=5e-4)
    assert ci["auc"][0] <= TRUE_AUC <= ci["auc"][1] and ci["auc"][0] <= m["auc"] <= ci["auc"][1]
    for key, p in (("tpr@0.01fpr", 0.01), ("tpr@0.001fpr", 0.001)):
        assert ci[key][0] <= _true_tpr(p) <= ci[key][1], key
    # 0.01% of 5,000 non-members is half a sample: the figure would rest on zero false positives
    assert m["tpr@0.0001fpr"] is None and ci["tpr@0.0001fpr"] is None
    assert m["tpr_at_fpr"]["0.0001"]["text"] == "below resolution (n_neg=5000)"
    assert m["tpr_at_fpr"]["0.001"]["fp_budget"] == 5 and m["tpr_at_fpr"]["0.001"]["resolved"]


def test_confidence_intervals_cover_the_truth_at_the_nominal_rate():
    """200 synthetic audits (500 per side, 200 resamples each): the 95% intervals of AUC and of TPR at 1% FPR
    (BCa, threshold re-chosen per resample) contain the true value in 90-98% of them."""
    rng = np.random.default_rng(1)
    hits = {"auc": 0, "tpr@0.01fpr": 0}
    truth = {"auc": TRUE_AUC, "tpr@0.01fpr": _true_tpr(0.01)}
    for rep in range(200):
        y, s = _gaussian(rng, 500)
        ci = bootstrap_ci(y, s, n=200, seed=rep)
        for k in hits:
            hits[k] += ci[k][0] <= truth[k] <= ci[k][1]
    for k, h in hits.items():
        assert 0.90 <= h / 200 <= 0.98, (k, h)


def _refs(rng, r, n, shift=1.0):
    ref_in = np.zeros((r, n), bool)
    for i in range(0, r, 2):
        half = rng.permutation(n) < n // 2
        ref_in[i], ref_in[i + 1] = half, ~half
    scale = rng.uniform(0.5, 2.0, n)  # per-candidate spread
    phi = rng.normal(size=(r, n)) * scale + shift * ref_in
    return References(phi, 1 / (1 + np.exp(-phi)), ref_in, rng.uniform(0.1, 0.9, (r, 50)))


def test_lira_online_never_silently_uses_per_example_variance_with_few_references():
    rng = np.random.default_rng(0)
    target = Signals(rng.normal(size=(400, 3)), rng.integers(0, 3, 400))
    online, fixed = ATTACKS.get("lira-online"), ATTACKS.get("lira-online-fixed")
    few = AttackInputs(target, refs=_refs(rng, 4, 400))
    np.testing.assert_array_equal(online.fn(few), fixed.fn(few))
    assert online.note(few) == "global (fixed) variance: 2 references per side < 32"
    at32 = AttackInputs(target, refs=_refs(rng, 32, 400))  # 16 per side: measured still weaker, so global
    np.testing.assert_array_equal(online.fn(at32), fixed.fn(at32))
    many = AttackInputs(target, refs=_refs(rng, 64, 400))
    assert not np.allclose(online.fn(many), fixed.fn(many))
    assert online.note(many).startswith("per-example variance (32 references per side)")
    # offline LiRA follows the same rule on its OUT references
    np.testing.assert_array_equal(ATTACKS.get("lira-offline").fn(few), ATTACKS.get("lira-offline-fixed").fn(few))


def test_shadows_reference_data_is_disjoint_from_what_they_are_evaluated_on():
    pool = np.arange(10_000, 20_000)
    in_idx, ev, is_in, rest = shadow_samples(pool, 5000, 5000, 2000, seed=3)
    assert np.intersect1d(rest, ev).size == 0 and np.intersect1d(rest, in_idx).size == 0
    assert rest.size >= 2000 and set(ev[is_in]) <= set(in_idx) and not set(ev[~is_in]) & set(in_idx)
    assert is_in.sum() == (~is_in).sum() == 3000


def test_rmia_population_is_disjoint_from_the_targets_reference_data():
    from edgeprune.api import Context
    from edgeprune.recipe import Recipe

    recipe = Recipe(data="digits")
    recipe.defense.name, recipe.defense.reference_samples = "kl", 500
    ctx = Context(recipe)
    ref_idx = defender_reference(ctx.split, recipe)
    x_ref, _ = ctx.reference()
    np.testing.assert_array_equal(ctx.ds.x[ref_idx], x_ref.numpy())  # the same samples the target used
    pop = population_indices(ctx.split.pool, ref_idx, 2000, seed=0)
    assert pop.size == ctx.split.pool.size - 500 and np.intersect1d(pop, ref_idx).size == 0


def test_attack_accuracy_uses_the_attackers_threshold_and_the_oracle_is_labelled():
    rng = np.random.default_rng(0)
    n = 2000
    is_member = np.arange(2 * n) < n

    def sigs(boost_in, boost_out):
        y = rng.integers(0, 5, 2 * n)
        logits = rng.normal(size=(2 * n, 5))
        logits[np.arange(2 * n), y] += np.where(is_member, boost_in, boost_out)
        return Signals(logits, y)

    target = sigs(4.0, 1.0)
    calibrated = [ShadowSet(sigs(4.0, 1.0), is_member)]
    shifted = [ShadowSet(sigs(9.0, 6.0), is_member)]  # shadows whose losses sit elsewhere: a bad threshold
    loss = ATTACKS.get("loss")
    for shadows, good in ((calibrated, True), (shifted, False)):
        inp = AttackInputs(target, shadows=shadows)
        thr, how = attacker_threshold(loss, inp)
        res = attack_metrics(is_member, loss.fn(inp), thr)
        assert how == "chosen on shadow models" and "balanced_accuracy" not in res
        assert res["oracle_balanced_accuracy"] >= res["attack_accuracy"]
        gap = res["oracle_balanced_accuracy"] - res["attack_accuracy"]
        assert (gap < 0.02) if good else (gap > 0.2), (good, gap)
    assert attacker_threshold(loss, AttackInputs(target)) == (None, "needs shadow models to choose a threshold")
    # reference attacks let one reference model play the target
    thr, how = attacker_threshold(ATTACKS.get("lira-online-fixed"), AttackInputs(target, refs=_refs(rng, 8, 2 * n)))
    assert thr is not None and "reference model 0" in how


def test_rmia_ties_do_not_follow_the_candidate_order():
    from edgeprune.attack.rmia import rmia_scores

    rng = np.random.default_rng(0)
    is_member = np.arange(200) < 100  # members first, as the audit stores them
    s = rmia_scores(np.full(200, 0.7), np.full(200, 0.5), rng.uniform(0.1, 0.9, 300), np.full(300, 0.5))
    assert attack_metrics(is_member, s)["auc"] == 0.5


def test_attacker_model_cache_keys_follow_the_code_version(monkeypatch):
    import edgeprune
    from edgeprune.recipe import Recipe

    r = Recipe()
    before = pipeline_key(r, "h")
    monkeypatch.setattr(edgeprune, "__version__", "999.0")
    assert pipeline_key(r, "h") != before
    monkeypatch.undo()
    r2 = Recipe()
    r2.export.opset = 18
    assert pipeline_key(r2, "h") != before and pipeline_key(Recipe(), "h") == before


@pytest.mark.parametrize("change, match", [
    ({"attacks": ["nn"], "shadows": 0}, "needs shadow models"),
    ({"attacks": ["rmia"], "references": 0}, "needs reference models"),
    ({"shadows": -1}, "must be >= 0"),
    ({"references": 1}, "at least 2"),
    ({"seeds": 0}, "--seeds"),
    ({"threat": "psychic"}, "--threat"),
])
def test_impossible_settings_are_refused_up_front(change, match):
    from edgeprune.attack.audit import AuditPlan
    from edgeprune.errors import ConfigError

    plan = AuditPlan(**{"attacks": ["loss"], "shadows": 1, "references": 2, **change})
    with pytest.raises(ConfigError, match=match):
        check_plan(plan)
    check_plan(AuditPlan(["all"]))  # 'all' runs what it can and lists the rest as skipped


def test_plots_of_an_audit_where_nothing_ran(tmp_path):
    from edgeprune.attack.plots import per_class_plot, roc_plot

    audit = {"variants": {"dense": {"attacks": {}, "strongest": None}}, "roc": {"dense": {}}}
    assert roc_plot(audit, tmp_path / "r.png").stat().st_size > 1000
    assert per_class_plot(audit, tmp_path / "p.png").stat().st_size > 1000


def _res(auc, tpr, n_neg=5000):
    return {"auc": auc, "tpr@0.001fpr": tpr, "tpr_at_fpr": {"0.001": {"text": f"below resolution (n_neg={n_neg})"}}}


def test_the_strongest_attack_is_one_attack_with_its_own_figures():
    results = {"loss": _res(0.981, 0.05), "lira-online": _res(0.95, 0.204), "rmia": _res(0.99, None)}
    assert strongest(results) == "lira-online"  # highest TPR@0.1%FPR within resolution
    assert strongest({"a": _res(0.9, 0.1), "b": _res(0.8, 0.1)}) == "a"  # ties by AUC
    assert strongest({"a": _res(0.9, None), "b": _res(0.8, None)}) == "a"
    from edgeprune.report.tables import row_cells

    report = {"rows": [{"variant": "dense", "params": 1, "onnx_kb": 1.0, "train_accuracy": 1.0, "test_accuracy": 0.9,
                        "attacks": results, "strongest_attack": "lira-online", "latency": {}}]}
    cells = row_cells(report)[0]
    i = cells.index("lira-online")
    assert cells[i + 1:i + 3] == ["0.950", "0.204"]  # lira-online's AUC, not loss's 0.981


def test_presets_set_counts_unless_given():
    from edgeprune.attack.audit import AuditPlan, with_preset

    p = with_preset(AuditPlan(["all"]), "thorough", {"shadows": None, "references": None, "seeds": None})
    assert (p.shadows, p.references, p.seeds, p.preset) == (4, 16, 3, "thorough")
    p = with_preset(AuditPlan(["all"]), "quick", {"shadows": 0, "references": None, "seeds": None})
    assert (p.shadows, p.references, p.seeds, p.preset) == (0, 4, 1, "quick")


def test_tune_chooses_on_the_validation_split_and_reports_the_audit(tmp_path, monkeypatch):
    """Two configurations whose audited non-members and validation split disagree: the choice follows the
    validation split (what the defender may look at), the reported figures stay the audit's."""
    from edgeprune import tune as T
    from edgeprune.recipe import Recipe

    def fake_execute(args, execution, label):
        out = []
        for recipe, path, _ in args:
            s = recipe["prune"]["sparsity"]
            audited, validation = (0.70, 0.90) if s == 0.3 else (0.80, 0.60)
            row = {"variant": "pruned+int8", "test_accuracy": 0.8, "onnx_kb": 10.0,
                   "attacks": {"loss": {"auc": audited, "tpr@0.001fpr": 0.01}},
                   "validation": {"n": 500, "accuracy": 0.8, "max_auc": validation, "max_tpr@0.001fpr": 0.01},
                   "latency": {"1": {"p50_ms": 1.0, "speedup_vs_dense": 1.0}}}
            dense = {"variant": "dense", "test_accuracy": 0.85, "attacks": {"loss": {"auc": 0.9}},
                     "validation": {"n": 500, "accuracy": 0.85, "max_auc": 0.9, "max_tpr@0.001fpr": 0.02}}
            out.append({"dir": path, "report": {"rows": [dense, row]}})
        return out

    monkeypatch.setattr(T, "_execute", fake_execute)
    base = Recipe()
    base.weights = str(tmp_path / "w.safetensors")
    res = T.tune(base, T.Space(sparsity=[0.3, 0.6]), T.Budget(objective="auc"), tmp_path / "t")
    chosen = next(t for t in res["trials"] if t["id"] == res["chosen"])
    assert chosen["config"]["sparsity"] == 0.6  # lower leakage on the validation split
    assert chosen["metrics"]["auc"] == 0.80 and chosen["metrics"]["selection"]["auc"] == 0.60
    res = T.tune(base, T.Space(sparsity=[0.3, 0.6]), T.Budget(max_auc=0.75), tmp_path / "t2")
    feasible = {t["config"]["sparsity"] for t in res["trials"] if t["feasible"]}
    assert feasible == {0.6}  # budgets too are checked on the validation split
