"""Privacy-aware compression: defenses, the leakage-aware criterion, QAT / mixed precision, tune."""

import copy
import json
import math

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from edgeprune.cli import app
from edgeprune.data import load_dataset, make_split
from edgeprune.defend import build, parse
from edgeprune.errors import ConfigError, UserError
from edgeprune.models import build_model
from edgeprune.recipe import DefenseConfig, PruneConfig, Recipe, TrainConfig
from edgeprune.train import predict_logits, train

runner = CliRunner()


@pytest.fixture(scope="module")
def overfit():
    """purchase-synth with 5,000 members: an MLP fits them perfectly and the loss attack has AUC > 0.95."""
    ds = load_dataset("purchase-synth:20000")
    sp = make_split(ds, 0)
    x, y = torch.from_numpy(ds.x), torch.from_numpy(ds.y)
    return {"in_shape": ds.in_shape, "classes": ds.num_classes,
            "members": (x[sp.members], y[sp.members]), "nonmembers": (x[sp.nonmembers], y[sp.nonmembers]),
            "reference": (x[sp.pool[:2000]], y[sp.pool[:2000]])}


def _loss_auc(model, d) -> tuple[float, float]:
    """(loss attack AUC members vs non-members, test accuracy)."""
    (xm, ym), (xn, yn) = d["members"], d["nonmembers"]
    lm = F.cross_entropy(predict_logits(model, xm), ym, reduction="none")
    ln_logits = predict_logits(model, xn)
    ln = F.cross_entropy(ln_logits, yn, reduction="none")
    auc = roc_auc_score(np.r_[np.ones(len(lm)), np.zeros(len(ln))], -torch.cat([lm, ln]).numpy())
    return float(auc), float((ln_logits.argmax(1) == yn).float().mean())


def _trained(d, defense=None, epochs=10, teacher=None):
    torch.manual_seed(0)
    m = build_model("mlp", d["in_shape"], d["classes"])
    dfn = build(DefenseConfig(name=defense[0], strength=defense[1]), reference=d["reference"], teacher=teacher,
                seed=1) if defense else None
    train(m, *d["members"], TrainConfig(epochs=epochs), seed=0, defense=dfn)
    return m, dfn


@pytest.fixture(scope="module")
def undefended(overfit):
    return _trained(overfit)[0]


# kl (the authors' KL(second half || first half) of ranked posteriors) moves the loss attack least:
# 0.971 -> 0.951 here; it targets the shape of the posterior, not the loss
@pytest.mark.parametrize("defense,drop", [(("kl", 4.0), 0.01), (("advreg", 1.0), 0.02), (("relaxloss", 1.5), 0.02),
                                          (("distill-reg", 0.9), 0.02), (("dmp", None), 0.02)])
def test_each_defense_lowers_the_loss_attack_at_the_same_epochs(overfit, undefended, defense, drop):
    auc0, _ = _loss_auc(undefended, overfit)
    assert auc0 > 0.95  # the case is overfit
    model, _ = _trained(overfit, defense, teacher=undefended)
    auc, acc = _loss_auc(model, overfit)
    assert auc < auc0 - drop, (defense, auc0, auc)
    assert acc > 0.2  # it still learns the task


def test_dpsgd_lowers_leakage_and_reports_finite_epsilon(overfit):
    base, _ = _trained(overfit, epochs=3)
    model, dp = _trained(overfit, ("dpsgd", 1.0), epochs=3)
    info = dp.info()
    assert math.isfinite(info["epsilon"]) and 0 < info["epsilon"] < 50
    assert info["delta"] == pytest.approx(1 / 5000) and info["steps"] > 0
    assert _loss_auc(model, overfit)[0] < _loss_auc(base, overfit)[0] - 0.02
    # the accountant is Opacus' RDP accountant: more noise at the same steps gives a smaller epsilon
    from opacus.accountants import RDPAccountant

    acc = RDPAccountant()
    for _ in range(info["steps"]):
        acc.step(noise_multiplier=2.0, sample_rate=info["sample_rate"])
    assert acc.get_epsilon(delta=info["delta"]) < info["epsilon"]


def test_dpsgd_refuses_batchnorm_models_with_a_clear_error():
    x, y = torch.randn(40, 3, 8, 8), torch.randint(0, 4, (40,))
    m = build_model("resnet20", (3, 8, 8), 4)
    with pytest.raises(ConfigError, match="BatchNorm"):
        train(m, x, y, TrainConfig(epochs=1), seed=0, defense=build(DefenseConfig(name="dpsgd")))


