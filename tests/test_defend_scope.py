"""Defenses through training (scope, rewind), faithful defenses (relaxloss clamp, DMP, AdvReg's label, KL),
the less-overfit training options, and the DP-SGD positive control."""

import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from edgeprune import pipeline
from edgeprune.cli import app
from edgeprune.defend import build
from edgeprune.defend.base import Step
from edgeprune.defend.kl import KLBalancing
from edgeprune.errors import ConfigError
from edgeprune.models import build_model
from edgeprune.recipe import DefenseConfig, Recipe, TrainConfig, from_dict
from edgeprune.train import predict_logits, train

runner = CliRunner()


@pytest.fixture(scope="module")
def small():
    """A small 10-class tabular task: 400 members, 400 held-out samples as the defender's reference."""
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(10, 20, generator=g) * 2
    y = torch.randint(0, 10, (1200,), generator=g)
    x = centers[y] + torch.randn(1200, 20, generator=g)
    return {"members": (x[:400], y[:400]), "reference": (x[400:800], y[400:800]), "test": (x[800:], y[800:])}


def _recipe(**kw) -> Recipe:
    d = {"train": {"epochs": 3, "batch_size": 100}, "finetune": {"epochs": 2, "batch_size": 100},
         "quant": {"mode": "none"}, "prune": {"sparsity": 0.5, "round_to": 1}}
    for k, v in kw.items():
        d.setdefault(k, {}).update(v)
    return from_dict(Recipe, d).validate()


def _mlp(seed=0):
    torch.manual_seed(seed)
    return build_model("mlp", (20,), 10)


@pytest.fixture
def kl_calls(monkeypatch):
    """Every call of the KL defense's loss term, with the epoch it came from."""
    calls = []
    orig = KLBalancing.loss

    def spy(self, model, xb, yb, logits, ce, state):
        calls.append(state.epoch)
        return orig(self, model, xb, yb, logits, ce, state)

    monkeypatch.setattr(KLBalancing, "loss", spy)
    return calls


@pytest.mark.parametrize("scope,in_train,in_finetune", [("finetune", 0, 8), ("train", 12, 0), ("both", 12, 8)])
def test_scope_decides_which_trainings_use_the_defense_loss(small, kl_calls, scope, in_train, in_finetune):
    """3 dense epochs x 4 batches and 2 fine-tuning epochs x 4 batches: the KL term is used exactly where
    the scope says, in the dense training too (the pipeline the attacker's shadows go through)."""
    r = _recipe(defense={"name": "kl", "strength": 4.0, "scope": scope})
    dense = _mlp()
    trained = pipeline.train_dense(dense, *small["members"], r, seed=0, reference=small["reference"])
    assert len(kl_calls) == in_train
    assert (trained.defense is not None) == bool(in_train)
    pipeline.finetune(dense, *small["members"], r, seed=1, reference=small["reference"])
    assert len(kl_calls) == in_train + in_finetune
    # run_pipeline (shadows / references) trains, prunes and fine-tunes the same way
    kl_calls.clear()
    pipeline.run_pipeline(lambda: _mlp(), (20,), *small["members"], r, 0, None, "shadow", reference=small["reference"])
    assert len(kl_calls) == in_train + in_finetune


def test_scope_train_changes_the_dense_weights(small):
    plain, defended = _mlp(), _mlp()
    pipeline.train_dense(plain, *small["members"], _recipe(defense={"name": "kl", "strength": 4.0}), seed=0)
    pipeline.train_dense(defended, *small["members"], _recipe(defense={"name": "kl", "strength": 4.0, "scope": "train"}),
                         seed=0)
    w0, w1 = plain.net[1].weight, defended.net[1].weight
    assert not torch.allclose(w0, w1)


def test_scope_train_with_a_teacher_defense_trains_an_undefended_teacher_first(small):
    r = _recipe(defense={"name": "dmp", "scope": "train"})
    trained = pipeline.train_dense(_mlp(), *small["members"], r, seed=0, reference=small["reference"])
    assert trained.teacher is not None and trained.defense["defense"] == "dmp"
    plain = _mlp()
    pipeline.train_dense(plain, *small["members"], _recipe(), seed=0)
    torch.testing.assert_close(trained.teacher.state_dict(), plain.state_dict())  # the undefended model


