"""The user's own data from the CLI, end to end (issue 26 items 1, 2): an image folder written with Pillow
through compress, the manifest, the Jetson bundle and its run_onnx.py on image files; `edgeprune datasets`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from test_data_imagefolder import image_folder  # tests/ is on sys.path under pytest
from typer.testing import CliRunner

from edgeprune.cli import app
from edgeprune.data import load_dataset

runner = CliRunner()
RECIPE = {"train": {"epochs": 1}, "finetune": {"epochs": 1}, "quant": {"mode": "none"},
          "bench": {"batches": [1], "warmup_s": 0.0, "duration_s": 0.05, "min_runs": 3}}


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEPRUNE_CACHE_DIR", str(tmp_path / "cache"))


def test_datasets_lists_the_new_readers():
    res = runner.invoke(app, ["datasets"], env={"COLUMNS": "250"})
    assert res.exit_code == 0
    assert "imagefolder" in res.output and "default 32" in res.output


@pytest.mark.slow
def test_image_folder_compress_bundle_and_run_onnx_on_image_files(tmp_path):
    root = image_folder(tmp_path / "pets", per_class=20)
    spec = f"imagefolder:{root}:size=24"
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(RECIPE))
    run = tmp_path / "run"
    res = runner.invoke(app, ["compress", "lenet5", "--data", spec, "--recipe", str(tmp_path / "r.yaml"),
                              "--sparsity", "0.5", "-o", str(run)])
    assert res.exit_code == 0, res.output
    data = json.loads((run / "manifest.json").read_text())["data"]  # class names and preprocessing recorded
    assert data["preprocessing"]["classes"] == ["cat", "dog", "owl"] and data["preprocessing"]["size"] == [24, 24]
    res = runner.invoke(app, ["bundle", str(run), "-o", str(tmp_path / "b"), "--precision", "fp32"])
    assert res.exit_code == 0, res.output
    b = tmp_path / "b"
    bprep = json.loads((b / "preprocessing.json").read_text())
    assert bprep["classes"] == ["cat", "dog", "owl"] and bprep["size"] == [24, 24]
    assert json.loads((b / "manifest.json").read_text())["preprocessing"] == bprep
    files = sorted(root.rglob("img*"))[::9]  # mixed sizes and formats
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, str(b / "run_onnx.py"), *map(str, files)], capture_output=True,
                         text=True, env=env, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert [r["file"] for r in got["images"]] == [str(f) for f in files]
    assert all(r["top"][0]["class"] in ("cat", "dog", "owl") for r in got["images"])
    # the logits are the model's on exactly the training rows of those files: same preprocessing
    import onnxruntime as ort

    ds = load_dataset(spec)
    every = sorted(root.rglob("img*"))
    rows = [every.index(f) for f in files]
    sess = ort.InferenceSession(str(b / "model.fp32.onnx"), providers=["CPUExecutionProvider"])
    want = np.concatenate([sess.run(None, {"input": ds.x[i : i + 1]})[0] for i in rows])
    np.testing.assert_allclose(np.array([r["logits"] for r in got["images"]]), want, rtol=1e-5, atol=1e-5)
    # edgeprune predict: the same numbers from the bundle, and from the run's own model.onnx
    res = runner.invoke(app, ["predict", str(b), *map(str, files), "--json"])
    assert res.exit_code == 0, res.output
    np.testing.assert_allclose([r["logits"] for r in json.loads(res.output)["images"]], want, rtol=1e-5, atol=1e-5)
    res = runner.invoke(app, ["predict", str(run), str(files[0])], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and files[0].name in res.output, res.output
    for args, msg in (([str(b), str(tmp_path / "r.yaml")], "not an image file"), ([str(b), "/nope.jpg"], "No such file")):
        res = runner.invoke(app, ["predict", *args])
        assert res.exit_code == 2 and msg in res.output, res.output
    (b / "preprocessing.json").write_text(json.dumps({**bprep, "size": [8, 8]}))  # tampered: refused
    res = runner.invoke(app, ["predict", str(b), str(files[0])])
    assert res.exit_code == 2 and "sha256" in res.output, res.output
    bad = subprocess.run([sys.executable, str(b / "run_onnx.py"), str(tmp_path / "r.yaml")], capture_output=True,
                         text=True, env=env, timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "error:" in bad.stderr


def test_run_onnx_says_when_a_bundle_takes_no_images(tmp_path):
    """A bundle of a tabular model has no preprocessing.json: run_onnx.py IMAGE is one line, exit 2."""
    tpl = Path(__file__).resolve().parents[1] / "edgeprune" / "export" / "templates" / "run_onnx.py"
    (tmp_path / "run_onnx.py").write_text(tpl.read_text())
    (tmp_path / "manifest.json").write_text(json.dumps({"models": []}))
    out = subprocess.run([sys.executable, str(tmp_path / "run_onnx.py"), "x.jpg"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2 and "not trained on image files" in out.stderr


@pytest.mark.slow
def test_csv_table_compresses_from_the_cli(tmp_path):
    pytest.importorskip("pandas")
    from test_data_csv import table

    df, _ = table(n=300)
    df.to_csv(tmp_path / "people.csv", index=False)
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(RECIPE))
    run = tmp_path / "run"
    res = runner.invoke(app, ["compress", "mlp", "--data", f"csv:{tmp_path / 'people.csv'}:species", "--recipe",
                              str(tmp_path / "r.yaml"), "--sparsity", "0.5", "-o", str(run)])
    assert res.exit_code == 0, res.output
    data = json.loads((run / "manifest.json").read_text())["data"]
    assert data["samples"] == 300 and data["preprocessing"]["classes"] == ["ant", "bee", "cat"]
    assert data["preprocessing"]["categories"] == {"colour": ["blue", "green", "red"]}
    res = runner.invoke(app, ["compress", "mlp", "--data", f"csv:{tmp_path / 'people.csv'}", "-o", str(tmp_path / "x")])
    assert res.exit_code == 2 and "no label column 'label'" in res.output
