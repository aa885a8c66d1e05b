"""benchmarks/paper_claims.py's verdicts: paired per-seed differences, intervals, threat models, merging."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import paper_claims as pc  # noqa: E402


def _run(seed, acc=0.5, **attack_acc):
    """A run result as privacy_tradeoff.run_one returns it: variant -> attack -> figures."""
    variants = {}
    for variant in ("dense", "pruned", "pruned+int8"):
        attacks = {a: {"attack_accuracy": attack_acc.get(f"{variant}/{a}".replace("+", "_"), 0.7),
                       "oracle_balanced_accuracy": 0.8, "auc": 0.85, "tpr@0.01fpr": 0.2}
                   for a in ("loss", "confidence", "samia")}
        variants[variant] = {"test_accuracy": acc, "attacks": attacks}
    return {"seed": seed, "variants": variants}


def test_paired_difference_matches_seeds_and_gives_the_t_interval():
    a = [_run(s, **{"pruned/samia": v}) for s, v in ((0, 0.60), (1, 0.62), (2, 0.64), (3, 0.9))]
    b = [_run(s, **{"pruned/samia": v}) for s, v in ((2, 0.70), (0, 0.70), (1, 0.70))]  # no seed 3; other order
    d = pc.paired(a, "pruned", b, "pruned", "samia", "attack_accuracy")
    assert d["seeds"] == [0, 1, 2] and d["n"] == 3
    assert d["per_seed_difference"] == pytest.approx([-0.10, -0.08, -0.06])
    assert d["mean"] == pytest.approx(-0.08)
    assert d["ci95"] == pytest.approx(4.303 * 0.02 / 3**0.5)  # t(0.975, 2) * sd / sqrt(n)
    assert d["relative"] == pytest.approx(-0.08 / 0.70)
    assert pc.verdict(d, -1) == "confirmed" and pc.verdict(d, +1) == "refuted"


def test_verdicts_need_three_seeds_and_an_interval_clear_of_zero():
    spans = {"mean": -0.02, "ci95": 0.03, "n": 3}
    assert pc.verdict(spans, -1) == "no measurable difference"
    assert pc.verdict({"mean": -0.2, "ci95": 0.01, "n": 2}, -1) == "no claim (2 seeds; mean on the claimed side)"
    assert pc.verdict({"missing": "no seeds", "n": 0}, -1) == "not measurable (no seeds)"
    a = [_run(s) for s in range(3)]
    a[1]["variants"]["pruned"]["attacks"]["loss"]["tpr@0.01fpr"] = None  # below resolution in one seed
    assert pc.verdict(pc.paired(a, "pruned", a, "dense", "loss", "tpr@0.01fpr"), -1).startswith("not measurable")


def test_two_threat_models_name_a_defense_that_only_fools_plain_shadows():
    assert pc.two_threats("no measurable difference", "confirmed") == "confirmed only under the non-adaptive attacker"
    assert pc.two_threats("confirmed", "confirmed") == "confirmed"
    assert pc.two_threats("refuted", "no measurable difference") == (
        "adaptive attacker: refuted; non-adaptive attacker: no measurable difference")


def test_evaluate_and_merge_over_per_seed_files():
    def part(seed):
        plain = _run(seed, **{"pruned/samia": 0.70, "pruned_int8/loss": 0.65 + 0.001 * seed})
        runs = {"plain": [plain], "kl": [_run(seed, **{"pruned/samia": 0.70 + 0.001 * seed})],
                "kl non-adaptive": [_run(seed, **{"pruned/samia": 0.55 + 0.002 * seed})],
                "admm": [_run(seed)], "advreg-dense": [_run(seed)], "advreg-dense non-adaptive": [_run(seed)]}
        return {"command": f"seed {seed}", "settings": {"seeds": str(seed)}, "total_seconds": 10.0,
                "complete": True, "runs": runs}

    doc = pc.merge([part(2), part(0), part(1)])
    assert doc["settings"]["seeds"] == "0,1,2" and doc["total_seconds"] == 30.0
    claims = {(c["paper"], c["claim"]): c for c in pc.evaluate(doc["runs"])}
    kl = claims[("Yuan & Zhang '22", "the KL defense lowers attack accuracy while maintaining sparsity and accuracy")]
    assert kl["verdict"] == "confirmed only under the non-adaptive attacker"
    assert kl["accuracy_cost"] == "accuracy maintained"
    q = claims[("Famili & Lao '23", "quantization lowers attack accuracy and TPR vs full precision (loss)")]
    assert q["verdict"] == "confirmed" and q["primary"]["mean"] == pytest.approx(-0.049)
    assert "| Famili & Lao '23" in pc.markdown_table({**doc, "claims": list(claims.values())})
    with pytest.raises(SystemExit, match="seed given twice"):
        pc.merge([part(0), part(0)])
    only_plain = pc.evaluate({"plain": doc["runs"]["plain"]})  # --runs plain: the claims it supports
    assert {c["paper"] for c in only_plain} == {"Yuan & Zhang '22", "Famili & Lao '23"} and len(only_plain) == 4


def test_a_small_measurement_keeps_signals_that_the_independent_check_agrees_with(tmp_path):
    """paper_claims.py end to end (one seed, the plain run): it measures, writes the manifest of its kept
    signals, and check_paper_claims.py recomputes the same figures from them (the shared base recipe of
    privacy_tradeoff.py once broke this path)."""
    import os
    import subprocess

    root = Path(__file__).resolve().parents[1] / "benchmarks"
    res, sig = tmp_path / "res.json", tmp_path / "sig"
    run = subprocess.run([sys.executable, str(root / "paper_claims.py"), "--seeds", "0", "--data", "purchase-synth:2000",
                          "--epochs", "2", "--finetune-epochs", "1", "--shadows", "2", "--max-samples", "300",
                          "--runs", "plain", "--keep-signals", str(sig), "--out", str(res)],
                         capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-2000:]
    man = json.loads((sig / "seed0" / "manifest.json").read_text())
    assert len(man["shadows"]) == 2 and sum(man["is_member"]) == 300
    check = subprocess.run([sys.executable, str(root / "check_paper_claims.py"), "--signals", str(sig / "seed0"),
                            "--results", str(res), "--out", str(tmp_path / "check.json")], capture_output=True, text=True)
    assert check.returncode == 0 and "AGREE" in check.stdout, check.stdout + check.stderr
