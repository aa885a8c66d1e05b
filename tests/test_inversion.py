"""Model inversion at split points and split deployment (issue 14)."""

import json
import re

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from edgeprune.attack.inversion import InversionPlan, per_sample_figures, to_pixels, train_decoder
from edgeprune.cli import app
from edgeprune.data import load_dataset
from edgeprune.models import build_model
from edgeprune.models.splits import UnknownSplitError, cut, resolve, split_points

runner = CliRunner()


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _psnr(ds, x, rec) -> float:
    orig, _ = to_pixels(x, ds.preprocessing)
    got, rng = to_pixels(rec, ds.preprocessing)
    return float(per_sample_figures(orig, got, rng)["psnr"].mean())


def _invert(ds, model, layer, pool, test, epochs=20) -> float:
    p = resolve(model, ds.in_shape, [layer])[0]
    head, _ = cut(model, p)
    with torch.no_grad():
        f_pool, f_test = head(torch.from_numpy(ds.x[pool])).numpy(), head(torch.from_numpy(ds.x[test])).numpy()
    dec = train_decoder(ds.x[pool], f_pool, InversionPlan(epochs=epochs, seed=0))
    with torch.no_grad():
        return _psnr(ds, ds.x[test], dec(torch.from_numpy(f_test)).numpy())


@pytest.mark.parametrize("name,shape,expected", [
    ("lenet5", (1, 8, 8), ["input", "features.2", "features", "classifier.2", "classifier.4"]),
    ("resnet20", (1, 8, 8), ["input", "relu"] + [f"layers.{i}.{j}" for i in range(3) for j in range(3)] + ["pool"]),
    ("mlp", (64,), ["input", "net.2", "net.4"]),
])
def test_split_points_are_block_boundaries_and_head_tail_compose(name, shape, expected):
    torch.manual_seed(0)
    model = build_model(name, shape, 10).eval()
    points = split_points(model, shape)
    assert [p.name for p in points] == expected
    x = torch.randn(5, *shape)
    for p in points:
        head, tail = cut(model, p)
        f = head(x)
        assert tuple(f.shape[1:]) == p.shape
        assert torch.allclose(tail(f), model(x), atol=1e-5)
    assert [p.name for p in resolve(model, shape, [])] == expected[1:]  # the default leaves out the identity


def test_aliases_resolve_and_unknown_names_list_the_valid_points():
    model = build_model("resnet20", (1, 8, 8), 10).eval()
    (p,) = resolve(model, (1, 8, 8), ["layers.1"])  # the stage ends where its last block ends
    assert p.name == "layers.1.2" and p.shape == (32, 4, 4) and p.bytes_per_sample(4) == 32 * 4 * 4 * 4
    with pytest.raises(UnknownSplitError, match=r"'layers\.9' is not a split point.*valid split points: input, relu"):
        resolve(model, (1, 8, 8), ["layers.9"])


def test_decoder_on_the_identity_feature_is_near_perfect(digits):
    """layer = input: the decoder only has to learn the identity; on real digits it gets above 30 dB PSNR
    (pixels in [0, 1]; 30 dB is an RMS error of 3% of the pixel range)."""
    model = build_model("lenet5", digits.in_shape, 10).eval()
    idx = np.random.default_rng(0).permutation(len(digits))
    assert _invert(digits, model, "input", idx[:600], idx[600:800]) > 30.0


def test_trained_features_invert_better_than_random_init_features(digits):
    """A trained network's deep features carry the digit's shape; a random-init network's carry less of it."""
    from edgeprune.recipe import TrainConfig
    from edgeprune.train import train

    idx = np.random.default_rng(0).permutation(len(digits))
    members, pool, test = idx[:600], idx[600:1400], idx[1400:1600]
    torch.manual_seed(0)
    random_init = build_model("lenet5", digits.in_shape, 10).eval()
    torch.manual_seed(0)
    trained = build_model("lenet5", digits.in_shape, 10)
    train(trained, torch.from_numpy(digits.x[members]), torch.from_numpy(digits.y[members]),
          TrainConfig(epochs=30, lr=3e-3), seed=0)
    trained.eval()
    rand_psnr = _invert(digits, random_init, "classifier.2", pool, test)
    trained_psnr = _invert(digits, trained, "classifier.2", pool, test)
    assert trained_psnr > rand_psnr + 1.5, (trained_psnr, rand_psnr)


