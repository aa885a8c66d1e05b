"""Issue 17: bad input ends in one red line and exit 2, before any work; never a traceback."""

import os
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from edgeprune.cli import app
from edgeprune.errors import ConfigError, DataError

runner = CliRunner()
FAST = ["--epochs", "1", "--finetune-epochs", "1"]


def _one_line_exit_2(res, match):
    text = res.output
    assert res.exit_code == 2, text
    assert "Traceback" not in text and match in text, text
    assert [ln for ln in text.splitlines() if ln.strip()] == [text.strip()] and text.startswith("error:"), text


def _npz(path, x_train, y_train, x_test=None, y_test=None):
    x_test = x_train[:0] if x_test is None else x_test
    y_test = y_train[:0] if y_test is None else y_test
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


def _tab(n=60, k=5, d=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)).astype(np.float32), np.arange(n) % k


# --- data --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case,match", [
    ("empty", "no samples"), ("huge-label", "labels must be 0..K-1"), ("stray", "largest: 5000 (1 sample)"),
    ("one-class", "at least 2 classes"), ("complex", "real numbers"), ("nan", "NaN"),
])
def test_bad_npz_contents_are_one_line_before_any_work(tmp_path, case, match):
    x, y = _tab()
    if case == "empty":
        x, y = x[:0], y[:0]
    elif case == "huge-label":
        y = y.copy()
        y[3] = 10**9
    elif case == "stray":
        y = y.copy()
        y[7] = 5000
    elif case == "one-class":
        y = np.zeros_like(y)
    elif case == "complex":
        x = x + 1j
    elif case == "nan":
        x = x.copy()
        x[0, 0] = np.nan
    f = _npz(tmp_path / "d.npz", x, y)
    t0 = time.perf_counter()
    res = runner.invoke(app, ["compress", "mlp", "--data", f"npz:{f}", *FAST, "-o", str(tmp_path / "run")])
    _one_line_exit_2(res, match)
    assert time.perf_counter() - t0 < 60 and not (tmp_path / "run").exists()


def test_stray_label_message_names_it():
    from edgeprune.data.datasets import check_labels

    y = np.r_[np.arange(100) % 5, 5000]
    with pytest.raises(DataError, match=r"only 6 of the 5001 labels.*5000 \(1 sample\)"):
        check_labels(y, 5001, "data", all_present=True)


# --- recipes -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("text,match", [
    ("train: {lr: .nan}\n", "finite"),
    ("export: {opset: 99}\n", "opset must be between 18 and 23"),
    ("audit: {bootstrap: -1}\n", "bootstrap must be >= 1"),
    ("bench: {threads: -3}\n", "threads must be in [0, 1024]"),
    ("audit: {bootstrap: 1000000000000}\n", "bootstrap must be at most 2000"),
    ("audit: {attacks: [loss, nosuch]}\n", "unknown attack 'nosuch'"),
    ("prune: {block: 7}\n", "block size"),
    ("seed: -1\n", "seed"),
    ("weights: [&a [x, x], &b [*a, *a]]\n", "anchors and aliases"),
    ("model: " + "x" * 100000 + "\nnot_a_key: 1\n", "unknown key"),
    ("[1, 2]\n", "must be a mapping"),
    ("{1: 2}\n", "unknown key"),
    ("seed: 1" + "0" * 5000 + "\n", "cannot read"),
    ("seed: 1" + "0" * 4000 + "\n", "seed must be in [0, 2^32)"),
])
def test_bad_recipes_are_one_line(tmp_path, text, match):
    p = tmp_path / "r.yaml"
    p.write_text(text)
    res = runner.invoke(app, ["compress", "mlp", "--recipe", str(p), "-o", str(tmp_path / "run")])
    _one_line_exit_2(res, match)
    assert len(res.output) < 600  # never the user's unbounded value


def test_yaml_alias_bomb_is_refused_fast(tmp_path):
    from edgeprune.recipe import load_recipe

    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    p = tmp_path / "bomb.yaml"
    p.write_text("\n".join(lines) + "\nweights: *a8\n")
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match="aliases"):
        load_recipe(p)
    assert time.perf_counter() - t0 < 5


def test_non_utf8_recipe(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_bytes(b"model: mlp\ndata: \xff\xfe\n")
    res = runner.invoke(app, ["compress", "mlp", "--recipe", str(p), "-o", str(tmp_path / "run")])
    _one_line_exit_2(res, "not UTF-8")


# --- plans -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("content,match", [
    ("{not json", "not valid JSON"), ("[1, 2]", "must be a JSON object"),
    ('{"version": 2, "ops": [{"module": "net.1", "fn": "prune_out_channels", "idxs": [100000]}]}', "has 512"),
    ('{"version": 2, "ops": [{"module": "net.1", "fn": "prune_out_channels", "idxs": [-1]}]}', "distinct channel"),
    ('{"version": 2, "ops": [{"module": "nope", "fn": "prune_out_channels", "idxs": [1]}]}', "does not have"),
])
def test_bad_plans_are_refused_before_training(tmp_path, content, match):
    plan = tmp_path / "plan.json"
    plan.write_text(content)
    res = runner.invoke(app, ["prune", "mlp", "--data", "purchase-synth:1000", "--plan", str(plan), *FAST,
                              "-o", str(tmp_path / "run")])
    _one_line_exit_2(res, match)
    assert not (tmp_path / "run").exists() and not (tmp_path / ".run.partial").exists()