def test_defense_parsing_and_validation():
    assert parse("kl:4") == ("kl", 4.0) and parse("relaxloss") == ("relaxloss", None)
    with pytest.raises(ConfigError, match="number"):
        parse("kl:strong")
    r = Recipe()
    r.defense.name = "magic"
    with pytest.raises(UserError, match="unknown defense"):
        r.validate()
    r.defense = DefenseConfig(name="distill-reg", strength=1.5)
    with pytest.raises(ConfigError, match=r"\[0.0, 1.0\]"):
        r.validate()
    with pytest.raises(ConfigError, match="reference"):
        build(DefenseConfig(name="advreg"), reference=None)


def test_leakage_criterion_prunes_memorising_channels_first(overfit):
    """Same dense model, same sparsity, same fine-tuning: the leakage-aware criterion leaks less than L1."""
    from edgeprune.prune import schedule

    torch.manual_seed(0)
    dense = build_model("mlp", overfit["in_shape"], overfit["classes"])
    train(dense, *overfit["members"], TrainConfig(epochs=10), seed=0)
    out = {}
    for crit in ("l1", "leakage"):
        m = copy.deepcopy(dense)
        plan, _ = schedule.run(m, overfit["in_shape"], *overfit["members"], PruneConfig(sparsity=0.5, criterion=crit),
                               TrainConfig(epochs=1), 1, reference=overfit["reference"])
        assert plan["criterion"] == crit
        train(m, *overfit["members"], TrainConfig(epochs=5, lr=5e-4), seed=1)
        out[crit] = _loss_auc(m, overfit)
    assert out["leakage"][0] < out["l1"][0] - 0.005, out
    assert out["leakage"][1] > out["l1"][1] - 0.02, out  # at no more than 2 points of accuracy
    with pytest.raises(ConfigError, match="reference"):
        schedule.run(copy.deepcopy(dense), overfit["in_shape"], *overfit["members"],
                     PruneConfig(sparsity=0.5, criterion="leakage"), TrainConfig(epochs=1), 1)


def test_fake_quant_grid_matches_onnxruntime(tmp_path):
    """Snapped weights sit on onnxruntime's grid: re-quantizing them in the QDQ export changes nothing."""
    from onnx import numpy_helper

    from edgeprune.export.onnx import export_onnx
    from edgeprune.quant.ptq import quantize_int8
    from edgeprune.quant.qat import snap

    torch.manual_seed(0)
    m = build_model("mlp", (20,), 5).eval()
    bits = {"net.1": 4, "net.3": 8, "net.5": 4}
    snap(m, bits)
    w = m.net[1].weight.detach().numpy()
    levels = max(len(np.unique(r)) for r in w)
    assert levels <= 15
    export_onnx(m, (20,), tmp_path / "f.onnx")
    q = quantize_int8(tmp_path / "f.onnx", tmp_path / "q.onnx", np.random.randn(64, 20).astype(np.float32),
                      weight_bits={f"{k}.weight": b for k, b in bits.items()})
    inits = {i.name: i for i in onnx.load(str(q)).graph.initializer}
    assert inits["net.1.weight_quantized"].data_type == onnx.TensorProto.INT4
    assert inits["net.3.weight_quantized"].data_type == onnx.TensorProto.INT8
    deq = numpy_helper.to_array(inits["net.1.weight_quantized"]).astype(np.float32) * \
        numpy_helper.to_array(inits["net.1.weight_scale"])[:, None]
    np.testing.assert_allclose(deq, w, rtol=1e-6, atol=1e-7)


def test_mixed_precision_qdq_verifies_in_onnxruntime(overfit, undefended, tmp_path):
    from edgeprune.export.onnx import onnx_predict
    from edgeprune.pipeline import quantize_model

    r = Recipe()
    r.quant.mode, r.quant.target_bits, r.quant.max_acc_drop = "mixed", 4.0, 1.0
    calib = overfit["members"][0][:256].numpy()
    path, info = quantize_model(undefended, overfit["in_shape"], calib, r, tmp_path / "mixed.onnx",
                                *overfit["members"], overfit["reference"])
    mixed = info["mixed"]
    assert all(b == 4 for b in mixed["bits"].values()) and mixed["target_met"]
    types = {i.name: i.data_type for i in onnx.load(str(path)).graph.initializer if i.name.endswith("weight_quantized")}
    assert set(types.values()) == {onnx.TensorProto.INT4}
    xn, yn = overfit["nonmembers"]
    q = onnx_predict(path, xn.numpy())
    f = predict_logits(undefended, xn).numpy()
    assert (q.argmax(1) == f.argmax(1)).mean() > 0.7  # a 4-bit model still tracks the fp32 one
    # an accuracy limit of zero keeps every layer whose 4-bit version costs accuracy at 8 bits
    r.quant.max_acc_drop = 0.0
    _, strict = quantize_model(undefended, overfit["in_shape"], calib, r, tmp_path / "strict.onnx",
                               *overfit["members"], overfit["reference"])
    s = strict["mixed"]
    assert s["baseline_int8"]["accuracy"] - s["accuracy"] <= 1e-9
    assert s["average_bits"] >= mixed["average_bits"]


