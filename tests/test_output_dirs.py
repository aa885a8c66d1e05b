"""Output directories and run files under hostile or unlucky conditions (issue 25 items 4, 6, 7; issue 26 item 4):
a re-bundle keeps what the user or `deploy` added, links as -o are refused, the lock comes before any work,
cache writes are staged and leave no temp files, Ctrl-C names the way to continue, a full disk is one line."""

import errno
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from edgeprune.cli import app
from edgeprune.errors import RunDirError
from edgeprune.run import MANIFEST, OUTPUT_MARKER, sha256_file, staged_dir

runner = CliRunner()
RECIPE = {
    "train": {"epochs": 2}, "finetune": {"epochs": 1}, "quant": {"mode": "none"},
    "audit": {"attacks": ["loss"], "bootstrap": 20},
    "bench": {"batches": [1], "warmup_s": 0.0, "duration_s": 0.05, "min_runs": 3},
}


def _tree(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


def _one_line(output: str) -> str:
    """The one error line of a failed command (progress lines may precede it), never a traceback."""
    lines = [ln for ln in output.strip().splitlines() if "error:" in ln]
    assert len(lines) == 1 and "Traceback" not in output, output
    return lines[0]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("outputs")
    (tmp / "r.yaml").write_text(yaml.safe_dump(RECIPE))
    res = runner.invoke(app, ["compress", "mlp", "--data", "digits", "--recipe", str(tmp / "r.yaml"),
                              "-o", str(tmp / "run")])
    assert res.exit_code == 0, res.output
    return tmp / "run"


# --- item 4: a re-bundle keeps what was added to the bundle ---------------------------------------------

def _write(tmp: Path, files: dict) -> None:
    for rel, text in files.items():
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_text(text)


def test_rewriting_an_output_keeps_the_files_added_to_it(tmp_path):
    out = tmp_path / "B"
    with staged_dir(out, "bundle") as tmp:
        _write(tmp, {"model.onnx": "v1", "old_only.txt": "gone next time", "sub/a.txt": "a1"})
    marker = json.loads((out / OUTPUT_MARKER).read_text())
    assert set(marker["files"]) == {"model.onnx", "old_only.txt", "sub/a.txt"}
    assert marker["files"]["model.onnx"] == sha256_file(out / "model.onnx")
    _write(out, {"notes.txt": "mine", "results/jetson/deploy.json": "{}", "sub/mine.txt": "mine too"})
    (tmp_path / ".B.old").mkdir()  # a user's directory of the name the old code removed
    (tmp_path / ".B.old" / "keep.txt").write_text("mine")
    with staged_dir(out, "bundle") as tmp:
        _write(tmp, {"model.onnx": "v2", "sub/a.txt": "a2"})
    assert (out / "model.onnx").read_text() == "v2" and (out / "sub/a.txt").read_text() == "a2"
    assert not (out / "old_only.txt").exists()  # the earlier output's own file is replaced
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "results/jetson/deploy.json").read_text() == "{}"
    assert (out / "sub/mine.txt").read_text() == "mine too"
    assert (tmp_path / ".B.old" / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".B.lock", ".B.old", "B"]  # nothing left aside
    # the kept files stay the user's: a third bundle keeps them again
    assert set(json.loads((out / OUTPUT_MARKER).read_text())["files"]) == {"model.onnx", "sub/a.txt"}
    with staged_dir(out, "bundle") as tmp:
        _write(tmp, {"model.onnx": "v3"})
    assert (out / "notes.txt").read_text() == "mine" and not (out / "sub/a.txt").exists()


