"""End-to-end audits from the CLI on real (generated) data."""

import json

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from edgeprune.cli import app

runner = CliRunner()
FAST_BENCH = {"batches": [1], "warmup_s": 0.0, "duration_s": 0.05, "min_runs": 3}


@pytest.fixture(scope="module")
def overfit_run(tmp_path_factory):
    """An overfit MLP on purchase-synth, audited with every attack (2 shadows, 8 references)."""
    tmp = tmp_path_factory.mktemp("audit")
    recipe = {
        "model": "mlp", "data": "purchase-synth:12000", "seed": 0,
        "train": {"epochs": 10}, "finetune": {"epochs": 3},
        "audit": {"attacks": ["all"], "shadows": 2, "references": 8, "bootstrap": 50},
        "bench": FAST_BENCH,
    }
    (tmp / "r.yaml").write_text(yaml.safe_dump(recipe))
    out = tmp / "run"
    res = runner.invoke(app, ["compress", "mlp", "--recipe", str(tmp / "r.yaml"), "-o", str(out)])
    assert res.exit_code == 0, res.output
    return out


def test_every_attack_leaks_and_lira_beats_loss_at_low_fpr(overfit_run):
    audit = json.loads((overfit_run / "audit.json").read_text())
    assert audit["references"]["used"] == 8 and audit["shadows"]["used"] == 2
    for variant in ("dense", "pruned", "pruned+int8"):
        info = audit["variants"][variant]
        assert not info["skipped"] if variant != "dense" else set(info["skipped"]) == {"diff"}
        for name, r in info["attacks"].items():
            assert r["auc"] > 0.6, (variant, name, r["auc"])
            assert r["ci95"]["auc"][0] <= r["auc"] <= r["ci95"]["auc"][1]
        # the published ordering: online LiRA (fixed variance with few references) beats the loss attack
        # (at 1% FPR: 3,000 non-members allow 3 false positives at 0.1%, below resolution)
        assert info["attacks"]["lira-online-fixed"]["tpr@0.01fpr"] > info["attacks"]["loss"]["tpr@0.01fpr"]
        assert info["attacks"]["loss"]["tpr@0.001fpr"] is None
        assert info["attacks"]["lira-online"]["note"].startswith("global (fixed) variance: 4 references per side")
    assert (overfit_run / "audit_roc.png").stat().st_size > 10_000
    assert (overfit_run / "audit_per_class.png").stat().st_size > 10_000


def test_reaudit_reuses_cached_signals(overfit_run):
    before = json.loads((overfit_run / "audit.json").read_text())
    res = runner.invoke(app, ["audit", str(overfit_run), "--attacks", "loss,lira-online,rmia", "--shadows", "2",
                              "--references", "8"])
    assert res.exit_code == 0, res.output
    after = json.loads((overfit_run / "audit.json").read_text())
    assert after["shadows"]["trained_now"] == 0 and after["references"]["trained_now"] == 0
    assert after["cache"]["misses"] == 0 and after["cache"]["hits"] > 0
    for name in ("loss", "lira-online", "rmia"):
        assert after["variants"]["pruned"]["attacks"][name]["auc"] == before["variants"]["pruned"]["attacks"][name]["auc"]
    assert "TPR@0.1%" in res.output
    # the manifest still vouches for every artifact after the audit rewrote some
    from edgeprune.run import sha256_file

    man = json.loads((overfit_run / "manifest.json").read_text())
    for rel, digest in man["artifacts"].items():
        assert sha256_file(overfit_run / rel) == digest, rel


def test_an_impossible_audit_is_refused_and_leaves_audit_json_alone(overfit_run):
    before = (overfit_run / "audit.json").read_bytes()
    for args, match in ((["--attacks", "nn", "--shadows", "0"], "needs shadow models"),
                        (["--shadows", "-1"], "must be >= 0"), (["--seeds", "0"], "--seeds"),
                        (["--threat", "lazy"], "--threat"), (["--preset", "huge"], "unknown preset")):
        res = runner.invoke(app, ["audit", str(overfit_run), *args])
        assert res.exit_code == 2 and match in res.output and "Traceback" not in res.output, res.output
        assert len(res.output.strip().splitlines()) == 1
    assert (overfit_run / "audit.json").read_bytes() == before