def test_head_and_tail_onnx_compose_and_the_noisy_head_adds_its_noise(tmp_path):
    from edgeprune.export.onnx import onnx_predict
    from edgeprune.export.split import export_split

    torch.manual_seed(0)
    model = build_model("resnet20", (1, 8, 8), 10).eval()
    (p,) = resolve(model, (1, 8, 8), ["layers.1.0"])
    x = np.random.default_rng(0).normal(size=(16, 1, 8, 8)).astype(np.float32)
    info = export_split(model, (1, 8, 8), p, tmp_path, x)
    f = onnx_predict(tmp_path / "head.onnx", x)
    assert f.shape == (16, 32, 4, 4) and info["bytes_per_sample"]["fp32"] == 32 * 4 * 4 * 4
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    got = onnx_predict(tmp_path / "tail.onnx", f)
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
    assert info["verification"]["passed"] and info["verification"]["top1_agreement"] == 1.0
    noisy = tmp_path / "noisy"
    noisy.mkdir()
    info = export_split(model, (1, 8, 8), p, noisy, x, noise_sigma=0.5)
    diff = onnx_predict(noisy / "head.onnx", x) - f
    assert 0.45 < diff.std() < 0.55 and abs(diff.mean()) < 0.05


def test_int8_features_come_from_the_qdq_graph_at_the_split_tensor(tmp_path, digits):
    import onnx

    from edgeprune.export.onnx import export_onnx
    from edgeprune.export.split import locate_feature_tensor, onnx_features
    from edgeprune.quant.ptq import quantize_int8

    torch.manual_seed(0)
    model = build_model("lenet5", digits.in_shape, 10).eval()
    src = export_onnx(model, digits.in_shape, tmp_path / "m.onnx")
    q = quantize_int8(src, tmp_path / "q.onnx", digits.x[:256])
    (p,) = resolve(model, digits.in_shape, ["features.2"])
    head, _ = cut(model, p)
    x = digits.x[256:320]
    with torch.no_grad():
        ref = head(torch.from_numpy(x)).numpy()
    name = locate_feature_tensor(q, x, ref)
    graph = onnx.load(str(q)).graph
    producer = next(n for n in graph.node if name in n.output)
    assert producer.op_type == "DequantizeLinear"  # what the next int8 layer reads: the deployed numerics
    scale = onnx.numpy_helper.to_array(next(i for i in graph.initializer if i.name == producer.input[1]))
    got = onnx_features(q, name)(x)
    assert got.shape == ref.shape
    steps = got / scale  # dequantized uint8 values: whole multiples of the scale (zero point 0 after a ReLU)
    assert np.abs(steps - np.round(steps)).max() < 1e-3
    assert np.abs(got - ref).max() < 0.1 * np.abs(ref).max()


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("inv")
    recipe = {"train": {"epochs": 30, "lr": 0.003}, "finetune": {"epochs": 5}, "prune": {"sparsity": 0.5},
              "bench": {"batches": [1], "warmup_s": 0.0, "duration_s": 0.05, "min_runs": 3}}
    (tmp / "r.yaml").write_text(yaml.safe_dump(recipe))
    out = tmp / "run"
    res = runner.invoke(app, ["compress", "lenet5", "--data", "digits", "--recipe", str(tmp / "r.yaml"), "-o", str(out)])
    assert res.exit_code == 0, res.output
    return out


