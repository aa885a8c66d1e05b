"""Scaling the attacker's workload: the batched ensemble trainer, the executors (a real local Ray cluster,
no mocks) and resuming an interrupted audit from the content-addressed cache."""

import copy
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from edgeprune.recipe import ExecConfig, TrainConfig

ATTACKS = ["loss", "lira-online", "lira-offline", "rmia"]


def _close_weights(a, b):
    return max(float((x.float() - y.float()).abs().max()) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


@pytest.mark.parametrize("arch,in_shape,extra", [
    ("mlp", (20,), {}),
    ("mlp", (20,), {"label_smoothing": 0.1, "early_stopping": 1}),
    ("resnet20", (1, 8, 8), {}),
    ("resnet20", (1, 8, 8), {"augment": "crop-flip", "label_smoothing": 0.1}),
])
def test_batched_strategy_trains_each_member_as_fit_would(arch, in_shape, extra):
    """The engine's batched strategy: members with their own data (unequal sizes: padded last batches), seeds,
    pruning masks, label smoothing, crop-flip draws and per-member early stopping end where one-by-one ``fit``
    ends, up to float rounding (BatchNorm included), and their histories agree."""
    from edgeprune.engine import fit, fit_many
    from edgeprune.models import build_model

    torch.manual_seed(0)
    x = torch.randn(260, *in_shape)
    y = torch.randint(0, 5, (260,))
    data = [(x[:100], y[:100]), (x[100:197], y[100:197]), (x[160:], y[160:])]
    cfg = TrainConfig(epochs=3 if extra.get("early_stopping") else 2, batch_size=32, lr=1e-3,
                      **extra)
    val = [(x[i::7][:40], y[i::7][:40]) for i in range(3)] if extra.get("early_stopping") else [None] * 3
    models = [build_model(arch, in_shape, 5) for _ in data]
    name = next(n for n, p in models[0].named_parameters() if p.dim() >= 2)
    masks = [{name: (torch.rand_like(dict(m.named_parameters())[name]) > 0.5).float()} for m in models]
    ref = copy.deepcopy(models)
    hist = fit_many(models, data, cfg, [3, 4, 5], masks, validations=val)
    for m, r, (xs, ys), seed, mk, h, v in zip(models, ref, data, [3, 4, 5], masks, hist, val, strict=True):
        h_ref = fit(r, xs, ys, cfg, seed=seed, masks=mk, validation=v)
        # ResNet-20: grouped convs and BatchNorm round differently, and Adam turns a rounding-level gradient of
        # a near-zero element into a step of up to lr; a conv net without BatchNorm is within 1e-5
        # (test_pipeline_matrix)
        assert _close_weights(m, r) < (1e-5 if arch == "mlp" else 2e-3)
        assert len(h) == len(h_ref) and np.allclose(h, h_ref, rtol=1e-4 if arch == "mlp" else 1e-3)
        assert float((dict(m.named_parameters())[name].detach() * (1 - mk[name])).abs().max()) == 0.0  # masks held
    with pytest.raises(ValueError, match="same architecture"):
        fit_many([build_model("mlp", (20,), 5), build_model("mlp", (21,), 5)], data[:2], cfg, [0, 1])


def test_executors_agree_and_send_shared_data_once():
    from edgeprune.executor import Task, make_executor

    tasks = [Task(i, units=2) for i in range(5)]
    shared = np.arange(10)
    out = {}
    for name in ("local", "process"):
        got = {}
        make_executor(ExecConfig(executor=name, workers=2)).run(_square_plus_sum, tasks, shared,
                                                                lambda i, r, g=got: g.__setitem__(i, r), "t")
        out[name] = got
    assert out["local"] == out["process"] == {i: i * i + 45 for i in range(5)}


def _square_plus_sum(shared, i):
    return i * i + int(shared.sum())


def test_where_work_runs_is_not_part_of_a_runs_identity(tmp_path):
    """A run started in-process can be resumed on Ray: the recipe hash leaves out the exec section."""
    from edgeprune.recipe import Recipe
    from edgeprune.run import Run

    a, b = Recipe().to_dict(), Recipe().to_dict()
    b["exec"]["executor"], b["exec"]["ensemble"] = "ray", 1
    old = {k: v for k, v in a.items() if k != "exec"}  # runs made before the section existed
    hashes = {Run(tmp_path / n, d).recipe_hash for n, d in (("a", a), ("b", b), ("c", old))}
    assert len(hashes) == 1
    b["train"]["epochs"] += 1
    assert Run(tmp_path / "d", b).recipe_hash not in hashes


def test_unknown_executor_is_one_line_error(tmp_path):
    from typer.testing import CliRunner

    from edgeprune.cli import app

    res = CliRunner().invoke(app, ["compress", "mlp", "--data", "digits", "--executor", "slurm", "-o", str(tmp_path / "r")])
    assert res.exit_code == 2
    assert "unknown executor 'slurm'" in res.output and "Traceback" not in res.output


def test_batch_training_auto_is_one_by_one_on_cpu(tmp_path):
    """On a CPU, "auto" trains an ensemble's members one by one (batched steps measured slower there), says so
    in the report, and gives the same weights as "batched" up to float rounding; a bad value is refused."""
    from typer.testing import CliRunner

    from edgeprune.cli import app
    from edgeprune.engine import batched_on
    from edgeprune.models import build_model
    from edgeprune.pipeline import Member, run_pipelines
    from edgeprune.recipe import Recipe

    assert not batched_on("cpu", "auto") and batched_on("cuda", "auto") and batched_on("cpu", "batched")
    assert not batched_on("cuda", "one-by-one")
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(96, 12, generator=gen), torch.randint(0, 3, (96,), generator=gen)
    r = Recipe(model="mlp", data="digits")
    r.train.epochs, r.prune.sparsity, r.quant.mode = 2, 0.0, "none"
    members = [Member(x[i::3], y[i::3], 7 + i, f"m{i}") for i in range(3)]
    out = {}
    for mode in ("auto", "batched"):
        models, report = run_pipelines(lambda: build_model("mlp", (12,), 3), (12,), members, r, tmp_path,
                                       dense_only=True, batch_training=mode)
        out[mode] = (models, report.lines())
    assert out["auto"][1] == ["dense training: 3 models one by one (batched training off on cpu)"]
    assert out["batched"][1] == ["dense training: 3 models batched"]
    for a, b in zip(out["auto"][0], out["batched"][0], strict=True):
        for (k, va), vb in zip(a.models["dense"].state_dict().items(), b.models["dense"].state_dict().values(), strict=True):
            assert torch.allclose(va, vb, atol=1e-5), k
    res = CliRunner().invoke(app, ["audit", str(tmp_path), "--attacks", "loss", "--batch-training", "sometimes"])
    assert res.exit_code == 2 and "--batch-training must be one of" in res.output


@pytest.mark.parametrize("reduce_range", [True, False])
def test_ensemble_int8_export_uses_the_targets_int8_settings(tmp_path, reduce_range):
    """An ensemble's int8 export quantizes every member as the target's pipeline does (the same quantize phase): with the recipe's
    (or the CPU's) 7-bit weights where onnxruntime's U8S8 kernels saturate, full 8-bit weights otherwise."""
    import onnx
    from onnx import numpy_helper

    from edgeprune.models import build_model
    from edgeprune.pipeline import Member, run_pipelines
    from edgeprune.recipe import Recipe

    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(120, 12, generator=gen), torch.randint(0, 3, (120,), generator=gen)
    r = Recipe(model="mlp", data="digits")
    r.train.epochs, r.finetune.epochs, r.prune.sparsity, r.quant.mode = 2, 1, 0.5, "int8"
    r.quant.reduce_range = reduce_range
    members = [Member(x[i::3], y[i::3], 7 + i, f"m{i}") for i in range(3)]
    outs, report = run_pipelines(lambda: build_model("mlp", (12,), 3), (12,), members, r, tmp_path)
    assert "quantization: 3 models: 2 ONNX export(s), 1 reused graph(s)" in report.lines()
    for o in outs:
        g = onnx.load(str(o.onnx["pruned+int8"])).graph
        weights = [numpy_helper.to_array(i) for i in g.initializer if i.data_type == onnx.TensorProto.INT8
                   and i.dims and len(i.dims) == 2]
        peak = max(int(abs(w.astype(int)).max()) for w in weights)
        assert peak <= 64 if reduce_range else peak == 127, peak


# --- audits of a model file (dense attacker models): small enough for a few seconds per model -------

@pytest.fixture(scope="module")
def target(tmp_path_factory):
    """A leaky data set (npz: train rows are members), an overfit MLP target and a small training recipe."""
    from safetensors.torch import save_file
    from sklearn.datasets import make_classification

    from edgeprune.models import build_model
    from edgeprune.train import train

    tmp = tmp_path_factory.mktemp("scale")
    x, y = make_classification(1000, 40, n_informative=20, n_redundant=0, n_classes=10, n_clusters_per_class=1,
                               class_sep=1.0, random_state=0)
    x = x.astype(np.float32)
    np.savez(tmp / "d.npz", x_train=x[:300], y_train=y[:300], x_test=x[300:], y_test=y[300:])
    recipe = {"train": {"epochs": 20, "batch_size": 64}}
    (tmp / "r.yaml").write_text(yaml.safe_dump(recipe))
    torch.manual_seed(0)
    m = build_model("mlp", (40,), 10)
    train(m, torch.from_numpy(x[:300]), torch.from_numpy(y[:300]), TrainConfig(epochs=20, batch_size=64), seed=0)
    save_file(m.state_dict(), str(tmp / "t.safetensors"))
    return tmp


def _audit(tmp, name, execution, references=8, attacks=ATTACKS):
    from edgeprune import api

    _, audit = api.audit_model("mlp", f"npz:{tmp / 'd.npz'}", weights=str(tmp / "t.safetensors"), attacks=attacks,
                               references=references, out=tmp / name, recipe_path=str(tmp / "r.yaml"),
                               log=lambda m: None, execution=execution)
    return audit


def _numbers(audit: dict) -> dict:
    """Every attack's result without its timing."""
    return {v: {a: {k: r[k] for k in r if k not in ("attack_seconds", "seconds")} for a, r in info["attacks"].items()}
            for v, info in audit["variants"].items()}


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # Ray tasks run with task_cpus=1 threads: the same kernels as here
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def local_audit(target):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _audit(target, "local", ExecConfig(executor="local", ensemble=1))
    finally:
        torch.set_num_threads(before)


@pytest.mark.slow
def test_batched_references_reach_the_same_accuracy_and_auc(target, local_audit):
    """K=8 references trained as one ensemble vs one by one: the references' accuracy and every attack's AUC
    agree within the bootstrap 95% intervals (they are equal up to float rounding)."""
    from edgeprune.models import build_model

    batched = _audit(target, "batched", ExecConfig(executor="local", ensemble=8, batch_training="batched"))
    assert batched["execution"]["tasks"] == 1 and batched["references"]["trained_now"] == 8
    assert "dense training: 8 models batched" in batched["execution"]["ensemble_report"]
    for name, r in local_audit["variants"]["dense"]["attacks"].items():
        b = batched["variants"]["dense"]["attacks"][name]
        lo, hi = r["ci95"]["auc"]
        assert lo <= b["auc"] <= hi and abs(b["auc"] - r["auc"]) < 0.01, (name, r["auc"], b["auc"])
    assert batched["variants"]["dense"]["attacks"]["lira-online"]["auc"] > 0.6  # the audit measures leakage
    # the references' own test accuracy (on the held-out pool) is the same either way
    from edgeprune.engine import fit as train
    from edgeprune.engine import fit_many

    z = np.load(target / "d.npz")
    xs, ys = torch.from_numpy(z["x_test"][:350]), torch.from_numpy(z["y_test"][:350])
    xt, yt = torch.from_numpy(z["x_test"][350:]), torch.from_numpy(z["y_test"][350:])
    rng = np.random.default_rng(0)
    subsets = [np.sort(rng.choice(350, 150, replace=False)) for _ in range(8)]
    cfg = TrainConfig(epochs=8, batch_size=64)
    one, ens = [], []
    for k, s in enumerate(subsets):
        torch.manual_seed(k)
        one.append(build_model("mlp", (40,), 10))
        ens.append(copy.deepcopy(one[-1]))
        train(one[-1], xs[s], ys[s], cfg, seed=k)
    fit_many(ens, [(xs[s], ys[s]) for s in subsets], cfg, list(range(8)))
    acc = [[float((m(xt).argmax(1) == yt).float().mean()) for m in group] for group in (one, ens)]
    se = np.std(acc[0], ddof=1) / np.sqrt(8)
    assert abs(np.mean(acc[0]) - np.mean(acc[1])) <= 2 * se + 1e-6, acc


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'edgeprune[ray]'; "
                                            "make test installs it from requirements.lock)")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_audit_gives_the_local_numbers(target, local_audit, ray_local, one_thread):
    audit = _audit(target, "ray", ExecConfig(executor="ray", ensemble=1))
    assert audit["execution"]["executor"] == "ray" and audit["execution"]["tasks"] == 8
    assert audit["references"]["trained_now"] == 8
    assert _numbers(audit) == _numbers(local_audit)