def test_seeds_and_both_threat_models(overfit_run):
    """Two training seeds, both attackers: spread across seeds, paired tests, and (no defense) no difference
    between the adaptive and the non-adaptive attacker, whose models come from the same cache entries."""
    res = runner.invoke(app, ["audit", str(overfit_run), "--attacks", "loss,nn", "--shadows", "2", "--seeds", "2",
                              "--threat", "both"])
    assert res.exit_code == 0, res.output
    audit = json.loads((overfit_run / "audit.json").read_text())
    assert audit["seeds"]["count"] == 2 and set(audit["threats"]) == {"adaptive", "non-adaptive"}
    assert audit["shadows"]["trained_now"] == 0  # undefended: the non-adaptive attacker's shadows are the same
    for name in ("loss", "nn"):
        r = audit["variants"]["pruned"]["attacks"][name]
        assert r["models"] == {"targets": 2, "shadows": 2, "references": 0}
        seeds = r["across_seeds"]["auc"]
        assert len(seeds["values"]) == 2 and seeds["values"][0] == r["auc"] and seeds["sd"] >= 0
        assert 0.0 <= r["attack_accuracy"] <= r["oracle_balanced_accuracy"] + 0.05
        assert audit["variants"]["pruned"]["vs_dense"][name]["auc"]["p"] is not None
        cmp = audit["threat_comparison"]["pruned"][name]
        assert cmp["auc"]["diff"] == 0.0 and not cmp["auc"]["significant"]
    assert "adaptive vs non-adaptive" in res.output


def test_onnx_and_torch_paths_give_the_same_signals(overfit_run):
    from edgeprune import api
    from edgeprune.attack.signals import Signals, onnx_predictor, torch_predictor
    from edgeprune.recipe import Recipe, from_dict

    man = json.loads((overfit_run / "manifest.json").read_text())
    ctx = api.Context(from_dict(Recipe, man["recipe"]))
    x, y = ctx.arrays("nonmembers", 500)
    for rel, model in (("model.onnx", api.load_pruned(ctx, overfit_run)), ("dense/model.onnx", api.load_dense(ctx, overfit_run))):
        a = Signals(onnx_predictor(overfit_run / rel).predict(x).astype(np.float64), y)
        b = Signals(torch_predictor(model, "t").predict(x).astype(np.float64), y)
        assert np.abs(a.logits - b.logits).max() < 1e-4
        assert np.abs(a.loss - b.loss).max() < 1e-4 and np.abs(a.phi - b.phi).max() < 1e-4


def test_audit_on_torch_and_bad_options(overfit_run, tmp_path):
    res = runner.invoke(app, ["audit", str(overfit_run), "--on", "torch", "--attacks", "loss,entropy"])
    assert res.exit_code == 0, res.output
    audit = json.loads((overfit_run / "audit.json").read_text())
    assert set(audit["variants"]) == {"dense", "pruned"} and audit["on"].startswith("torch")
    for args, match in ((["--references", "1"], "at least 2"), (["--attacks", "telepathy"], "unknown attack"),
                        (["--on", "tflite"], "onnx or torch"), (["--data", "digits"], "was made on")):
        res = runner.invoke(app, ["audit", str(overfit_run), *args])
        assert res.exit_code == 2 and "Traceback" not in res.output and match in res.output, res.output
    res = runner.invoke(app, ["audit", str(tmp_path)])
    assert res.exit_code == 2 and "not an edgeprune run" in res.output