@pytest.mark.slow
def test_inversion_audit_split_export_and_bundle_from_the_cli(digits_run, tmp_path):
    res = runner.invoke(app, ["audit", str(digits_run), "--attacks", "inversion,inversion-wb", "--layer", "features"])
    assert res.exit_code == 0, res.output
    inv = json.loads((digits_run / "inversion.json").read_text())
    assert set(inv["variants"]) == {"dense", "pruned", "pruned+int8"}
    for variant in inv["variants"].values():
        deep = variant["features"]["attacks"]["inversion"]
        assert 10 < deep["psnr"]["mean"] < 25  # far below the identity's 30+ dB: the features hide detail
        lo, hi = deep["psnr"]["ci95"]
        assert lo <= deep["psnr"]["mean"] <= hi and 0 < deep["ssim"]["mean"] < 1
        assert deep["judge_accuracy"]["mean"] > 0.5  # ...but not the class
        assert variant["features"]["attacks"]["inversion-wb"]["psnr"]["mean"] > 0
    assert inv["variants"]["pruned+int8"]["features"]["numerics"].startswith("model.int8.onnx at tensor")
    assert (digits_run / inv["grids"]["features"]).stat().st_size > 1000
    res = runner.invoke(app, ["report", str(digits_run), "-o", str(tmp_path / "rep" / "report.html")])
    assert res.exit_code == 0, res.output
    page = (tmp_path / "rep" / "report.html").read_text()
    assert 'id="inversion"' in page and re.search(r'id="plot-inversion-run-features-[0-9a-f]{10}"', page)
    assert "<figcaption>model inversion: run run, split point features" in page

    res = runner.invoke(app, ["export", str(digits_run), "--split", "classifier.9"])
    assert res.exit_code == 2
    assert "valid split points: input, features.2, features, classifier.2, classifier.4" in " ".join(res.output.split())
    res = runner.invoke(app, ["export", str(digits_run), "--split", "features"])
    assert res.exit_code == 0, res.output
    assert {"head.onnx", "tail.onnx", "split.json"} <= {p.name for p in (digits_run / "split").iterdir()}

    out = tmp_path / "bundle"
    res = runner.invoke(app, ["bundle", str(digits_run), "-o", str(out), "--split", "features", "--precision", "fp32,int8"])
    assert res.exit_code == 0, res.output
    man = json.loads((out / "manifest.json").read_text())
    assert man["split"]["point"] == "features" and man["output"]["name"] == "features"
    shape = man["split"]["feature_shape"]
    assert man["split"]["bytes_per_sample"]["fp32"] == 4 * int(np.prod(shape))
    assert man["split"]["inversion"]["pruned"]["inversion"]["psnr"]["mean"] > 0
    import subprocess
    import sys

    for where in (out, out / "server"):
        r = subprocess.run([sys.executable, "run_onnx.py", "--duration", "0.05"], cwd=where, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert all(x["check_passed"] for x in json.loads(r.stdout)["results"])


@pytest.mark.slow
def test_split_noise_lowers_inversion_quality_and_reports_its_accuracy_cost(digits_run):
    res = runner.invoke(app, ["audit", str(digits_run), "--attacks", "inversion", "--layer", "features.2",
                              "--split-noise", "1.0"])
    assert res.exit_code == 0, res.output
    inv = json.loads((digits_run / "inversion.json").read_text())
    noisy = inv["variants"]["pruned+noise"]["features.2"]["attacks"]["inversion"]["psnr"]
    plain = inv["variants"]["pruned"]["features.2"]["attacks"]["inversion"]["psnr"]
    assert noisy["ci95"][1] < plain["ci95"][0]  # worse, outside the intervals
    cost = inv["split_noise"]
    assert cost["sigma"] > 0 and 0 <= cost["test_accuracy_noise_finetuned"] <= 1
    assert set(cost) >= {"test_accuracy_pruned", "test_accuracy_noise_without_finetuning"}
    res = runner.invoke(app, ["audit", str(digits_run), "--attacks", "inversion", "--split-noise", "1.0"])
    assert res.exit_code == 2 and "exactly one --layer" in res.output
