"""Nothing lost, nothing half-written: output directories, run locks, in-place updates and artifact checks."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from edgeprune.cli import app
from edgeprune.errors import RunDirError
from edgeprune.run import (
    COMMIT,
    MANIFEST,
    OUTPUT_MARKER,
    RunLock,
    RunUpdate,
    lock_file,
    recover_update,
    sha256_file,
    staged_dir,
    update_dir,
)

runner = CliRunner()
EDGEPRUNE = [sys.executable, "-m", "edgeprune.cli"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "EDGEPRUNE_NO_PROGRESS": "1",
       "COLUMNS": "200"}
RECIPE = {
    "train": {"epochs": 2}, "finetune": {"epochs": 1}, "quant": {"mode": "int8", "calibration_samples": 64},
    "audit": {"attacks": ["loss"], "bootstrap": 20},
    "bench": {"batches": [1], "warmup_s": 0.0, "duration_s": 0.05, "min_runs": 3},
}


def _intact(run: Path) -> None:
    """A finished run in place: complete manifest, every artifact at its recorded sha256, nothing moved aside."""
    man = json.loads((run / MANIFEST).read_text())
    assert man["complete"]
    for rel, digest in man["artifacts"].items():
        assert sha256_file(run / rel) == digest, rel
    assert not (run.parent / f".{run.name}.partial").exists()


def _lock_is_free(path: Path) -> bool:
    try:
        with RunLock(path):
            return True
    except RunDirError:
        return False


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("integrity")
    (tmp / "r.yaml").write_text(yaml.safe_dump(RECIPE))
    out = tmp / "run"
    res = runner.invoke(app, ["compress", "mlp", "--data", "purchase-synth:2000", "--recipe", str(tmp / "r.yaml"),
                              "-o", str(out)])
    assert res.exit_code == 0, res.output
    return out


# --- locks -----------------------------------------------------------------------------------------

HOLD = textwrap.dedent("""
    import sys, time
    from edgeprune.run import RunLock
    RunLock(sys.argv[1]).acquire()
    print("locked", flush=True)
    time.sleep(120)