def test_an_output_whose_own_files_were_changed_or_would_be_overwritten_is_refused(tmp_path):
    out = tmp_path / "B"
    with staged_dir(out, "bundle") as tmp:
        _write(tmp, {"README.md": "ours", "model.fp16.onnx": "x"})
    (out / "README.md").write_text("edited by the user")
    before = _tree(out)
    with pytest.raises(RunDirError, match="README.md was changed since"), staged_dir(out, "bundle") as tmp:
        _write(tmp, {"README.md": "ours again"})
    assert _tree(out) == before
    (out / "README.md").write_text("ours")
    (out / "model.fp32.onnx").write_text("the user's own model")  # the new bundle writes this name
    with pytest.raises(RunDirError, match="model.fp32.onnx was added"), staged_dir(out, "bundle") as tmp:
        _write(tmp, {"README.md": "ours", "model.fp32.onnx": "new"})
    assert (out / "model.fp32.onnx").read_text() == "the user's own model"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".B.lock", "B"]


def test_rebundle_keeps_deploy_results_and_user_notes(run, tmp_path):
    out = tmp_path / "B"
    args = ["bundle", str(run), "-o", str(out), "--precision", "fp32"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    (out / "notes.txt").write_text("flashed on the Orin")
    _write(out, {"results/jetson/deploy.json": '{"p50_ms": 1.0}'})
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert (out / "notes.txt").read_text() == "flashed on the Orin"
    assert (out / "results/jetson/deploy.json").read_text() == '{"p50_ms": 1.0}'
    man = json.loads((out / "manifest.json").read_text())
    for f, digest in man["files"].items():
        assert sha256_file(out / f) == digest, f
    assert "notes.txt" not in man["files"]


# --- item 6: links, fixed names, locks, caches, telemetry ------------------------------------------------

def test_a_symbolic_link_as_the_output_is_refused(run, tmp_path):
    target = tmp_path / "elsewhere"
    dangling = tmp_path / "dangling"
    dangling.symlink_to(target)
    with pytest.raises(RunDirError, match="symbolic link"), staged_dir(dangling, "bundle"):
        pass
    assert not target.exists()
    res = runner.invoke(app, ["bundle", str(run), "-o", str(dangling), "--precision", "fp32"])
    assert res.exit_code == 2 and "symbolic link" in _one_line(res.output)
    assert not target.exists()
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    from edgeprune import api

    with pytest.raises(RunDirError, match="symbolic link"):
        api.bundle_run(run, link, ["fp32"])
    assert list(real.iterdir()) == []


def _hold_lock(path: Path) -> subprocess.Popen:
    """Another process holding the output's lock (as a running edgeprune would)."""
    code = (f"import sys, time; from edgeprune.run import RunLock; RunLock({str(path)!r}).acquire(); "
            "print('held', flush=True); time.sleep(60)")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert p.stdout.readline().strip() == "held"
    return p


def test_the_output_lock_comes_before_any_work(run, tmp_path, monkeypatch):
    from edgeprune import api
    from edgeprune.ops import bundle as ops_bundle

    onnx_file = tmp_path / "m.onnx"
    shutil.copy(run / "model.onnx", onnx_file)
    out = tmp_path / "audits" / "m"
    bundle_out = tmp_path / "B"
    holders = [_hold_lock(out), _hold_lock(bundle_out)]
    try:
        read = []

        def open_run(*a):
            read.append(a)
            raise AssertionError("the run was read before the lock was taken")

        monkeypatch.setattr(ops_bundle, "open_run", open_run)
        t0 = time.perf_counter()
        with pytest.raises(RunDirError, match="in use by another edgeprune process"):
            api.audit_model(str(onnx_file), "digits", membership="split", attacks=["loss"], out=out, log=lambda m: None)
        with pytest.raises(RunDirError, match="in use by another edgeprune process"):
            api.bundle_run(run, bundle_out, ["fp32"])
        assert time.perf_counter() - t0 < 5 and not read
        assert not (out.parent / ".m.cache").exists()  # no signal computed, nothing written
    finally:
        for h in holders:
            h.kill()
            h.wait()


def test_deploy_holds_the_bundle_lock(tmp_path):
    from edgeprune.bench.remote import Host, deploy

    bundle = tmp_path / "B"
    with staged_dir(bundle, "bundle") as tmp:
        (tmp / "manifest.json").write_text("{}")
    holder = _hold_lock(bundle)
    try:
        with pytest.raises(RunDirError, match="in use by another edgeprune process"):
            deploy(bundle, Host("user@jetson"))
    finally:
        holder.kill()
        holder.wait()


def _fail_savez(monkeypatch):
    from edgeprune.attack import signals

    real = signals.np.savez

    def full_disk(file, **arrays):
        real(file, **arrays)  # bytes reach the temp file, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(signals.np, "savez", full_disk)


def test_a_failed_cache_write_leaves_no_temp_file(tmp_path, monkeypatch):
    from edgeprune.attack.signals import SignalCache, Signals

    cache = SignalCache(tmp_path / "cache")
    sig = Signals(np.zeros((3, 2)), np.array([0, 1, 0]))
    cache.put("m", "s", sig)
    _fail_savez(monkeypatch)
    with pytest.raises(OSError):
        cache.put("m2", "s", sig)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [cache._name("m", "s", False)]
    monkeypatch.undo()
    staged = SignalCache(tmp_path / "cache", tmp_path / "stage")
    assert staged.get("m", "s", False) is not None  # read in place
    staged.put("m3", "s", sig)  # written to the stage only
    assert len(list((tmp_path / "cache").iterdir())) == 1 and len(list((tmp_path / "stage").iterdir())) == 1
    assert staged.get("m3", "s", False) is not None


def test_a_reaudit_stages_its_cache_and_a_failed_one_leaves_the_run_as_it_was(run, tmp_path, monkeypatch):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    before = _tree(copy)
    _fail_savez(monkeypatch)
    res = runner.invoke(app, ["audit", str(copy), "--on", "torch", "--attacks", "loss"])
    assert res.exit_code == 2, res.output
    assert "no space left" in _one_line(res.output)
    assert _tree(copy) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".run.lock", "run"]
    monkeypatch.undo()
    res = runner.invoke(app, ["audit", str(copy), "--on", "torch", "--attacks", "loss"])
    assert res.exit_code == 0, res.output
    after = _tree(copy)
    new_cache = [rel for rel in after if rel.startswith("audit_cache/") and rel not in before]
    assert new_cache and not [rel for rel in after if ".tmp" in rel]
    man = json.loads((copy / MANIFEST).read_text())
    for rel, digest in man["artifacts"].items():
        assert sha256_file(copy / rel) == digest, rel


