"""benchmarks/privacy_tradeoff.py's bookkeeping: relative recipe values, the goal check, the Pareto front."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import privacy_tradeoff as pt  # noqa: E402

BASE = {"model": "mlp", "data": "purchase-synth:2000", "train": {"epochs": 20, "lr": 1e-3},
        "finetune": {"epochs": 10, "lr": 5e-4}, "defense": {"reference_samples": 2000},
        "split": {"member_fraction": 0.25, "max_members": None}}


def test_relative_epochs_and_reference_data_resolve_per_data_set():
    r = pt.make_recipe(BASE, pt.CONFIGS["dmp (regularised teacher + large reference)"], 3, pool_size=1000)
    assert r.seed == 3 and r.finetune.epochs == 40 and r.finetune.lr == 1e-3
    assert r.defense.name == "dmp" and r.defense.reference_samples == 800
    assert r.train.label_smoothing == 0.1 and r.train.weight_decay == 5e-4
    assert pt.make_recipe(BASE, pt.CONFIGS["dmp (large reference)"], 0, 60000, max_reference=8000) \
        .defense.reference_samples == 8000
    with pytest.raises(ValueError, match="pool size"):
        pt.make_recipe(BASE, pt.CONFIGS["dmp (large reference)"], 0)
    wd = pt.make_recipe(BASE, pt.CONFIGS["wd 5e-4 + long fine-tune"], 0)
    assert wd.finetune.epochs == 20 and wd.finetune.weight_decay == 5e-4 and wd.finetune.lr == 1e-3
    assert pt.pool_size(BASE) == 1000  # 2,000 samples: 500 members, 500 non-members, the rest is the pool


def _summary(acc, tpr01=None, tpr1=None):
    s = {"test_accuracy": {"mean": acc, "ci95": 0.0}, "loss auc": {"mean": 0.9, "ci95": 0.01},
         "lira-online-fixed auc": {"mean": 0.95, "ci95": 0.01}}
    if tpr01 is not None:
        s["lira-online-fixed tpr@0.001fpr"] = {"mean": tpr01, "ci95": 0.01}
    if tpr1 is not None:
        s["lira-online-fixed tpr@0.01fpr"] = {"mean": tpr1, "ci95": 0.01}
    return s


def _variant(acc, tpr):
    attacks = {"loss": {"auc": 0.9, "tpr@0.001fpr": 0.01, "tpr@0.01fpr": 0.05},
               "lira-online-fixed": {"auc": 0.95, "tpr@0.001fpr": tpr, "tpr@0.01fpr": 2 * tpr}}
    return {"test_accuracy": acc, "attacks": attacks}


def test_goal_needs_half_the_tpr_and_accuracy_within_one_point():
    dense = _summary(0.713, 0.444, 0.8)
    assert pt.goal(dense, _summary(0.766, 0.172))["met"]
    assert not pt.goal(dense, _summary(0.697, 0.172))["met"]  # 1.6 points below dense
    g = pt.goal(dense, _summary(0.72, 0.223))
    assert not g["met"] and g["accuracy_within_1_point"] and not g["tpr_at_most_half"]
    # TPR@0.1% below resolution (fewer than 5,000 non-members): not evaluated at 0.1%, evaluated at 1%
    assert pt.goal(_summary(0.63, None, 0.3), _summary(0.63, None, 0.1)) == \
        {"evaluated": False, "metric": "lira-online-fixed tpr@0.001fpr"}
    g = pt.goal(_summary(0.63, None, 0.3), _summary(0.625, None, 0.1), fpr="0.01")
    assert g["met"] and g["metric"] == "lira-online-fixed tpr@0.01fpr"


def test_pareto_front_keeps_only_undominated_points():
    front = pt.pareto({"dense": (0.71, 0.44), "pruned": (0.67, 0.19), "wd": (0.72, 0.22),
                       "dmp": (0.77, 0.17), "worse": (0.70, 0.30)})
    assert front == ["dmp"]
    assert set(pt.pareto({"a": (0.7, 0.1), "b": (0.8, 0.2)})) == {"a", "b"}


def test_merge_joins_configurations_and_recomputes_the_goal(tmp_path):
    def doc(label, acc, tpr, seed=0):
        run = {"seed": seed, "deployed": "pruned", "variants": {"pruned": _variant(acc, tpr), "dense": _variant(0.713, 0.444)}}
        results = {label: {"overrides": {}, "runs": [run], "dense": _summary(0.713, 0.444),
                           "deployed": _summary(acc, tpr)}}
        return {"command": f"run {label}", "total_seconds": 10.0, "machine": {"cpu": "test"}, "results": results,
                "settings": {"data": "purchase-synth", "sparsity": 0.5, "seeds": "0", "goal_fpr": "0.001"}}

    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(doc("pruned l1", 0.669, 0.19)))
    b.write_text(json.dumps(doc("dmp (large reference)", 0.766, 0.17)))
    out = tmp_path / "m.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "privacy_tradeoff.py"), "--merge", f"{a},{b}",
                    "--out", str(out)], check=True, capture_output=True)
    m = json.loads(out.read_text())
    assert list(m["results"]) == ["pruned l1", "dmp (large reference)"]
    assert m["goal_met_by"] == ["dmp (large reference)"] and m["pareto"] == ["dmp (large reference)"]
    assert [f["command"] for f in m["settings"]["merged_from"]] == ["run pruned l1", "run dmp (large reference)"]
    assert out.with_suffix(".png").stat().st_size > 0
    # one configuration run as one process per seed: the runs are joined and the figures recomputed over seeds
    c = tmp_path / "c.json"
    c.write_text(json.dumps(doc("dmp (large reference)", 0.776, 0.19, seed=1)))
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "privacy_tradeoff.py"), "--merge", f"{a},{b},{c}",
                    "--out", str(out)], check=True, capture_output=True)
    m = json.loads(out.read_text())
    dmp = m["results"]["dmp (large reference)"]
    assert [r["seed"] for r in dmp["runs"]] == [0, 1] and m["settings"]["seeds"] == "0,1"
    assert dmp["deployed"]["test_accuracy"]["mean"] == pytest.approx(0.771)
    assert dmp["deployed"]["lira-online-fixed tpr@0.001fpr"]["mean"] == pytest.approx(0.18)
    assert dmp["deployed"]["lira-online-fixed tpr@0.001fpr"]["ci95"] == pytest.approx(12.706 * 0.01)  # t(1) x sd / sqrt(2)
    # the same seed twice is refused
    bad = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "privacy_tradeoff.py"), "--merge", f"{b},{b}",
                          "--out", str(tmp_path / "bad.json")], capture_output=True, text=True)
    assert bad.returncode != 0 and "same seed" in bad.stderr


def test_kept_signals_let_an_independent_check_recompute_lira(tmp_path):
    """--keep-signals names the target's and every reference model's logits; check_privacy_tradeoff.py
    (numpy + scikit-learn only) recomputes LiRA and the loss attack from them and agrees with the audit; a
    figure changed in the results makes it fail."""
    out, keep = tmp_path / "res.json", tmp_path / "signals"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "privacy_tradeoff.py"), "--data", "purchase-synth:2000",
                    "--epochs", "2", "--finetune-epochs", "1", "--references", "4", "--seeds", "0",
                    "--configs", "pruned l1", "--keep-signals", str(keep), "--out", str(out)],
                   check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    man = json.loads((keep / "pruned_l1" / "seed0" / "manifest.json").read_text())
    assert man["variants"] == ["dense", "pruned", "pruned+int8"] and len(man["references"]) == 4
    assert sum(man["is_member"]) == 500 and len(man["candidate_index"]) == 1000
    ref_in = [r["is_in"] for r in man["references"]]
    assert all(a + b == 1 for a, b in zip(ref_in[0], ref_in[1], strict=True))  # complementary halves
    check = ROOT / "benchmarks" / "check_privacy_tradeoff.py"
    ok = subprocess.run([sys.executable, str(check), "--signals", str(keep), "--results", str(out),
                         "--out", str(tmp_path / "check.json")], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    doc = json.loads((tmp_path / "check.json").read_text())
    row = doc["runs"][0]["variants"]["pruned+int8"]
    assert doc["agrees"] and row["audit"]["auc"] == pytest.approx(row["reported"]["auc"], abs=1e-9)
    assert 0.5 < row["audit"]["auc"] <= 1.0
    res = json.loads(out.read_text())
    res["results"]["pruned l1"]["runs"][0]["variants"]["pruned+int8"]["attacks"]["lira-online-fixed"]["auc"] += 0.01
    out.write_text(json.dumps(res))
    bad = subprocess.run([sys.executable, str(check), "--signals", str(keep), "--results", str(out),
                          "--out", str(tmp_path / "check2.json")], capture_output=True, text=True)
    assert bad.returncode == 1 and "DISAGREE" in bad.stdout