""")


def test_a_held_lock_refuses_at_once_with_the_pid_and_dies_with_its_holder(tmp_path):
    target = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(target)], stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert holder.stdout.readline().strip() == "locked"
        t0 = time.monotonic()
        with pytest.raises(RunDirError, match=f"PID {holder.pid}"):
            RunLock(target).acquire()
        assert time.monotonic() - t0 < 1.0
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert _lock_is_free(target)  # kill -9 leaves no stale lock
    assert lock_file(target) == tmp_path / ".out.lock"


def test_the_lock_is_reentrant_in_one_process_and_not_inherited_by_forks(tmp_path):
    ready, tell = os.pipe()
    with RunLock(tmp_path / "x"), RunLock(tmp_path / "x"):
        pid = os.fork()
        if pid == 0:  # a forked child (a data loader worker, say) must not keep its parent's lock alive
            os.write(tell, b"1")  # (the fork hooks have run by now)
            time.sleep(10)
            os._exit(0)
        assert os.read(ready, 1) == b"1"
    try:
        assert _lock_is_free(tmp_path / "x")
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def test_every_command_that_writes_a_run_takes_its_lock(run, tmp_path):
    from edgeprune.recipe import Recipe
    from edgeprune.tune import Budget, Space, tune

    tune_dir = tmp_path / "tune"
    holders = [subprocess.Popen([sys.executable, "-c", HOLD, str(d)], stdout=subprocess.PIPE, text=True, env=ENV)
               for d in (run, tune_dir)]
    try:
        for h in holders:
            assert h.stdout.readline().strip() == "locked"
        for cmd in (["audit", str(run), "--attacks", "loss"], ["export", str(run), "--int8"],
                    ["bench", str(run), "--duration", "0.05", "--batch", "1"],
                    ["compress", "mlp", "--data", "purchase-synth:2000", "-o", str(run), "--resume"]):
            res = runner.invoke(app, cmd)
            assert res.exit_code == 2 and f"PID {holders[0].pid}" in res.output, (cmd, res.output)
        with pytest.raises(RunDirError, match=f"PID {holders[1].pid}"):
            tune(Recipe(data="purchase-synth:2000"), Space(), Budget(), tune_dir, jobs=2)
        assert not tune_dir.exists()
    finally:
        for h in holders:
            h.kill()
            h.wait()
    _intact(run)


# --- output directories ----------------------------------------------------------------------------

def test_staged_dir_never_replaces_what_it_did_not_write(tmp_path):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "thesis.tex").write_text("years of work")
    with pytest.raises(RunDirError, match="not empty"), staged_dir(user, "bundle") as tmp:
        (tmp / "a").write_text("x")
    assert (user / "thesis.tex").read_text() == "years of work"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".mine")] == [".mine.lock"]  # no temp dir

    out = tmp_path / "bundle"
    for text in ("first", "second"):  # its own earlier output is replaced
        with staged_dir(out, "bundle") as tmp:
            (tmp / "a").write_text(text)
        assert (out / "a").read_text() == text and (out / OUTPUT_MARKER).is_file()
    with pytest.raises(RunDirError, match="not an earlier audit output"), staged_dir(out, "audit"):
        pass
    empty = tmp_path / "empty"
    empty.mkdir()
    with staged_dir(empty, "audit") as tmp:
        (tmp / "a").write_text("x")
    assert (empty / "a").is_file()


def _tiny_onnx(path: Path) -> Path:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(size=(64, 10)).astype(np.float32), "w")
    nodes = [helper.make_node("Flatten", ["input"], ["flat"]), helper.make_node("MatMul", ["flat", "w"], ["logits"])]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                           ["batch", 1, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_audit_of_a_file_refuses_a_user_directory_and_replaces_its_own(tmp_path):
    model = _tiny_onnx(tmp_path / "tiny.onnx")
    user = tmp_path / "results"
    user.mkdir()
    (user / "notes.txt").write_text("keep me")
    args = ["audit", str(model), "--data", "digits", "--membership", "split", "--attacks", "loss"]
    res = runner.invoke(app, [*args, "-o", str(user)])
    assert res.exit_code == 2 and "not empty" in res.output, res.output
    assert (user / "notes.txt").read_text() == "keep me"
    out = tmp_path / "audit"
    for _ in range(2):  # a second audit into its own earlier output replaces it
        res = runner.invoke(app, [*args, "-o", str(out)])
        assert res.exit_code == 0, res.output
        assert json.loads((out / "audit.json").read_text())["variants"]["dense"]["attacks"]["loss"]["auc"] > 0


def test_bundle_refuses_the_run_itself_and_a_user_directory(run, tmp_path):
    res = runner.invoke(app, ["bundle", str(run), "-o", str(run), "--precision", "fp32"])
    assert res.exit_code == 2 and "an edgeprune run" in res.output, res.output
    _intact(run)
    user = tmp_path / "deploy"
    user.mkdir()
    (user / "keys.txt").write_text("secret")
    res = runner.invoke(app, ["bundle", str(run), "-o", str(user), "--precision", "fp32"])
    assert res.exit_code == 2 and (user / "keys.txt").read_text() == "secret"


# --- updates of a finished run ---------------------------------------------------------------------

def _fake_run(root: Path) -> Path:
    run = root / "r"
    run.mkdir()
    (run / "audit.json").write_text("old")
    man = {"complete": True, "artifacts": {"audit.json": sha256_file(run / "audit.json")}, "stages": {}}
    (run / MANIFEST).write_text(json.dumps(man))
    return run


def test_an_update_swaps_in_all_of_its_files_or_none(tmp_path):
    run = _fake_run(tmp_path)
    with pytest.raises(ValueError), RunUpdate(run) as up:  # fails before committing: the run is untouched
        up.write_text("audit.json", "new")
        raise ValueError("killed")
    assert (run / "audit.json").read_text() == "old" and not update_dir(run).exists()
    _intact(run)

    up = RunUpdate(run)  # an update "killed" after its journal was written, halfway through the swap
    up.write_text("audit.json", "new")
    up.write_text("sub/roc.png", "png")
    stage = update_dir(run)
    (stage / MANIFEST).write_text(json.dumps(up.manifest))
    (stage / COMMIT).write_text(json.dumps(up.staged))
    os.replace(stage / "files" / "audit.json", run / "audit.json")
    up.close()
    recover_update(run)  # what the next command that locks the run does first
    assert (run / "sub/roc.png").read_text() == "png" and not stage.exists()
    _intact(run)

    up = RunUpdate(run)  # one that never committed is dropped by the next command
    up.write_text("audit.json", "never")
    up.close()
    with RunUpdate(run) as up2:
        up2.write_text("extra.json", "{}")
    assert (run / "audit.json").read_text() == "new" and (run / "extra.json").is_file()
    _intact(run)


def _wait_for(cond, timeout: float, proc: subprocess.Popen) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_kill_9_during_an_audit_leaves_the_run_in_place_and_unlocked(run):
    before = (run / "audit.json").read_bytes()
    proc = subprocess.Popen([*EDGEPRUNE, "audit", str(run), "--attacks", "loss,confidence,entropy", "--shadows", "1"],
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        started = _wait_for(lambda: update_dir(run).exists() or (run.parent / f".{run.name}.partial").exists(),
                            300, proc)
        assert started, proc.stderr.read().decode() if proc.poll() is not None else "no audit started"
        time.sleep(0.2)  # into the audit (its update directory exists); short, so a fast machine is still in it
        assert proc.poll() is None, "the audit finished before it could be killed"
    finally:
        proc.kill()
        proc.wait()
    assert run.is_dir(), "the run was moved away and left there"
    _intact(run)
    assert (run / "audit.json").read_bytes() == before
    assert _lock_is_free(run)
    res = runner.invoke(app, ["audit", str(run), "--attacks", "loss"])  # and the next audit works
    assert res.exit_code == 0, res.output
    assert not update_dir(run).exists()
    _intact(run)


@pytest.mark.slow
def test_a_second_compress_to_the_same_run_is_refused_with_the_holders_pid(tmp_path):
    out = tmp_path / "run"
    (tmp_path / "r.yaml").write_text(yaml.safe_dump({**RECIPE, "train": {"epochs": 500}}))
    args = [*EDGEPRUNE, "compress", "mlp", "--data", "purchase-synth:2000", "--recipe", str(tmp_path / "r.yaml"),
            "-o", str(out)]
    first = subprocess.Popen(args, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert _wait_for(lambda: (tmp_path / ".run.partial").exists(), 300, first), "the first run did not start"
        second = subprocess.run(args, env=ENV, capture_output=True, text=True, timeout=600)
        assert first.poll() is None, "the first run ended before the second one was tried"
        assert second.returncode == 2, second.stderr
        assert f"PID {first.pid}" in second.stderr and "Traceback" not in second.stderr
        assert (tmp_path / ".run.partial").is_dir()  # the first run's staging was not touched
        res = runner.invoke(app, ["export", str(out)])  # nor can another command use it meanwhile
        assert res.exit_code == 2 and f"PID {first.pid}" in res.output, res.output
    finally:
        first.kill()
        first.wait()
    assert _lock_is_free(out)


# --- reports and artifact checks --------------------------------------------------------------------

def test_report_into_a_run_never_overwrites_its_files(run):
    before = {n: (run / n).read_bytes() for n in ("report.json", "report.md")}
    res = runner.invoke(app, ["report", str(run), "-o", str(run / "report.html")])
    assert res.exit_code == 2 and "belongs to the run" in res.output, res.output
    assert {n: (run / n).read_bytes() for n in before} == before
    assert not (run / "report.html").exists()
    _intact(run)


@pytest.mark.parametrize("rel", ["model.int8.onnx", "dense/model.onnx", "audit.json"])
def test_a_flipped_byte_in_any_artifact_read_is_refused_naming_the_file(run, tmp_path, rel):
    p = run / rel
    original = p.read_bytes()
    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 0x01
    p.write_bytes(bytes(flipped))
    try:
        commands = [["report", str(run), "-o", str(tmp_path / "r.html")]]
        if rel.endswith(".onnx"):
            commands += [["audit", str(run), "--attacks", "loss"],
                         ["bench", str(run), "--duration", "0.05", "--batch", "1"]]
        for args in commands:
            res = runner.invoke(app, args)
            assert res.exit_code == 2, (args, res.output)
            assert rel in res.output and "sha256" in res.output and "Traceback" not in res.output
            assert len(res.output.strip().splitlines()) == 1, res.output
    finally:
        p.write_bytes(original)
    _intact(run)


def test_report_json_is_read_only_as_the_manifest_records_it(run):
    """compress and tune read a run's report.json back: a tampered one is refused, not believed."""
    from edgeprune.errors import RunDirError
    from edgeprune.stages.report import load_report

    p = run / "report.json"
    original = p.read_bytes()
    assert load_report(run) == json.loads(original)
    p.write_bytes(original.replace(b"{", b'{"injected": 1, ', 1))
    try:
        with pytest.raises(RunDirError, match="report.json"):
            load_report(run)
    finally:
        p.write_bytes(original)
    _intact(run)