def test_no_onnxruntime_telemetry_in_home(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("ORT_DISABLE_TELEMETRY", "XDG_CACHE_HOME")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    code = "import {}; import onnxruntime; onnxruntime.InferenceSession"
    telemetry = Path(".cache/Microsoft/DeveloperTools/.onnxruntime")
    control = tmp_path / "control"
    control.mkdir()
    subprocess.run([sys.executable, "-c", code.format("numpy")], env={**env, "HOME": str(control)}, check=True)
    if not (control / telemetry).exists():
        pytest.skip("this onnxruntime writes no telemetry directory: nothing to turn off")
    home = tmp_path / "home"
    home.mkdir()
    subprocess.run([sys.executable, "-c", code.format("edgeprune.cli")], env={**env, "HOME": str(home)}, check=True)
    assert not (home / telemetry).exists() and not (home / ".cache").exists()


# --- item 7: the Ctrl-C hint --------------------------------------------------------------------------------

@pytest.mark.parametrize(("command", "patch", "hint"), [
    (["export", "{run}"], "export_run", "run the same export again"),
    (["bundle", "{run}", "-o", "{tmp}/B"], "bundle_run", "run the same bundle command again"),
    (["audit", "{run}", "--attacks", "loss"], "audit_run", "run the same audit again"),
    (["compress", "mlp", "--data", "digits", "-o", "{tmp}/r"], "compress", "rerun with --resume"),
])
def test_ctrl_c_names_the_way_to_continue(run, tmp_path, monkeypatch, command, patch, hint):
    from edgeprune import api

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(api, patch, interrupted)
    res = runner.invoke(app, [c.format(run=run, tmp=tmp_path) for c in command])
    assert res.exit_code == 130
    line = _one_line(res.output)
    assert hint in line and ("--resume" in line) == (command[0] == "compress")


# --- issue 26 item 4: a full disk ---------------------------------------------------------------------------

def test_a_full_disk_is_one_line_naming_the_path_and_the_earlier_output_stays(run, tmp_path, monkeypatch):
    from edgeprune.export import bundle as export_bundle
    from edgeprune.export import onnx as export_onnx_module

    out = tmp_path / "B"
    res = runner.invoke(app, ["bundle", str(run), "-o", str(out), "--precision", "fp32"])
    assert res.exit_code == 0, res.output
    before_bundle, before_run = _tree(out), _tree(run)

    def full_disk(*a, **k):  # as torch.onnx / onnx.save raise it: no file name
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(export_bundle.np, "savez", full_disk)  # samples.npz
    res = runner.invoke(app, ["bundle", str(run), "-o", str(out), "--precision", "fp32"])
    assert res.exit_code == 2
    line = _one_line(res.output)
    assert "no space left" in line and str(out) in line.replace("\n", "")
    assert _tree(out) == before_bundle
    assert sorted(p.name for p in tmp_path.iterdir()) == [".B.lock", "B"]
    monkeypatch.undo()

    monkeypatch.setattr(export_onnx_module, "export_onnx", full_disk)
    res = runner.invoke(app, ["export", str(run)])
    assert res.exit_code == 2 and "no space left" in _one_line(res.output)
    assert _tree(run) == before_run


def _tmpfs(path: Path, size: str) -> None:
    path.mkdir(exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    got = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                         text=True)
    if got.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {got.stderr.strip()[:200]}")


@pytest.mark.slow
def test_compress_on_a_real_full_disk_then_resume(tmp_path):
    disk = tmp_path / "disk"
    _tmpfs(disk, "2m")
    try:
        (tmp_path / "r.yaml").write_text(yaml.safe_dump(RECIPE))
        args = ["compress", "mlp", "--data", "purchase-synth:2000", "--recipe", str(tmp_path / "r.yaml"),
                "-o", str(disk / "run")]
        res = runner.invoke(app, args)
        assert res.exit_code == 2
        line = _one_line(res.output)
        assert "no space left" in line and str(disk) in line and "--resume" in line
        assert not (disk / "run").exists() and (disk / ".run.partial" / MANIFEST).is_file()
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        res = runner.invoke(app, [*args, "--resume"])
        assert res.exit_code == 0, res.output
        assert "train: done before, skipped" in res.output
        man = json.loads((disk / "run" / MANIFEST).read_text())
        assert man["complete"]
        for rel, digest in man["artifacts"].items():
            assert sha256_file(disk / "run" / rel) == digest, rel
        # a bundle onto the nearly full disk: one line, the earlier bundle intact, then it works with space
        res = runner.invoke(app, ["bundle", str(disk / "run"), "-o", str(disk / "B"), "--precision", "fp32"])
        assert res.exit_code == 0, res.output
        before = _tree(disk / "B")
        free = shutil.disk_usage(disk).free
        with open(disk / "filler", "wb") as f:
            f.truncate(0)
            f.write(b"\0" * max(0, free - 64 * 1024))
        res = runner.invoke(app, ["bundle", str(disk / "run"), "-o", str(disk / "B"), "--precision", "fp32"])
        assert res.exit_code == 2 and "no space left" in _one_line(res.output)
        assert _tree(disk / "B") == before
        assert not [p for p in disk.iterdir() if p.name.startswith(".B.") and p.name != ".B.lock"]
        res = runner.invoke(app, ["report", str(disk / "run"), "-o", str(disk / "rep" / "report.html")])
        assert res.exit_code == 2 and "no space left" in _one_line(res.output)
        assert not (disk / "rep" / "report.html").exists()
        assert not [p for p in (disk / "rep").rglob("*") if p.name.startswith(".") or ".tmp" in p.name]  # no temp
        (disk / "filler").unlink()
        res = runner.invoke(app, ["bundle", str(disk / "run"), "-o", str(disk / "B"), "--precision", "fp32"])
        assert res.exit_code == 0, res.output
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)