def _ray_task_pids() -> list[int]:
    """Ray names a worker process after the task it runs (ray::_ray_task)."""
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if (p / "cmdline").read_bytes().startswith(b"ray::_ray_task"):
                    pids.append(int(p.name))
            except OSError:
                continue
    return pids


@pytest.mark.slow
def test_ray_audit_survives_a_killed_worker(target, local_audit, ray_local, one_thread):
    box = {}
    th = threading.Thread(target=lambda: box.setdefault("audit", _audit(target, "ray_kill", ExecConfig(executor="ray", ensemble=1))))
    th.start()
    killed = None
    deadline = time.time() + 120
    while killed is None and th.is_alive() and time.time() < deadline:
        pids = _ray_task_pids()
        if pids:
            killed = pids[0]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    th.join(timeout=300)
    assert killed is not None, "no Ray worker was seen running a task"
    assert "audit" in box, "the audit did not complete"
    assert box["audit"]["references"]["used"] == 8
    assert _numbers(box["audit"]) == _numbers(local_audit)  # the retried task reproduced its model exactly


@pytest.mark.slow
def test_interrupted_audit_trains_only_the_missing_models(target, local_audit, one_thread):
    out = target / "resume"
    cache = target / ".resume.cache"
    script = ("import sys; from edgeprune import api; from edgeprune.recipe import ExecConfig; "
              "api.audit_model('mlp', sys.argv[1], weights=sys.argv[2], attacks=sys.argv[3].split(','), references=8, "
              "out=sys.argv[4], recipe_path=sys.argv[5], execution=ExecConfig(ensemble=1))")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", script, f"npz:{target / 'd.npz'}", str(target / "t.safetensors"),
                             ",".join(ATTACKS), str(out), str(target / "r.yaml")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if cache.is_dir() and len(list(cache.glob("*.npz"))) >= 2 + 2 * 3:  # target's 2 + 3 references' 2 each
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"the audit ended before it could be interrupted: {proc.stderr.read().decode()[-500:]}"
    proc.kill()
    proc.wait()
    assert not (out / "audit.json").exists()
    audit = _audit(target, "resume", ExecConfig(executor="local", ensemble=1))
    ex = audit["execution"]
    assert ex["models_cached"] >= 3 and ex["models_trained"] == 8 - ex["models_cached"] >= 1
    assert audit["references"]["trained_now"] == ex["models_trained"]
    assert _numbers(audit) == _numbers(local_audit)
    assert json.loads((out / "audit.json").read_text())["references"]["used"] == 8


@pytest.mark.slow
def test_tune_runs_trials_as_ray_tasks(tmp_path, ray_local):
    from typer.testing import CliRunner

    from edgeprune.cli import app

    recipe = {"bench": {"batches": [1], "warmup_s": 0.0, "duration_s": 0.05, "min_runs": 3},
              "audit": {"attacks": ["loss"]}}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    res = CliRunner().invoke(app, ["tune", "mlp", "--data", "digits", "--epochs", "2", "--finetune-epochs", "1",
                                   "--sparsity", "0.3,0.6", "--recipe", str(tmp_path / "r.yaml"), "--executor", "ray",
                                   "-o", str(tmp_path / "t")])
    assert res.exit_code == 0, res.output
    t = json.loads((tmp_path / "t" / "tune.json").read_text())
    assert t["execution"] == "ray" and len(t["trials"]) == 2
    for trial in t["trials"]:
        assert "error" not in trial and 0.0 < trial["metrics"]["accuracy"] <= 1.0
        man = json.loads((tmp_path / "t" / trial["dir"] / "manifest.json").read_text())
        assert man["complete"] and man["recipe"]["exec"]["executor"] == "local"  # a trial's audit stays in its task