# --- ONNX files --------------------------------------------------------------------------------------
def _onnx(path, outputs=5, extra_output=False, nan=False, flat=False, external=None):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.full((6, outputs), np.nan if nan else 0.1, np.float32)
    init = numpy_helper.from_array(w, "W")
    if external:
        init = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=list(w.shape))
        init.data_location = TensorProto.EXTERNAL
        init.external_data.add(key="location", value=external)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["y"])]
    out_name, out_shape = "y", ["N", outputs]
    if flat:
        nodes.append(helper.make_node("Reshape", ["y", "shape"], ["flat"]))
        out_name, out_shape = "flat", [None]
    outs = [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, out_shape)]
    if extra_output:
        nodes.append(helper.make_node("Identity", ["y"], ["y2"]))
        outs.append(helper.make_tensor_value_info("y2", TensorProto.FLOAT, ["N", outputs]))
    inits = [init] + ([numpy_helper.from_array(np.array([-1], np.int64), "shape")] if flat else [])
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])], outs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 9
    onnx.save(m, str(path))
    return path


@pytest.mark.parametrize("case,match", [
    ("garbage", "not an ONNX model"), ("empty", "is empty"), ("truncated", "ONNX"),
    ("fifty", "outputs shape (2, 50)"), ("two", "2 outputs"), ("nan", "NaN"), ("flat", "outputs shape (10,)"),
    ("escape", "outside the model's directory"),
])
def test_bad_onnx_files_for_audit_are_one_line(tmp_path, case, match):
    x, y = _tab()
    data = _npz(tmp_path / "d.npz", x, y, *_tab(40, seed=1))
    f = tmp_path / "m" / "model.onnx"
    f.parent.mkdir()
    if case == "garbage":
        f.write_bytes(np.random.default_rng(0).bytes(300))  # fixed bytes: the same case on every run
    elif case == "empty":
        f.write_bytes(b"")
    elif case == "truncated":
        good = _onnx(tmp_path / "good.onnx").read_bytes()
        f.write_bytes(good[: len(good) // 2])
    else:
        _onnx(f, outputs=50 if case == "fifty" else 5, extra_output=case == "two", nan=case == "nan",
              flat=case == "flat", external="../../secret.bin" if case == "escape" else None)
    (tmp_path / "secret.bin").write_bytes(b"\0" * 120)
    out = tmp_path / "audit"
    res = runner.invoke(app, ["audit", str(f), "--data", f"npz:{data}", "--attacks", "loss", "-o", str(out)])
    _one_line_exit_2(res, match)
    assert not out.exists() and not (tmp_path / ".audit.cache").exists()


def test_bench_of_a_garbage_onnx_is_one_line(tmp_path):
    f = tmp_path / "m.onnx"
    f.write_bytes(b"\x08\x07garbage")
    res = runner.invoke(app, ["bench", str(f), "--duration", "0.1"])
    _one_line_exit_2(res, "ONNX")


# --- output paths ------------------------------------------------------------------------------------
def test_unwritable_output_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    res = runner.invoke(app, ["compress", "mlp", "--data", "digits", "-o", str(tmp_path / "file" / "run")])
    _one_line_exit_2(res, "is a file")
    res = runner.invoke(app, ["compress", "mlp", "--data", "digits", "-o", "/proc/edgeprune-run"])
    _one_line_exit_2(res, "not writable")
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
        res = runner.invoke(app, ["compress", "mlp", "--data", "digits", "-o", str(ro / "run")])
        _one_line_exit_2(res, "not writable")


# --- deploy ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("remote,match", [("~/x", "instead of '~/x'"), ("-rf", "'-'"), ("a/--x", "'-'"),
                                          ("../x", "no '..'"), ("a b", "letters")])
def test_deploy_remote_dir_is_checked_before_ssh(tmp_path, remote, match):
    res = runner.invoke(app, ["deploy", str(tmp_path), "--host", "jetson", f"--remote-dir={remote}"])
    _one_line_exit_2(res, match)


def test_remote_commands_pass_double_dash_before_paths(monkeypatch, tmp_path):
    from edgeprune.bench import remote

    (tmp_path / "manifest.json").write_text("{}")
    calls = []

    def fake_sh(host, argvs, **kw):
        calls.append(argvs)
        raise remote.RemoteError("stop")

    monkeypatch.setattr(remote, "sh", fake_sh)
    monkeypatch.setattr(remote.shutil, "which", lambda tool: "/usr/bin/" + tool)
    with pytest.raises(remote.RemoteError):
        remote.deploy(tmp_path, remote.Host("jetson"), remote_dir="edge/x")
    assert calls[0] == [["mkdir", "-p", "--", "edge/x"]]


# --- a model spec that is no model factory (issue 26 item 4) ----------------------------------------
@pytest.mark.parametrize("spec,match", [
    ("os:system", "is not a model factory"), ("math:sqrt", "is not a model factory"),
    ("os:sep", "names a str, not a model factory"), ("collections:OrderedDict", "not a torch.nn.Module"),
])
def test_a_spec_naming_no_model_factory_is_one_line(tmp_path, spec, match):
    res = runner.invoke(app, ["compress", spec, "--data", "digits", *FAST, "-o", str(tmp_path / "run")])
    _one_line_exit_2(res, match)
    assert spec in res.output and not (tmp_path / "run").exists()