def test_resume_says_which_artifact_failed_its_check(run, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    (copy / "bench.json").write_text("{}")
    res = runner.invoke(app, ["compress", "mlp", "--data", "purchase-synth:2000", "--recipe",
                              str(run.parent / "r.yaml"), "-o", str(copy), "--resume"])
    assert res.exit_code == 0, res.output
    assert "bench: bench.json differs from the sha256 in the run's manifest" in " ".join(res.output.split()), res.output
    assert res.output.count("skipped") == 6
    _intact(copy)


# --- export adds to the run, deterministically -------------------------------------------------------

def test_exports_add_to_the_run_and_repeat_exactly(run):
    res = runner.invoke(app, ["export", str(run), "--fp16"])
    assert res.exit_code == 0, res.output
    fp16 = sha256_file(run / "export" / "model.fp16.onnx")
    digests = []
    for _ in range(2):
        res = runner.invoke(app, ["export", str(run), "--int8"])
        assert res.exit_code == 0, res.output
        info = json.loads((run / "export" / "export.json").read_text())
        digests.append((sha256_file(run / "export" / "model.int8.onnx"),
                        info["files"]["model.int8.onnx"]["top1_agreement_with_fp32"]))
    assert digests[0] == digests[1]  # same run, same options: the same int8 file and figures
    assert {"model.fp32.onnx", "model.fp16.onnx", "model.int8.onnx"} <= set(info["files"])
    assert "model.int8.onnx" in info["written"] and "model.fp16.onnx" not in info["written"]
    assert sha256_file(run / "export" / "model.fp16.onnx") == fp16  # the first export's file is still there
    assert info["files"]["model.fp16.onnx"]["opset"] == 20
    _intact(run)


# --- a run directory is data: tampered files are refused, paths stay inside the run (issue 25) -------

def _tampered_copy(run: Path, dest: Path, rehash: bool, edit) -> Path:
    """A copy of ``run`` whose files ``edit(copy, manifest)`` changes; with ``rehash`` the manifest is made
    consistent again (artifact sha256s and recipe_hash recomputed), as an attacker who knows the format can."""
    import hashlib
    import shutil

    from edgeprune.run import recipe_hash

    shutil.copytree(run, dest)
    man = json.loads((dest / MANIFEST).read_text())
    edit(dest, man)
    if rehash:
        man["artifacts"] = {rel: sha256_file(dest / rel) if (dest / rel).is_file() else digest
                            for rel, digest in man["artifacts"].items()}
        for rel in ("inversion.json", "inversion/g.png"):
            if (dest / rel).is_file():
                man["artifacts"][rel] = hashlib.sha256((dest / rel).read_bytes()).hexdigest()
        man["recipe_hash"] = recipe_hash(man["recipe"])
    (dest / MANIFEST).write_text(json.dumps(man))
    return dest


def _inversion(grids: dict) -> dict:
    stats = {"psnr": {"mean": 12.0, "ci95": [11.0, 13.0]}}
    return {"variants": {"dense": {"features": {"feature_shape": [8], "attacks": {"inversion": stats}}}},
            "grids": grids}


@pytest.mark.parametrize("rehash", [False, True])
@pytest.mark.parametrize("case", ["absolute", "dotdot", "symlink", "audit-artifact"])
def test_report_refuses_run_files_that_lead_outside_the_run(run, tmp_path, rehash, case):
    escape = tmp_path / "x" / "escaped_report"

    def edit(d: Path, man: dict):
        if case == "audit-artifact":
            audit = json.loads((d / "audit.json").read_text())
            audit["variants"]["pruned"]["artifact"] = "/etc/hostname"
            (d / "audit.json").write_text(json.dumps(audit))
            return
        if case == "symlink":
            (d / "inversion").mkdir()
            (d / "inversion" / "g.png").symlink_to("/etc/hostname")
            grids = {"features": "inversion/g.png"}
        else:
            grids = {"/../../../../../../.." + str(escape): "/etc/hostname" if case == "absolute" else "../../../etc/hostname"}
        (d / "inversion.json").write_text(json.dumps(_inversion(grids)))

    copy = _tampered_copy(run, tmp_path / "copy", rehash, edit)
    res = runner.invoke(app, ["report", str(copy), "-o", str(tmp_path / "r2" / "report.html")])
    assert res.exit_code == 2, res.output
    assert len(res.output.strip().splitlines()) == 1 and "Traceback" not in res.output, res.output
    assert ("sha256" in res.output) if not rehash else ("not inside the run" in res.output
                                                       or "leads outside the run" in res.output), res.output
    assert not (tmp_path / "r2").exists() and not escape.parent.exists()


@pytest.mark.parametrize("rehash", [False, True])
def test_a_manifest_naming_code_never_runs_it_unless_the_user_names_or_trusts_it(run, tmp_path, monkeypatch, rehash):
    class Called(Exception):
        pass

    def boom():
        raise Called("os.abort called")

    monkeypatch.setattr(os, "abort", boom)
    copy = _tampered_copy(run, tmp_path / "copy", rehash, lambda d, man: man["recipe"].__setitem__("model", "os:abort"))
    commands = [["export", str(copy)], ["export", str(copy), "--split", "0"], ["bench", str(copy), "--batch", "1"],
                ["audit", str(copy), "--attacks", "loss"], ["bundle", str(copy), "-o", str(tmp_path / "b")]]
    for args in commands:
        res = runner.invoke(app, args)
        assert res.exit_code == 2 and not isinstance(res.exception, Called), (args, res.output)
        assert len(res.output.strip().splitlines()) == 1 and "Traceback" not in res.output, res.output
        if rehash:
            assert "'os:abort'" in res.output and "--model os:abort" in res.output and "--trust-code" in res.output
        else:
            assert "recipe_hash" in res.output, res.output
    res = runner.invoke(app, ["report", str(copy), "-o", str(tmp_path / "r.html")])
    assert res.exit_code == (0 if rehash else 2), res.output  # the report builds no model; it checks the hash
    if rehash:  # the user's explicit word builds the run's model (here: calls os.abort)
        for extra in (["--trust-code"], ["--model", "os:abort"]):
            res = runner.invoke(app, ["export", str(copy), *extra])
            assert isinstance(res.exception, Called), res.output
        res = runner.invoke(app, ["export", str(copy), "--model", "os:system"])  # another spec is no consent
        assert res.exit_code == 2 and "'os:abort'" in res.output
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("audit", [{"variants": []}, {"variants": {"dense": {"attacks": 3}}}, [1, 2]])
def test_report_of_run_files_that_hold_nonsense_at_a_consistent_hash_is_one_line(run, tmp_path, audit):
    copy = _tampered_copy(run, tmp_path / "copy", True, lambda d, man: (d / "audit.json").write_text(json.dumps(audit)))
    res = runner.invoke(app, ["report", str(copy), "-o", str(tmp_path / "r" / "report.html")])
    assert res.exit_code == 2 and "the run is damaged" in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1 and not (tmp_path / "r").exists()


# --- the HTML report of a run whose every name carries markup (issue 25 items 1 and 6) -----------------
XSS = '"><img src=x onerror=alert(1)>'
REPORT_TAGS = {"html": {"lang"}, "head": set(), "meta": {"charset"}, "title": set(), "style": set(), "body": set(),
               "h1": set(), "h2": set(), "p": set(), "table": {"id"}, "thead": set(), "tbody": set(), "tr": set(),
               "th": set(), "td": set(), "figure": set(), "img": {"id", "alt", "src"}, "figcaption": set(),
               "script": set()}


class _Page:
    """Every element, attribute, text and script of an HTML page, read with the standard library's parser."""

    def __init__(self, text: str):
        from html.parser import HTMLParser

        self.elements, self.text, self.scripts = [], [], []
        page, where = self, []

        class P(HTMLParser):
            def handle_starttag(self, tag, attrs):
                page.elements.append((tag, dict(attrs)))
                where.append(tag)

            def handle_startendtag(self, tag, attrs):
                page.elements.append((tag, dict(attrs)))

            def handle_endtag(self, tag):
                if where and where[-1] == tag:
                    where.pop()

            def handle_data(self, data):
                (page.scripts if where and where[-1] == "script" else page.text).append(data)

        P(convert_charrefs=True).feed(text)


def _check_report_page(text: str) -> _Page:
    import re

    from edgeprune.report.html import SCRIPT

    page = _Page(text)
    for tag, attrs in page.elements:
        assert tag in REPORT_TAGS, (tag, attrs)
        assert set(attrs) <= REPORT_TAGS[tag], (tag, attrs)
        assert re.fullmatch(r"[A-Za-z0-9._-]+", attrs.get("id", "x")), attrs
        if tag == "img":
            assert re.fullmatch(r"data:image/png;base64,[A-Za-z0-9+/=]+", attrs.get("src", "")), attrs
    assert page.scripts == [SCRIPT]  # the report's own, nothing else
    return page


@pytest.fixture(scope="module")
def hostile_run(run, tmp_path_factory):
    """A copy of the finished run named with markup, whose recipe names a model spec and an npz path with
    markup (hash recomputed: the report builds no model and reads no data), with an inversion audit whose
    split point, attack and picture grid carry markup too (written through RunUpdate: hashes consistent)."""
    import shutil

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgeprune.run import recipe_hash

    out = tmp_path_factory.mktemp("hostile") / f"x{XSS}"
    shutil.copytree(run, out)
    layer = f"f{XSS}"
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1])
    with RunUpdate(out) as up:
        rel = f"inversion/{layer}.png"
        fig.savefig(up.tmp_path(rel), format="png")
        up.commit(rel)
        stats = {"psnr": {"mean": 12.5, "ci95": [12.0, 13.0]}, "judge_accuracy": {"mean": 0.5, "ci95": [0.4, 0.6]}}
        up.write_json("inversion.json", {"variants": {"dense": {layer: {"feature_shape": [8], "attacks": {
            f"inv{XSS}": stats}}}}, "grids": {layer: rel}})
    plt.close(fig)
    man = json.loads((out / MANIFEST).read_text())
    man["recipe"]["model"] = man["model"]["spec"] = f"pkg{XSS}:f"
    man["recipe"]["data"] = man["data"]["spec"] = f"npz:/tmp/d{XSS}/t{XSS}.npz"
    man["recipe_hash"] = recipe_hash(man["recipe"])
    (out / MANIFEST).write_text(json.dumps(man))
    return out