def test_rewind_restores_the_stated_weights(small):
    init = {k: v.clone() for k, v in _mlp().state_dict().items()}
    for spec, epochs_before in (("init", 0), ("epoch:1", 1)):
        r = _recipe(prune={"rewind": spec}, train={"schedule": "constant"})
        trained = pipeline.train_dense(_mlp(), *small["members"], r, seed=0)
        expect = _mlp()
        if epochs_before:  # the first epoch of a constant-rate run does not depend on the total epochs
            train(expect, *small["members"], dataclasses.replace(r.train, epochs=epochs_before), seed=0)
        else:
            torch.testing.assert_close(expect.state_dict(), init)
        torch.testing.assert_close(trained.rewind, expect.state_dict())
    # the pruned architecture carries the rewound weights of exactly the kept channels
    dense = _mlp()
    trained = pipeline.train_dense(dense, *small["members"], _recipe(prune={"rewind": "init"}), seed=0)
    pruned = _mlp()
    pruned.load_state_dict(dense.state_dict())
    plan, _ = pipeline.plan_for(pruned, (20,), _recipe(), *small["members"], seed=1)
    rew = pipeline.rewound(_mlp, trained.rewind, plan)
    op = next(o for o in plan["ops"] if o["module"] == "net.1" and o["fn"] == "prune_out_channels")
    kept = [i for i in range(512) if i not in set(op["idxs"])]
    torch.testing.assert_close(rew.net[1].weight, init["net.1.weight"][kept])
    assert rew.net[1].weight.shape == pruned.net[1].weight.shape
    assert not torch.allclose(rew.net[1].weight, pruned.net[1].weight)


def test_rewind_and_scope_are_validated():
    with pytest.raises(ConfigError, match="rewind"):
        _recipe(prune={"rewind": "epoch:9"})
    with pytest.raises(ConfigError, match="none, init or epoch:K"):
        _recipe(prune={"rewind": "epoch:x"})
    with pytest.raises(ConfigError, match="scope"):
        _recipe(defense={"scope": "everywhere"})
    r = _recipe(defense={"name": "kl", "scope": "train"})
    r.weights = "w.safetensors"
    with pytest.raises(ConfigError, match="trained here"):
        r.validate()


def test_compress_with_scope_train_and_rewind_end_to_end(tmp_path):
    out = tmp_path / "run"
    res = runner.invoke(app, ["compress", "mlp", "--data", "digits", "--epochs", "4", "--finetune-epochs", "3",
                              "--defense", "relaxloss", "--defense-scope", "both", "--rewind", "init",
                              "--quant", "none", "-o", str(out)])
    assert res.exit_code == 0, res.output
    m = json.loads((out / "manifest.json").read_text())
    st = m["stages"]
    assert st["train"]["results"]["defense"]["defense"] == "relaxloss"
    assert st["train"]["results"]["rewind"] == "init" and "dense/rewind.safetensors" in m["artifacts"]
    ft = st["finetune"]["results"]
    assert ft["scope"] == "both" and ft["rewind"] == "init" and ft["defense"]["defense"] == "relaxloss"
    assert ft["test_accuracy_before"] < 0.3  # rewound to the initialisation: chance level on 10 classes
    assert ft["test_accuracy"] > 0.5  # retrained under the defense
    res = runner.invoke(app, ["compress", "mlp", "--data", "digits", "--rewind", "later", "-o", str(tmp_path / "x")])
    assert res.exit_code == 2 and "rewind" in res.output and "Traceback" not in res.output


# --- faithful defenses -------------------------------------------------------------------------------

