"""Deploy a bundle to a Jetson (or any host) over the system's OpenSSH and collect its results.

Every remote command is built from an argument list with each argument shell-quoted (the remote side
always runs a shell); remote paths are also restricted to a safe character set. ~/.ssh/config is honoured
and host keys are checked (BatchMode: no password prompts, no blind trust of unknown hosts).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from edgeprune.errors import UserError

SAFE_PATH = re.compile(r"^[A-Za-z0-9._/-]+$")


class RemoteError(UserError):
    """ssh / scp failed: unknown host, refused connection, authentication, or a failing remote step."""


@dataclass
class Host:
    target: str  # user@host or an alias from ssh config
    port: int | None = None
    identity: str | None = None
    ssh_config: str | None = None
    timeout: int = 20
    extra: list[str] = field(default_factory=list)

    def _opts(self, port_flag: str) -> list[str]:
        o = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.timeout}"]
        if self.ssh_config:
            o = ["-F", self.ssh_config, *o]
        if self.port:
            o += [port_flag, str(self.port)]
        if self.identity:
            o += ["-i", self.identity, "-o", "IdentitiesOnly=yes"]
        return o + self.extra

    def scp_argv(self, src: str, dst: str, recursive: bool = True) -> list[str]:
        return ["scp", *self._opts("-P"), "-q", *(["-r"] if recursive else []), src, dst]


def _check_target(target: str) -> None:
    if not target or target.startswith("-") or any(c.isspace() for c in target):
        raise UserError(f"invalid host {target!r} (expected user@host or an ssh config alias)")


def check_remote_dir(remote_dir: str) -> None:
    """A remote directory is relative to the login's home directory (or absolute); ``~`` is not expanded
    (arguments are quoted), so it is refused rather than creating a directory literally named ``~``."""
    shown = remote_dir if len(remote_dir) <= 60 else remote_dir[:57] + "..."
    if remote_dir.startswith("~"):
        raise UserError(f"remote directory {shown!r}: relative paths are already under your home on the device; "
                        f"write {remote_dir.lstrip('~').lstrip('/') or 'DIR'!r} instead of {shown!r}")
    if remote_dir.startswith("-") or any(part.startswith("-") for part in remote_dir.split("/")):
        raise UserError(f"remote directory {shown!r} may not start a path component with '-'")
    if not SAFE_PATH.match(remote_dir) or ".." in remote_dir.split("/"):
        raise UserError(f"remote directory {shown!r} may only use letters, digits and . _ / - (no '..'); "
                        "it is relative to your home on the device unless it starts with /")


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip() and not ln.startswith("Warning: Permanently")]
    return lines[-1] if lines else "no output"


def sh(host: Host, script_argv: list[list[str]], **kw) -> subprocess.CompletedProcess:
    """Run several quoted commands joined by && in one ssh session (``cd DIR && CMD ...``)."""
    joined = " && ".join(" ".join(shlex.quote(a) for a in argv) for argv in script_argv)
    proc = subprocess.run(["ssh", *host._opts("-p"), host.target, joined], capture_output=True, text=True,
                          timeout=kw.get("timeout", 3600), stdin=subprocess.DEVNULL)
    if kw.get("check", True) and proc.returncode == 255:
        raise RemoteError(f"ssh to {host.target} failed: {_first_line(proc.stderr)}")
    if kw.get("check", True) and proc.returncode != 0:
        raise RemoteError(f"remote step on {host.target} exited {proc.returncode}: {_first_line(proc.stderr or proc.stdout)}")
    return proc


def _has(host: Host, cmd: str) -> bool:
    return sh(host, [["sh", "-c", f"command -v {shlex.quote(cmd)}"]], check=False).returncode == 0


def parse_tegrastats(text: str) -> dict:
    """Mean power in mW from tegrastats lines (VDD_IN, or the sum of the rails when VDD_IN is absent)."""
    totals = []
    for line in text.splitlines():
        rails = {m.group(1): int(m.group(2)) for m in re.finditer(r"(\w+) (\d+)mW/\d+mW", line)}
        if not rails:
            continue
        totals.append(rails.get("VDD_IN", sum(rails.values())))
    return {"samples": len(totals), "mean_power_mw": sum(totals) / len(totals)} if totals else {"samples": 0}


def deploy(bundle: str | Path, host: Host, remote_dir: str | None = None, build_engine: bool = False,
           bench: bool = True, python: str = "python3", duration: float = 5.0, batches: list[int] | None = None,
           log=print) -> dict:
    """Copy the bundle, run the engine build / benchmark there and bring the results home (into the bundle's
    results/HOST/, which a later ``bundle -o`` of the same directory keeps). Holds the bundle's lock: a
    re-bundle meanwhile is refused at once."""
    from edgeprune.run import RunLock

    bundle = Path(bundle).resolve()
    if not (bundle / "manifest.json").is_file():
        raise UserError(f"{bundle} is not an edgeprune bundle (no manifest.json)")
    with RunLock(bundle):
        return _deploy(bundle, host, remote_dir, build_engine, bench, python, duration, batches, log)


def _deploy(bundle: Path, host: Host, remote_dir: str | None, build_engine: bool, bench: bool, python: str,
            duration: float, batches: list[int] | None, log) -> dict:
    _check_target(host.target)
    for tool in ("ssh", "scp"):
        if shutil.which(tool) is None:
            raise UserError(f"{tool} is not installed on this machine (OpenSSH client)")
    remote_dir = remote_dir or f"edgeprune/{bundle.name}"
    check_remote_dir(remote_dir)
    t0 = time.perf_counter()
    sh(host, [["mkdir", "-p", "--", remote_dir]])
    proc = subprocess.run(host.scp_argv(f"{bundle}/.", f"{host.target}:{remote_dir}/"), capture_output=True,
                          text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RemoteError(f"copying the bundle to {host.target} failed: {_first_line(proc.stderr)}")
    log(f"copied {bundle.name} to {host.target}:{remote_dir}")
    info = {"host": host.target, "remote_dir": remote_dir, "copied_s": round(time.perf_counter() - t0, 2)}
    uname = sh(host, [["uname", "-srm"]]).stdout.strip()
    info["uname"] = uname
    if _has(host, "nvpmodel"):
        info["power_mode"] = _first_line(sh(host, [["nvpmodel", "-q"]], check=False).stdout)
    has_trt = _has(host, "trtexec") or sh(host, [["test", "-x", "/usr/src/tensorrt/bin/trtexec"]], check=False).returncode == 0
    info["trtexec"] = has_trt
    tegra = _has(host, "tegrastats")
    steps = []
    if build_engine and has_trt:
        sh(host, [["cd", "--", remote_dir], ["./build_engine.sh"]], timeout=7200)
        steps.append("build_engine.sh")
    if bench:
        if tegra:
            sh(host, [["cd", "--", remote_dir], ["mkdir", "-p", "results"],
                      ["sh", "-c", "tegrastats --interval 100 --logfile results/tegrastats.log --start || true"]],
                      check=False)
        if has_trt and build_engine:
            sh(host, [["cd", "--", remote_dir], ["env", f"DURATION={int(max(duration, 1))}", "./bench.sh"]], timeout=7200)
            steps.append("bench.sh")
        else:
            for b in batches or [None]:
                name = "onnx.json" if b is None else f"onnx_b{b}.json"
                argv = [python, "run_onnx.py", "--duration", str(duration), "--out", f"results/{name}"]
                sh(host, [["cd", "--", remote_dir], argv + ([] if b is None else ["--batch", str(b)])], timeout=7200)
            steps.append("run_onnx.py")
        if tegra:
            sh(host, [["sh", "-c", "tegrastats --stop || true"]], check=False)
    info["steps"] = steps
    local = bundle / "results" / re.sub(r"[^A-Za-z0-9._-]", "_", host.target)
    local.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(host.scp_argv(f"{host.target}:{remote_dir}/results/.", f"{local}/"), capture_output=True,
                          text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RemoteError(f"fetching results from {host.target} failed: {_first_line(proc.stderr)}")
    info["results_dir"] = str(local)
    if (local / "onnx.json").is_file():
        info["onnx"] = json.loads((local / "onnx.json").read_text())
    by_batch = {int(p.stem.split("_b")[1]): json.loads(p.read_text()) for p in local.glob("onnx_b*.json")}
    if by_batch:
        info["onnx_by_batch"] = by_batch
        info.setdefault("onnx", by_batch[min(by_batch)])
    if (local / "tegrastats.log").is_file():
        power = parse_tegrastats((local / "tegrastats.log").read_text())
        info["power"] = power
        if power.get("samples") and info.get("onnx"):
            for r in info["onnx"]["results"]:
                r["energy_mj_per_inference"] = power["mean_power_mw"] * r["mean_ms"] / 1e3 / max(r["batch"], 1)
    (local / "deploy.json").write_text(json.dumps(info, indent=2) + "\n")
    return info