def test_the_report_escapes_every_run_text_and_makes_every_element_and_attribute(hostile_run, tmp_path):
    import re

    out = tmp_path / "rep" / "report.html"
    res = runner.invoke(app, ["report", str(hostile_run), "-o", str(out)])
    assert res.exit_code == 0, res.output
    page = _check_report_page(out.read_text())
    assert sum(tag == "img" for tag, _ in page.elements) == 4  # 3 plots + the inversion grid
    text = "".join(page.text)
    for shown in (hostile_run.name, f"f{XSS}", f"inv{XSS}", f"pkg{XSS}:f", f"t{XSS}.npz"):  # shown as text
        assert shown in text, shown
    ids = [a["id"] for t, a in page.elements if t == "img"]
    assert ids[:3] == ["plot-pareto", "plot-sparsity", "plot-roc"]
    assert re.fullmatch(r"plot-inversion-x-img-src-x-onerror-alert-1-f-img-src-x-[a-z-]*-[0-9a-f]{10}", ids[3])
    files = sorted(p.name for p in (tmp_path / "rep" / "report_plots").iterdir())
    assert len(files) == 4 and all(re.fullmatch(r"[A-Za-z0-9._-]+\.png", n) for n in files), files
    assert {p.name for p in (tmp_path / "rep").iterdir()} == {"report.html", "report.md", "report.json", "report_plots"}
    assert "<img" not in out.with_suffix(".md").read_text()


def test_the_report_of_a_run_named_with_mathtext(hostile_run, tmp_path):
    import shutil

    run = tmp_path / "m$\\frac$"
    shutil.copytree(hostile_run, run)
    res = runner.invoke(app, ["report", str(run), "-o", str(tmp_path / "r.html")])
    assert res.exit_code == 0, res.output
    assert "m$\\frac$" in "".join(_check_report_page((tmp_path / "r.html").read_text()).text)
