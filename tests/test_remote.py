"""Deploy a bundle over real SSH to a throwaway sshd on 127.0.0.1 (the "device" is a temp dir)."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from edgeprune.bench.remote import parse_tegrastats
from edgeprune.cli import app

runner = CliRunner()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    sshd_bin = shutil.which("sshd") or "/usr/sbin/sshd"
    if not Path(sshd_bin).exists() or shutil.which("ssh-keygen") is None:
        pytest.skip("sshd cannot be started: openssh-server is not installed (.ci/run installs it)")
    d = tmp_path_factory.mktemp("sshd")
    os.chmod(d, 0o700)
    for name in ("host", "client", "stranger"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True)
    (d / "authorized_keys").write_text((d / "client.pub").read_text())
    os.chmod(d / "authorized_keys", 0o600)
    port = _free_port()
    user = os.environ.get("USER") or subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    (d / "sshd_config").write_text(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {d / 'host'}
PidFile {d / 'sshd.pid'}
AuthorizedKeysFile {d / 'authorized_keys'}
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
Subsystem sftp internal-sftp
""")
    Path("/run/sshd").mkdir(exist_ok=True)
    proc = subprocess.Popen([sshd_bin, "-D", "-e", "-f", str(d / "sshd_config")], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 10
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        if proc.poll() is not None:
            pytest.skip(f"sshd cannot be started: {proc.stderr.read().strip().splitlines()[-1:]}")
        time.sleep(0.1)
    else:
        proc.kill()
        pytest.skip("sshd cannot be started: it did not listen within 10 s")
    host_pub = (d / "host.pub").read_text().split()
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    for alias, key in (("device", "client"), ("intruder", "stranger")):
        (d / f"{alias}.config").write_text(f"""Host {alias}
  HostName 127.0.0.1
  Port {port}
  User {user}
  IdentityFile {d / key}
  IdentitiesOnly yes
  UserKnownHostsFile {d / 'known_hosts'}
  StrictHostKeyChecking yes
""")
    yield d
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    (tmp / "r.yaml").write_text(yaml.safe_dump({
        "train": {"epochs": 2}, "finetune": {"epochs": 1}, "quant": {"mode": "none"},
        "bench": {"batches": [1], "warmup_s": 0.0, "duration_s": 0.05, "min_runs": 3}}))
    res = runner.invoke(app, ["compress", "mlp", "--data", "purchase-synth:2000", "--recipe", str(tmp / "r.yaml"),
                              "-o", str(tmp / "run")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["bundle", str(tmp / "run"), "-o", str(tmp / "bundle"), "--precision", "fp32,int8"])
    assert res.exit_code == 0, res.output
    return tmp / "bundle"


def test_deploy_over_loopback_ssh_runs_run_onnx_and_collects_results(sshd, bundle, tmp_path):
    remote = tmp_path / "device"  # absolute path on the "device"
    res = runner.invoke(app, ["deploy", str(bundle), "--host", "device", "--ssh-config", str(sshd / "device.config"),
                              "--remote-dir", str(remote), "--python", sys.executable, "--duration", "0.2"])
    assert res.exit_code == 0, res.output
    assert (remote / "manifest.json").is_file() and (remote / "results" / "onnx.json").is_file()
    local = bundle / "results" / "device"
    info = json.loads((local / "deploy.json").read_text())
    assert info["steps"] == ["run_onnx.py"] and info["trtexec"] is False
    results = info["onnx"]["results"]
    assert [r["precision"] for r in results] == ["fp32", "int8"] and all(r["check_passed"] for r in results)
    assert "fp32" in res.output and "ok" in res.output


def test_auth_failure_and_bad_host_are_one_line_errors(sshd, bundle):
    res = runner.invoke(app, ["deploy", str(bundle), "--host", "intruder", "--ssh-config", str(sshd / "intruder.config")])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "ssh to intruder failed" in res.output and "Permission denied" in res.output
    res = runner.invoke(app, ["deploy", str(bundle), "--host", "nobody@no-such-host.invalid",
                              "--ssh-config", str(sshd / "device.config")])
    assert res.exit_code == 2 and "Traceback" not in res.output and "ssh to nobody@no-such-host.invalid failed" in res.output
    res = runner.invoke(app, ["deploy", str(bundle), "--host", "device", "--ssh-config", str(sshd / "device.config"),
                              "--remote-dir", "x; rm -rf ~"])
    assert res.exit_code == 2 and "remote directory" in res.output
    res = runner.invoke(app, ["deploy", str(bundle), "--host", "-oProxyCommand=evil"])
    assert res.exit_code == 2 and "invalid host" in res.output


def test_unknown_host_key_is_refused(sshd, bundle, tmp_path):
    cfg = (sshd / "device.config").read_text().replace(str(sshd / "known_hosts"), str(tmp_path / "empty_known_hosts"))
    (tmp_path / "strict.config").write_text(cfg)
    res = runner.invoke(app, ["deploy", str(bundle), "--host", "device", "--ssh-config", str(tmp_path / "strict.config")])
    assert res.exit_code == 2 and "Host key verification failed" in res.output


def test_tegrastats_power_parsing():
    log = ("RAM 2000/7000MB CPU [1%@1000] VDD_IN 4000mW/4000mW VDD_CPU_GPU_CV 500mW/500mW\n"
           "RAM 2000/7000MB CPU [1%@1000] VDD_IN 6000mW/5000mW VDD_CPU_GPU_CV 900mW/700mW\n")
    assert parse_tegrastats(log) == {"samples": 2, "mean_power_mw": 5000.0}
    assert parse_tegrastats("no rails here") == {"samples": 0}


def test_bench_backend_remote_times_dense_and_compressed_on_the_device(sshd, tmp_path):
    (tmp_path / "r.yaml").write_text(yaml.safe_dump({
        "train": {"epochs": 2}, "finetune": {"epochs": 1},
        "bench": {"batches": [1], "warmup_s": 0.0, "duration_s": 0.05, "min_runs": 3}}))
    run = tmp_path / "run"
    res = runner.invoke(app, ["compress", "mlp", "--data", "purchase-synth:2000", "--recipe", str(tmp_path / "r.yaml"),
                              "-o", str(run)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["bench", str(run), "--backend", "remote", "--host", "device", "--ssh-config",
                              str(sshd / "device.config"), "--python", sys.executable, "--batch", "1,4",
                              "--duration", "0.1", "--remote-dir", str(tmp_path / "device")])
    assert res.exit_code == 0, res.output
    entry = json.loads((run / "bench.json").read_text())["entries"][-1]
    assert entry["backend"] == "remote" and entry["host"] == "device"
    assert set(entry["variants"]) == {"dense", "pruned", "pruned+int8"}
    for v in entry["variants"].values():
        assert [r["batch"] for r in v["latency"]] == [1, 4]
        assert all(r["check_passed"] and r["p50_ms"] > 0 for r in v["latency"])
    assert entry["variants"]["dense"]["latency"][0]["speedup_vs_dense"] == 1.0
    res = runner.invoke(app, ["bench", str(run), "--backend", "remote"])
    assert res.exit_code == 2 and "needs --host" in res.output