def test_compress_with_defense_qat_and_mixed_precision_end_to_end(tmp_path):
    out = tmp_path / "run"
    res = runner.invoke(app, ["compress", "mlp", "--data", "digits", "--epochs", "5", "--finetune-epochs", "2",
                              "--defense", "kl:4", "--criterion", "leakage", "--quant", "mixed", "--qat-epochs", "1",
                              "--target-bits", "6", "-o", str(out)])
    assert res.exit_code == 0, res.output
    m = json.loads((out / "manifest.json").read_text())
    assert m["stages"]["finetune"]["results"]["defense"] == {"defense": "kl", "strength": 4.0}
    q = m["stages"]["quantize"]["results"]
    assert q["qat"]["epochs"] == 1 and q["mode"] == "mixed" and "model.mixed.onnx" in m["artifacts"]
    audit = json.loads((out / "audit.json").read_text())
    assert audit["variants"]["pruned+mixed"]["artifact"] == "model.mixed.onnx"
    report = (out / "report.md").read_text()
    assert "defense kl:4.0" in report and "pruned+mixed" in report and "(leakage)" in report


@pytest.mark.parametrize("args,match", [
    (["--defense", "magic"], "unknown defense"),
    (["--defense", "kl:lots"], "number"),
    (["--defense", "dpsgd", "--qat-epochs", "1"], "QAT with dpsgd"),
    (["--quant", "mixed", "--target-bits", "3"], "target_bits"),
    (["--criterion", "leakage", "--method", "block"], "leakage criterion"),
])
def test_privacy_options_fail_cleanly(args, match, tmp_path):
    out = tmp_path / "run"
    res = runner.invoke(app, ["compress", "mlp", "--data", "digits", "--epochs", "1", "--finetune-epochs", "1",
                              *args, "-o", str(out)])
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and match in res.output


def test_tune_respects_budgets_and_reports_the_front(tmp_path):
    from edgeprune.tune import pareto

    common = ["tune", "mlp", "--data", "digits", "--epochs", "8", "--finetune-epochs", "2", "--sparsity", "0.3,0.6",
              "--defense", "none,relaxloss:1"]
    res = runner.invoke(app, [*common, "--max-acc-drop", "100", "--max-auc", "1.0", "--objective", "latency",
                              "-o", str(tmp_path / "loose")])
    assert res.exit_code == 0, res.output
    t = json.loads((tmp_path / "loose" / "tune.json").read_text())
    assert len(t["trials"]) == 4 and t["chosen"] is not None
    chosen = next(x for x in t["trials"] if x["id"] == t["chosen"])
    fastest = min(x["metrics"]["latency_ms"] for x in t["trials"])
    assert chosen["metrics"]["latency_ms"] == fastest
    front = pareto(t["trials"])
    assert [t["trials"][i]["id"] for i in front] == t["pareto"] and t["pareto"]
    def costs(m):  # lower is better on every axis; a TPR below resolution counts as the worst (1.0)
        s = m["selection"]
        return (m["latency_ms"], -s["accuracy"], s["auc"], 1.0 if s["tpr_at_0.1"] is None else s["tpr_at_0.1"])

    for i in front:  # nobody is at least as good as a front member on every axis and better on one
        a = costs(t["trials"][i]["metrics"])
        for b in (costs(x["metrics"]) for x in t["trials"]):
            assert not (all(y <= x for y, x in zip(b, a, strict=True)) and b != a), (a, b)
    off = [costs(x["metrics"]) for k, x in enumerate(t["trials"]) if k not in front]
    for a in off:  # and every trial off the front is dominated by one on it
        assert any(all(y <= x for y, x in zip(costs(t["trials"][i]["metrics"]), a, strict=True)) for i in front), a
    assert (tmp_path / "loose" / "tune_pareto.png").stat().st_size > 1000
    # the chosen trial as a standalone recipe: the searched settings, its own dense training (no weights)
    from edgeprune.defend import parse
    from edgeprune.recipe import load_recipe

    shipped = load_recipe(tmp_path / "loose" / "chosen.yaml")
    assert shipped.weights is None and shipped.model == "mlp" and shipped.train.epochs == 8
    assert shipped.prune.sparsity == chosen["config"]["sparsity"]
    assert (shipped.defense.name, shipped.defense.strength) == parse(chosen["config"]["defense"])
    # an impossible budget: the command says so and chooses nothing (the dense model and trials are reused)
    res = runner.invoke(app, [*common, "--max-auc", "0.01", "-o", str(tmp_path / "loose")])
    assert res.exit_code == 0, res.output
    t = json.loads((tmp_path / "loose" / "tune.json").read_text())
    assert t["chosen"] is None and "no configuration met the budgets" in res.output
    assert not (tmp_path / "loose" / "chosen.yaml").exists()  # the earlier search's choice is not left behind
    assert all(x["violations"] and not x["feasible"] for x in t["trials"])