def test_audit_on_digits(tmp_path):
    out = tmp_path / "digits"
    recipe = {"train": {"epochs": 3}, "finetune": {"epochs": 1}, "bench": FAST_BENCH, "quant": {"mode": "none"}}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    res = runner.invoke(app, ["compress", "lenet5", "--data", "digits", "--recipe", str(tmp_path / "r.yaml"),
                              "-o", str(out)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["audit", str(out), "--attacks", "loss,mentr,nn,samia", "--shadows", "1"])
    assert res.exit_code == 0, res.output
    audit = json.loads((out / "audit.json").read_text())
    assert set(audit["variants"]["pruned"]["attacks"]) == {"loss", "mentr", "nn", "samia"}


def test_audit_a_user_model_with_train_test_membership(tmp_path):
    """An ONNX model trained elsewhere on an npz's train part: members are x_train, as the file says."""
    import torch
    from sklearn.datasets import make_classification

    from edgeprune.export.onnx import export_onnx
    from edgeprune.models.zoo import MLP
    from edgeprune.recipe import TrainConfig
    from edgeprune.train import train

    x, y = make_classification(3000, 40, n_informative=20, n_classes=10, n_clusters_per_class=1, random_state=0)
    x = x.astype(np.float32)
    np.savez(tmp_path / "d.npz", x_train=x[:600], y_train=y[:600], x_test=x[600:], y_test=y[600:])
    # the "user" trains on the standardised train part (edgeprune standardises npz features the same way)
    from edgeprune.data import load_dataset

    ds = load_dataset(f"npz:{tmp_path / 'd.npz'}")
    torch.manual_seed(0)
    m = MLP((40,), 10)
    train(m, torch.from_numpy(ds.x[:600]), torch.from_numpy(ds.y[:600]), TrainConfig(epochs=60), seed=0)
    export_onnx(m, (40,), tmp_path / "user.onnx")
    res = runner.invoke(app, ["audit", str(tmp_path / "user.onnx"), "--data", f"npz:{tmp_path / 'd.npz'}",
                              "--attacks", "loss,entropy,lira-online-fixed,nn", "--model", "mlp", "--shadows", "1",
                              "--references", "4", "-o", str(tmp_path / "aud")])
    assert res.exit_code == 0, res.output
    audit = json.loads((tmp_path / "aud" / "audit.json").read_text())
    assert audit["membership"] == "train-test" and audit["candidates"]["members"] == 600
    info = audit["variants"]["dense"]
    assert info["train_accuracy"] == 1.0 and info["attacks"]["loss"]["auc"] > 0.7
    assert set(info["attacks"]) == {"loss", "entropy", "lira-online-fixed", "nn"}
    assert (tmp_path / "aud" / "audit_roc.png").is_file()
    assert audit["numerics"]["dense"] == "onnxruntime fp32 on this CPU"
    # an int8 QDQ model is audited with reference QDQ semantics, the same on every CPU
    from edgeprune.quant.ptq import quantize_int8

    quantize_int8(tmp_path / "user.onnx", tmp_path / "user8.onnx", ds.x[:256])
    res = runner.invoke(app, ["audit", str(tmp_path / "user8.onnx"), "--data", f"npz:{tmp_path / 'd.npz'}",
                              "--attacks", "loss", "-o", str(tmp_path / "aud8")])
    assert res.exit_code == 0, res.output
    audit8 = json.loads((tmp_path / "aud8" / "audit.json").read_text())
    assert audit8["numerics"]["dense"].startswith("reference QDQ")
    assert audit8["variants"]["dense"]["attacks"]["loss"]["auc"] > 0.7
    # without the architecture, attacks that need attacker models cannot run: a clear error
    res = runner.invoke(app, ["audit", str(tmp_path / "user.onnx"), "--data", f"npz:{tmp_path / 'd.npz'}",
                              "--attacks", "nn", "--shadows", "1", "-o", str(tmp_path / "aud2")])
    assert res.exit_code == 2 and "architecture" in res.output
    res = runner.invoke(app, ["audit", str(tmp_path / "user.onnx"), "--data", "purchase-synth:2000"])
    assert res.exit_code == 2 and "train / test parts" in res.output
