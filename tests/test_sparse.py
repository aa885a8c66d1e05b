import json

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from edgeprune.errors import ConfigError
from edgeprune.export.lint import lint
from edgeprune.export.onnx import export_onnx, onnx_predict
from edgeprune.export.sparse_op import sparsify_onnx
from edgeprune.models.zoo import MLP
from edgeprune.sparse.bsr import block_density, from_dense, from_mask


def _block_sparse(shape, block, density, seed=0):
    rng = np.random.default_rng(seed)
    mask = rng.random((shape[0] // block, shape[1] // block)) < density
    return rng.normal(size=shape).astype(np.float32) * np.kron(mask, np.ones((block, block))), mask


@pytest.mark.parametrize("block", [16, 32, 64])
def test_bsr_roundtrip_and_matmul(block):
    w, mask = _block_sparse((128, 192), block, 0.3)
    b = from_dense(w, block)
    assert np.array_equal(b.to_dense(), w)
    assert len(b.col) == mask.sum() and b.density == pytest.approx(mask.mean())
    assert np.array_equal(from_mask(w, mask, block).to_dense(), w)
    x = np.random.default_rng(1).normal(size=(5, 192)).astype(np.float32)
    np.testing.assert_allclose(b.matmul_t(x), x @ w.T, rtol=1e-5, atol=1e-5)
    h = from_dense(w, block, "fp16")
    assert h.values.dtype == np.float16 and np.abs(h.to_dense() - w).max() < 1e-2
    q = from_dense(w, block, "int8")
    assert q.values.dtype == np.int8
    assert np.abs(q.to_dense() - w).max() <= np.abs(w).max(1).max() / 127 * 0.5 + 1e-6
    assert block_density(w, block) == pytest.approx(mask.mean())


def test_bad_block_shapes():
    with pytest.raises(ConfigError):
        from_dense(np.ones((30, 64)), 32)
    with pytest.raises(ConfigError):
        from_dense(np.ones((64, 64)), 24)


def _masked_mlp(seed=0):
    torch.manual_seed(seed)
    m = MLP((256,), 10, hidden=(512, 256)).eval()
    with torch.no_grad():
        for lin in (m.net[1], m.net[3]):
            o, i = lin.weight.shape
            mask = (torch.rand(o // 32, i // 32) < 0.25).float()
            lin.weight.mul_(torch.kron(mask, torch.ones(32, 32)))
    return m


def test_block_sparse_custom_op_runs_and_matches_torch(tmp_path):
    m = _masked_mlp()
    export_onnx(m, (256,), tmp_path / "d.onnx")
    replaced = sparsify_onnx(tmp_path / "d.onnx", tmp_path / "s.onnx", block=32)
    assert len(replaced) == 2  # the two masked hidden layers; the dense classifier stays a Gemm
    import onnx

    g = onnx.load(str(tmp_path / "s.onnx"))
    ops = [(n.domain, n.op_type) for n in g.graph.node]
    assert ops.count(("ai.edgeprune", "BlockSparseLinear")) == 2 and ("", "Gemm") in ops
    x = np.random.default_rng(0).normal(size=(9, 256)).astype(np.float32)
    np.testing.assert_allclose(onnx_predict(tmp_path / "s.onnx", x), m(torch.from_numpy(x)).detach().numpy(),
                               rtol=1e-5, atol=1e-5)
    assert {f.rule for f in lint(tmp_path / "s.onnx")} >= {"plugin"}
    # the sparse file is smaller: only non-zero blocks are stored
    assert (tmp_path / "s.onnx").stat().st_size < 0.5 * (tmp_path / "d.onnx").stat().st_size
    assert sparsify_onnx(tmp_path / "d.onnx", tmp_path / "none.onnx", block=32, min_sparsity=0.9) == []


def test_export_command_writes_the_block_sparse_model(tmp_path):
    from edgeprune.cli import app

    runner = CliRunner()
    (tmp_path / "r.yaml").write_text(yaml.safe_dump({
        "train": {"epochs": 1}, "finetune": {"epochs": 1}, "quant": {"mode": "none"}, "prune": {"sparsity": 0.5},
        "bench": {"batches": [1], "warmup_s": 0.0, "duration_s": 0.05, "min_runs": 3}}))
    run = tmp_path / "run"
    res = runner.invoke(app, ["compress", "mlp", "--data", "purchase-synth:2000", "--recipe", str(tmp_path / "r.yaml"),
                              "-o", str(run)])
    assert res.exit_code == 0, res.output
    # block-mask the pruned hidden layer (256 x 600 -> masked 32x32 tiles on the 256 x 576 part is not a tiling;
    # the 128 x 256 layer tiles exactly)
    state = load_file(str(run / "model.safetensors"))
    w = state["net.3.weight"].numpy()
    assert w.shape == (128, 256)
    masked, _ = _block_sparse(w.shape, 32, 0.3)
    state["net.3.weight"] = torch.from_numpy(np.where(masked != 0, w, 0).astype(np.float32))
    save_file(state, str(run / "model.safetensors"))
    res = runner.invoke(app, ["export", str(run)])
    assert res.exit_code == 2 and "differs from the sha256" in res.output  # tampering is caught
    from edgeprune.run import sha256_file

    man = json.loads((run / "manifest.json").read_text())
    man["artifacts"]["model.safetensors"] = sha256_file(run / "model.safetensors")
    (run / "manifest.json").write_text(json.dumps(man))
    res = runner.invoke(app, ["export", str(run)])
    assert res.exit_code == 0, res.output
    info = json.loads((run / "export" / "export.json").read_text())
    assert info["files"]["model.bsr.onnx"]["block_sparse_layers"] and info["files"]["model.bsr.onnx"]["passed"]
    res = runner.invoke(app, ["export", str(run), "--dense"])
    info = json.loads((run / "export" / "export.json").read_text())
    assert "model.bsr.onnx" not in info["written"]  # this export made none; the earlier one's file stays
    assert info["files"]["model.bsr.onnx"]["block_sparse_layers"]


def test_bundle_of_a_block_sparse_model_falls_back_to_dense_without_plugin_sources(tmp_path):
    from edgeprune.export.bundle import make_bundle

    m = _masked_mlp()
    x = np.random.default_rng(0).normal(size=(8, 256)).astype(np.float32)
    out = make_bundle(m, (256,), tmp_path / "b", ["fp32"], x, x, kernels_dir=tmp_path / "no-kernels")
    man = json.loads((out / "manifest.json").read_text())
    assert len(man["block_sparse"]["layers"]) == 2 and man["block_sparse"]["export"].startswith("dense fallback")
    assert not (out / "model.bsr.onnx").exists()
    kernels = tmp_path / "kernels"
    kernels.mkdir()
    (kernels / "CMakeLists.txt").write_text("cmake_minimum_required(VERSION 3.18)\nproject(edgeprune_plugins CUDA CXX)\n")
    out = make_bundle(m, (256,), tmp_path / "b2", ["fp32"], x, x, kernels_dir=kernels)
    man = json.loads((out / "manifest.json").read_text())
    assert (out / "model.bsr.onnx").is_file() and (out / "plugins" / "CMakeLists.txt").is_file()
    assert "--staticPlugins=plugins/build/libedgeprune_plugins.so" in (out / "build_engine.sh").read_text()