def test_relaxloss_clamps_the_target_confidence_at_upper():
    d = build(DefenseConfig(name="relaxloss"), data="purchase-synth")
    logits = torch.tensor([[4.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])  # p_true 0.948 and 0.25
    y = torch.tensor([0, 1])
    d._resolve(images=False)
    assert (d.alpha, d.upper, d.setting) == (0.8, 0.3, "purchase")  # the released Purchase configuration
    t = d.soft_targets(logits, y)
    torch.testing.assert_close(t[0], torch.tensor([0.3, 0.7 / 3, 0.7 / 3, 0.7 / 3]))
    torch.testing.assert_close(t[1], torch.tensor([0.25, 0.25, 0.25, 0.25]))  # below upper: kept
    # odd epoch, loss below alpha: the loss is the soft cross-entropy towards the clamped targets
    confident = torch.tensor([[6.0, 0.0, 0.0, 0.0], [0.0, 6.0, 0.0, 0.0]])
    loss = d.loss(None, torch.zeros(2, 3), y, confident, F.cross_entropy(confident, y), Step(1, 0))
    soft = d.soft_targets(confident, y)
    torch.testing.assert_close(loss, -(soft * F.log_softmax(confident, 1)).sum(1).mean())
    assert soft[:, :1].max() == pytest.approx(0.3)
    # even epoch: |CE - alpha| (gradient ascent below alpha)
    loss = d.loss(None, torch.zeros(2, 3), y, confident, None, Step(0, 0))
    assert float(loss) == pytest.approx(abs(float(F.cross_entropy(confident, y)) - 0.8))
    # a user's upper wins; other data sets get the released values of their kind
    assert build(DefenseConfig(name="relaxloss", upper=0.5), data="texas100:x").upper == 0.5
    d = build(DefenseConfig(name="relaxloss"), data="cifar100:dir")
    d._resolve(images=True)
    assert (d.alpha, d.upper) == (3.0, 1.0)


def test_dmp_student_never_sees_a_member_gradient(small):
    """Members full of NaN: one member gradient would make the student's weights NaN. The student learns
    the task from the teacher's soft labels on the reference data alone, from scratch."""
    teacher = _mlp()
    train(teacher, *small["members"], TrainConfig(epochs=10), seed=0)
    start = _mlp(5)
    d = build(DefenseConfig(name="dmp", temperature=2.0), reference=small["reference"], teacher=teacher, seed=3)
    student = _mlp(5)
    xm, ym = small["members"]
    seen = []
    student.register_forward_pre_hook(lambda m, a: seen.append(bool(torch.isnan(a[0]).any())))
    train(student, torch.full_like(xm, float("nan")), ym, TrainConfig(epochs=10), seed=0, defense=d)
    assert not any(seen)
    assert all(torch.isfinite(p).all() for p in student.parameters())
    assert not torch.allclose(student.net[1].weight, start.net[1].weight)
    xt, yt = small["test"]
    assert (predict_logits(student, xt).argmax(1) == yt).float().mean() > 0.8
    assert d.info()["reference_samples_used"] == 400 and d.info()["member_gradients"] == 0
    # strength keeps the reference samples the teacher is surest about
    d = build(DefenseConfig(name="dmp", strength=0.25), reference=small["reference"], teacher=teacher)
    xr, _ = d.training_set(xm, ym)
    p = F.softmax(predict_logits(teacher, small["reference"][0]), 1)
    ent = -(p * p.clamp_min(1e-12).log()).sum(1)
    assert len(xr) == 100 and ent.sort().values[99] >= (-(F.softmax(predict_logits(teacher, xr), 1)
                                                           * F.log_softmax(predict_logits(teacher, xr), 1)).sum(1)).max() - 1e-5


def test_dmp_hard_labels_mix_the_reference_labels_and_at_one_drop_the_teacher(small):
    """hard_labels w: (1 - w) * distillation + w * cross-entropy on the reference samples' own labels; at 1 the
    teacher is never called; the members stay unseen (NaN); outside [0, 1]: a clear error (like temperature,
    other defenses ignore it: a tune's base recipe may carry it)."""
    teacher = _mlp()
    train(teacher, *small["members"], TrainConfig(epochs=10), seed=0)
    xm, ym = small["members"]
    xr, yr = small["reference"]
    logits = _mlp(5)(xr[:50])
    ce = F.cross_entropy(logits, yr[:50])
    soft = build(DefenseConfig(name="dmp"), reference=small["reference"], teacher=teacher).loss(
        None, xr[:50], yr[:50], logits, ce, Step(0, 0))
    d = build(DefenseConfig(name="dmp", hard_labels=0.25), reference=small["reference"], teacher=teacher)
    xs, ys = d.training_set(xm, ym)
    assert torch.equal(ys, yr)  # the reference data's own labels, not the teacher's argmax
    torch.testing.assert_close(d.loss(None, xr[:50], yr[:50], logits, ce, Step(0, 0)), 0.75 * soft + 0.25 * ce)
    calls = []
    teacher.register_forward_hook(lambda *a: calls.append(1))
    only = build(DefenseConfig(name="dmp", hard_labels=1.0), reference=small["reference"], teacher=teacher, seed=3)
    student = _mlp(5)
    train(student, torch.full_like(xm, float("nan")), ym, TrainConfig(epochs=10), seed=0, defense=only)
    # one teacher call: the entropy ranking of the reference data before training, none per batch
    assert calls == [1] and all(torch.isfinite(p).all() for p in student.parameters())
    xt, yt = small["test"]
    assert (predict_logits(student, xt).argmax(1) == yt).float().mean() > 0.8
    assert only.info()["hard_labels"] == 1.0 and only.info()["member_gradients"] == 0
    for bad in (1.5, -0.1):
        with pytest.raises(ConfigError, match="hard_labels"):
            from_dict(Recipe, {"defense": {"name": "dmp", "hard_labels": bad}}).validate()


def test_compress_with_a_dmp_hard_labels_recipe_end_to_end(tmp_path):
    """A recipe's defense.hard_labels reaches the fine-tuning: the run records it, no member gradient."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text("defense: {name: dmp, reference_samples: 600, hard_labels: 0.5}\n")
    out = tmp_path / "run"
    res = runner.invoke(app, ["compress", "mlp", "--data", "digits", "--recipe", str(recipe), "--epochs", "4",
                              "--finetune-epochs", "8", "--quant", "none", "-o", str(out)])
    assert res.exit_code == 0, res.output
    ft = json.loads((out / "manifest.json").read_text())["stages"]["finetune"]["results"]
    assert ft["defense"]["defense"] == "dmp" and ft["defense"]["hard_labels"] == 0.5
    assert ft["defense"]["member_gradients"] == 0 and ft["defense"]["reference_samples_used"] == 600
    assert ft["test_accuracy"] > 0.7  # digits: the student learns from 600 reference samples
    assert "defense dmp:1.0 + reference labels 0.5" in (out / "report.md").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text("defense: {name: dmp, hard_labels: 2}\n")
    res = runner.invoke(app, ["compress", "mlp", "--data", "digits", "--recipe", str(bad), "-o", str(tmp_path / "x")])
    assert res.exit_code == 2 and "hard_labels" in res.output and "Traceback" not in res.output


def test_dmp_starts_from_scratch_even_after_pruning(small):
    teacher = _mlp()
    train(teacher, *small["members"], TrainConfig(epochs=3), seed=0)
    d = build(DefenseConfig(name="dmp"), reference=small["reference"], teacher=teacher, seed=3)
    model = _mlp()
    model.load_state_dict(teacher.state_dict())
    d.prepare(model, None, 0, 1, 1)
    assert not torch.allclose(model.net[1].weight, teacher.net[1].weight)
    d2 = build(DefenseConfig(name="dmp"), reference=small["reference"], teacher=teacher, seed=3)
    d2.from_scratch = False  # QAT of an already protected model keeps its weights
    model.load_state_dict(teacher.state_dict())
    d2.prepare(model, None, 0, 1, 1)
    torch.testing.assert_close(model.net[1].weight, teacher.net[1].weight)


def test_advreg_inference_model_receives_the_label_and_the_unsorted_prediction(small, monkeypatch):
    from edgeprune.defend import advreg

    seen = []
    orig = advreg.InferenceModel.forward

    def spy(self, probs, onehot):
        seen.append((probs.detach().clone(), onehot.clone()))
        return orig(self, probs, onehot)

    monkeypatch.setattr(advreg.InferenceModel, "forward", spy)
    d = build(DefenseConfig(name="advreg"), reference=small["reference"], seed=0)
    model = _mlp()
    d.prepare(model, None, 400, 8, 1)
    xb, yb = small["members"][0][:8], small["members"][1][:8]
    logits = model(xb)
    d.loss(model, xb, yb, logits, F.cross_entropy(logits, yb), Step(0, 0))
    probs, onehot = seen[0]  # the first call scores the member batch
    torch.testing.assert_close(onehot, F.one_hot(yb, 10).float())
    torch.testing.assert_close(probs, F.softmax(logits.detach(), 1))  # class order, not sorted
    # and the label changes the inference model's answer
    h = d.h
    other = F.one_hot((yb + 1) % 10, 10).float()
    assert not torch.allclose(orig(h, probs, onehot), orig(h, probs, other))


def test_kl_matches_the_authors_direction():
    """mia_prune's train_defend_ppb: kl_div(log_softmax(ranked first half), softmax(ranked second half))."""
    d = build(DefenseConfig(name="kl", strength=2.0))
    torch.manual_seed(0)
    logits = torch.randn(7, 5)
    ce = torch.tensor(1.0)
    ranked = logits.sort(1, descending=True).values
    p, q = F.softmax(ranked[3:6], 1), F.softmax(ranked[:3], 1)
    kl = (p * (p.log() - q.log())).sum(1).mean()  # KL(second || first)
    out = d.loss(None, torch.zeros(7, 1), None, logits, ce, Step(0, 0))
    torch.testing.assert_close(out, ce + 2.0 * kl)


# --- less overfit baselines ----------------------------------------------------------------------------

def test_label_smoothing_and_weight_decay_shrink_member_confidence(small):
    xm, ym = small["members"]
    conf = {}
    for name, cfg in (("plain", TrainConfig(epochs=15)), ("ls", TrainConfig(epochs=15, label_smoothing=0.2)),
                      ("wd", TrainConfig(epochs=15, weight_decay=0.05, optimizer="sgd", lr=0.05))):
        m = _mlp()
        train(m, xm, ym, cfg, seed=0)
        conf[name] = float(F.softmax(predict_logits(m, xm), 1).max(1).values.mean())
    assert conf["ls"] < conf["plain"] - 0.05
    assert conf["wd"] < conf["plain"] - 0.05


def test_early_stopping_keeps_the_best_validation_epoch(small):
    xm, ym = small["members"]
    val = small["reference"]
    losses = []
    m = _mlp()
    train(m, xm, ym, TrainConfig(epochs=30, lr=1e-2, schedule="constant"), seed=0,
          on_epoch=lambda k, mm: losses.append(float(F.cross_entropy(predict_logits(mm, val[0]), val[1]))))
    best = int(np.argmin(losses))
    stopped = _mlp()
    hist = train(stopped, xm, ym, TrainConfig(epochs=30, lr=1e-2, schedule="constant", early_stopping=3), seed=0,
                 validation=val)
    assert len(hist) == min(30, best + 1 + 3)
    assert float(F.cross_entropy(predict_logits(stopped, val[0]), val[1])) == pytest.approx(losses[best], rel=1e-5)
    with pytest.raises(ConfigError, match="reference"):
        train(_mlp(), xm, ym, TrainConfig(epochs=1, early_stopping=2), seed=0)


def test_crop_flip_is_seeded_and_keeps_the_content():
    from edgeprune.train import crop_flip

    x = torch.arange(2 * 1 * 8 * 8, dtype=torch.float32).reshape(2, 1, 8, 8)
    a = crop_flip(x, torch.Generator().manual_seed(0))
    b = crop_flip(x, torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, b)
    assert a.shape == x.shape and not torch.equal(a, x)
    # every output pixel is an input pixel of the same image or zero padding
    for i in range(2):
        assert set(a[i].flatten().tolist()) <= set(x[i].flatten().tolist()) | {0.0}
    with pytest.raises(ConfigError, match="augment"):
        _recipe(train={"augment": "rotate"})


# --- the positive control ------------------------------------------------------------------------------

@pytest.mark.slow
def test_dpsgd_from_scratch_brings_every_variant_to_chance(tmp_path):
    """DP-SGD at large noise over the whole dense training (scope train) with no undefended fine-tuning
    afterwards: the deployed weights are a post-processing of the DP model, so every attack must sit at
    chance on every variant (dense, pruned, int8). The same run without the defense leaks, so the audit
    can see leakage here: if the DP run did not sit at chance, something in the pipeline would leak."""
    from edgeprune import api

    def run(defense, name):
        r = from_dict(Recipe, {
            "model": "mlp", "data": "purchase-synth:4000", "train": {"epochs": 3, "lr": 1e-2, "batch_size": 256},
            "finetune": {"epochs": 0}, "defense": defense, "quant": {"mode": "int8"},
            "export": {"max_int8_drop": 1.0}, "audit": {"attacks": ["loss", "confidence"]},
        }).validate()
        out = api.compress(r, tmp_path / name, log=lambda m: None,
                           stages=["train", "prune", "finetune", "export", "quantize", "audit"])
        return json.loads((out / "audit.json").read_text()), json.loads((out / "manifest.json").read_text())

    audit, m = run({"name": "dpsgd", "strength": 4.0, "scope": "train"}, "dp")
    info = m["stages"]["train"]["results"]["defense"]
    assert 0 < info["epsilon"] < 2 and info["scope"].startswith("the dense model's training")
    assert set(audit["variants"]) == {"dense", "pruned", "pruned+int8"}
    for variant, v in audit["variants"].items():
        for name, a in v["attacks"].items():
            assert a["auc"] <= 0.6, (variant, name, a["auc"])
    plain, _ = run({"name": "none"}, "plain")
    assert plain["variants"]["pruned+int8"]["attacks"]["loss"]["auc"] > 0.8


def test_tune_trials_train_their_own_dense_model_when_the_scope_covers_training():
    from edgeprune.tune import trial_recipe

    point = {"sparsity": 0.5, "method": "structured", "criterion": "l1", "defense": "dmp", "quant": "int8"}
    base = Recipe()
    base.defense.scope = "both"
    assert trial_recipe(base, point, "dense.safetensors").weights is None
    assert trial_recipe(base, {**point, "defense": "none"}, "dense.safetensors").weights == "dense.safetensors"
    base.defense.scope = "finetune"
    assert trial_recipe(base, point, "dense.safetensors").weights == "dense.safetensors"