def test_tune_rejects_bad_budgets(tmp_path):
    res = runner.invoke(app, ["tune", "mlp", "--data", "digits", "--objective", "speed", "-o", str(tmp_path / "t")])
    assert res.exit_code == 2 and "unknown objective" in res.output
    res = runner.invoke(app, ["tune", "mlp", "--data", "digits", "--sparsity", "0.5,x", "-o", str(tmp_path / "t")])
    assert res.exit_code == 2 and "comma-separated numbers" in res.output


def test_successive_halving_promotes_the_best_third(tmp_path, monkeypatch):
    """Rung 0 runs every configuration with a third of the fine-tuning; the best third (feasible first, then
    the objective) is rerun in full; only full-budget trials form the front and the choice."""
    from edgeprune import tune as T

    def fake_execute(args, execution, label):
        out = []
        for recipe, path, _ in args:
            s, d = recipe["prune"]["sparsity"], recipe["defense"]["name"]
            acc = 0.9 - s / 2 - (0.05 if d != "none" else 0.0)
            auc = 0.95 - s / 4 - (0.1 if d != "none" else 0.0)
            row = {"variant": "pruned+int8", "test_accuracy": acc, "onnx_kb": 100 * (1 - s),
                   "attacks": {"loss": {"auc": auc, "tpr@0.001fpr": auc / 10}},
                   "validation": {"n": 500, "accuracy": acc, "max_auc": auc, "max_tpr@0.001fpr": auc / 10},
                   "latency": {"1": {"p50_ms": 1 - s, "speedup_vs_dense": 1 / (1 - s)}}}
            dense = {"variant": "dense", "test_accuracy": 0.9, "attacks": {"loss": {"auc": 0.99}},
                     "validation": {"n": 500, "accuracy": 0.9, "max_auc": 0.99, "max_tpr@0.001fpr": 0.1}}
            out.append({"dir": path, "report": {"rows": [dense, row]}, "epochs": recipe["finetune"]["epochs"]})
        return out

    monkeypatch.setattr(T, "_execute", fake_execute)
    base = Recipe()
    base.weights = str(tmp_path / "w.safetensors")  # no dense training: the fake runs never read it
    space = T.Space(sparsity=[0.2, 0.5, 0.8], defense=["none", "kl:4"])
    res = T.tune(base, space, T.Budget(max_acc_drop=30, objective="auc"), tmp_path / "t", search="halving")
    low = [t for t in res["trials"] if t["rung"] == 0]
    full = [t for t in res["trials"] if t["rung"] == 1]
    assert len(low) == 6 and len(full) == 2
    assert all(t["finetune_epochs"] == base.finetune.epochs // 3 for t in low)
    assert all(t["finetune_epochs"] == base.finetune.epochs for t in full)
    # feasible (drop <= 30 points) with the lowest AUC: sparsity 0.5 with kl, then 0.2 with kl
    assert {(t["config"]["sparsity"], t["config"]["defense"]) for t in full} == {(0.5, "kl:4"), (0.2, "kl:4")}
    chosen = next(t for t in full if t["id"] == res["chosen"])
    assert chosen["config"] == {"sparsity": 0.5, "method": "structured", "criterion": "l1", "defense": "kl:4",
                                "quant": "int8"}
    assert set(res["pareto"]) <= {t["id"] for t in full}
