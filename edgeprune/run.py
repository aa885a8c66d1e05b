"""The run directory: staged atomically, with a manifest that records every artifact's sha256.

A run is built in ``.NAME.partial`` next to its final path and renamed into place when every stage has
finished, so a failed or interrupted run never leaves a half-written ``NAME``. ``--resume`` picks up the
partial directory (or reopens a finished one) and skips the stages whose artifacts are intact.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from edgeprune import __version__
from edgeprune.errors import RunDirError
from edgeprune.versions import package_versions

MANIFEST = "manifest.json"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def staged_dir(out: Path):
    """Yield a temp dir beside ``out``; on success it replaces ``out`` in one rename, on error it is removed."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; the output gets the mode of any new directory
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _cpu() -> dict:
    """The CPU model and the instruction-set features that chose onnxruntime's kernels for this run."""
    from edgeprune.cpu import cpu_info

    return cpu_info()


class Run:
    def __init__(self, path: str | Path, recipe: dict, resume: bool = False):
        self.final = Path(path).expanduser().resolve()
        self.staging = self.final.parent / f".{self.final.name}.partial"
        self.recipe = recipe
        # where the work runs (recipe "exec") does not make a different run: resuming on Ray is allowed
        what = {k: v for k, v in recipe.items() if k != "exec"}
        self.recipe_hash = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()
        if self.final.exists() and not resume:
            raise RunDirError(f"run directory {self.final} exists; pass --resume to continue it or choose another -o")
        if self.final.exists() and not (self.final / MANIFEST).is_file():
            raise RunDirError(f"{self.final} exists but is not an edgeprune run (no {MANIFEST})")
        self.final.parent.mkdir(parents=True, exist_ok=True)
        if resume and self.final.exists():
            shutil.rmtree(self.staging, ignore_errors=True)
            os.replace(self.final, self.staging)
        elif not resume:
            shutil.rmtree(self.staging, ignore_errors=True)
        self.staging.mkdir(parents=True, exist_ok=True)
        self.manifest = self._load_or_new()

    @property
    def dir(self) -> Path:
        return self.staging

    def _load_or_new(self) -> dict:
        mpath = self.staging / MANIFEST
        if mpath.is_file():
            manifest = json.loads(mpath.read_text())
            if manifest.get("recipe_hash") != self.recipe_hash:
                self._restore()
                raise RunDirError(
                    f"cannot resume {self.final}: it was made with a different recipe; use a new -o"
                )
            return manifest
        return {
            "edgeprune": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "recipe": self.recipe,
            "recipe_hash": self.recipe_hash,
            "seeds": {"run": self.recipe.get("seed")},
            "versions": package_versions(),
            "cpu": _cpu(),
            "stages": {},
            "artifacts": {},
        }

    def _restore(self) -> None:
        """Put a finished run that we moved aside for resuming back where it was."""
        if not self.final.exists() and (self.staging / MANIFEST).is_file():
            done = json.loads((self.staging / MANIFEST).read_text()).get("complete")
            if done:
                os.replace(self.staging, self.final)

    # artifacts -------------------------------------------------------------------------------
    def path(self, rel: str) -> Path:
        return self.staging / rel

    def write_bytes(self, rel: str, data: bytes) -> Path:
        p = self.path(rel)
        atomic_write_bytes(p, data)
        self.manifest["artifacts"][rel] = hashlib.sha256(data).hexdigest()
        return p

    def write_json(self, rel: str, obj: Any) -> Path:
        return self.write_bytes(rel, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())

    def write_text(self, rel: str, text: str) -> Path:
        return self.write_bytes(rel, text.encode())

    def record_file(self, rel: str) -> Path:
        """Register a file that a library wrote (into a temp name, then renamed by the caller)."""
        p = self.path(rel)
        self.manifest["artifacts"][rel] = sha256_file(p)
        return p

    def tmp_path(self, rel: str) -> Path:
        """A temp path beside ``rel`` for libraries that write files themselves; ``commit`` renames it."""
        p = self.path(rel)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p.with_name(f".{p.stem}.tmp{p.suffix}")

    def commit(self, rel: str) -> Path:
        os.replace(self.tmp_path(rel), self.path(rel))
        return self.record_file(rel)

    # stages ----------------------------------------------------------------------------------
    def done(self, stage: str) -> bool:
        """True when ``stage`` finished before and all its artifacts still have their recorded hash."""
        info = self.manifest["stages"].get(stage)
        if not info or not info.get("done"):
            return False
        for rel in info.get("artifacts", []):
            p = self.path(rel)
            if not p.is_file() or sha256_file(p) != self.manifest["artifacts"].get(rel):
                return False
        return True

    def results(self, stage: str) -> dict:
        return self.manifest["stages"][stage].get("results", {})

    def finish(self, stage: str, artifacts: list[str], results: dict | None = None, seconds: float = 0.0) -> None:
        self.manifest["stages"][stage] = {
            "done": True,
            "artifacts": artifacts,
            "results": results or {},
            "seconds": round(seconds, 3),
        }
        self.save_manifest()

    def invalidate_from(self, stage_order: list[str], stage: str) -> None:
        """A rerun stage makes every later stage stale."""
        for later in stage_order[stage_order.index(stage) + 1 :]:
            self.manifest["stages"].pop(later, None)

    def save_manifest(self) -> None:
        atomic_write_bytes(self.path(MANIFEST), (json.dumps(self.manifest, indent=2) + "\n").encode())

    def complete(self) -> Path:
        self.manifest["complete"] = True
        self.manifest["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.save_manifest()
        os.replace(self.staging, self.final)
        return self.final


def read_manifest(run_dir: str | Path) -> dict:
    p = Path(run_dir).expanduser() / MANIFEST
    if not p.is_file():
        raise RunDirError(f"{run_dir} is not an edgeprune run directory (no {MANIFEST})")
    return json.loads(p.read_text())
