"""The run directory: staged atomically, locked, with a manifest that records every artifact's sha256.

A run is built in ``.NAME.partial`` next to its final path and renamed into place when every stage has
finished, so a failed or interrupted run never leaves a half-written ``NAME``. ``--resume`` picks up the
partial directory (or reopens a finished one) and skips the stages whose artifacts are intact.

Commands that add to a finished run (audit, export, bench) never move it: ``RunUpdate`` stages their files
in ``.NAME.update`` beside it and swaps them in (then the manifest) from a journal, so a process killed at
any point leaves either the old run or the new one. Every command that writes a run (or an output
directory) holds an OS lock on ``.NAME.lock`` beside it for its whole life; the kernel drops the lock when
the process dies, so kill -9 leaves no stale lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from edgeprune import __version__
from edgeprune.cpu import cpu_info
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
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        if e.filename is None:  # a failed write() names no file: name the one being written (a full disk)
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --- locks -------------------------------------------------------------------------------------

_HELD: dict[Path, list] = {}  # lock file -> [fd, depth]: re-entrant within one process


def _drop_inherited_locks() -> None:
    """A forked child must not keep its parent's locks alive: close (never unlock) the inherited fds."""
    for fd, _ in _HELD.values():
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_drop_inherited_locks)


def lock_file(path: str | Path) -> Path:
    path = Path(path).expanduser().resolve()
    return path.parent / f".{path.name}.lock"


class RunLock:
    """An exclusive ``flock`` on ``.NAME.lock`` beside ``path``, holding the owner's PID.

    Refused at once (RunDirError, exit 2) when another process holds it. The lock file itself stays: removing
    it would let a third process lock a new inode while the second still holds the old one."""

    def __init__(self, path: str | Path):
        self.target = Path(path).expanduser().resolve()
        self.file = lock_file(self.target)
        self.held = False

    def acquire(self) -> RunLock:
        if self.held:
            return self
        entry = _HELD.get(self.file)
        if entry is not None:
            entry[1] += 1
            self.held = True
            return self
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666 & ~_umask())
        except OSError as e:
            raise RunDirError(f"cannot write beside {self.target}: {e.strerror or e}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _holder(fd)
            os.close(fd)
            who = f"PID {pid}" if pid else "a process that has not written its PID yet"
            raise RunDirError(f"{self.target} is in use by another edgeprune process ({who}); wait for it to "
                              f"finish or choose another -o") from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _HELD[self.file] = [fd, 1]
        self.held = True
        return self

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        entry = _HELD.get(self.file)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            del _HELD[self.file]
            os.close(entry[0])  # closing the last fd drops the flock

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _holder(fd: int) -> int | None:
    """The PID written by the lock's holder (it writes it right after locking: wait a moment for it)."""
    for _ in range(20):
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if text.isdigit():
            return int(text)
        time.sleep(0.01)
    return None


# --- output directories (bundle, audit of a file) -----------------------------------------------

OUTPUT_MARKER = ".edgeprune-output.json"


def output_path(out: str | Path) -> Path:
    """``out`` made absolute with its parent resolved. A symbolic link (dangling or not) as the output itself is
    refused: a link's target is not where the user said to write, and a dangling one would be created there."""
    p = Path(os.path.abspath(Path(out).expanduser()))
    if p.is_symlink():
        raise RunDirError(f"{out} is a symbolic link; name a real directory as -o (edgeprune does not write "
                          f"through links)")
    return p.parent.resolve() / p.name


def _tree_files(root: Path) -> list[str]:
    """Every file (and link) under ``root``, relative, ``/``-separated; links are not followed."""
    found = []
    for here, dirs, files in os.walk(root):
        base = Path(here)
        names = files + [d for d in dirs if (base / d).is_symlink()]
        found += [(base / n).relative_to(root).as_posix() for n in names]
    return sorted(found)


def check_output_dir(out: Path, kind: str) -> list[str]:
    """``out`` may be written by a command of ``kind`` when it is absent, an empty directory, or this kind's
    own earlier output (it carries OUTPUT_MARKER, which lists the files it wrote and their sha256); anything
    else is the user's and is never replaced. Returns the files that were added to the earlier output since
    (a user's notes, ``deploy``'s ``results/``): replacing the output keeps them."""
    out = Path(out)
    if out.is_symlink():
        raise RunDirError(f"{out} is a symbolic link; name a real directory as -o (edgeprune does not write "
                          f"through links)")
    if not out.exists():
        return []
    if not out.is_dir():
        raise RunDirError(f"{out} exists and is not a directory; choose another -o")
    if not any(out.iterdir()):
        return []
    marker = out / OUTPUT_MARKER
    try:
        info = json.loads(marker.read_text()) if marker.is_file() and not marker.is_symlink() else None
    except (OSError, UnicodeDecodeError, ValueError):
        info = None
    if not isinstance(info, dict) or info.get("kind") != kind:
        what = "an edgeprune run" if (out / MANIFEST).is_file() and not marker.exists() else "not empty"
        raise RunDirError(f"{out} exists and is {what}, not an earlier {kind} output; choose a new or empty "
                          f"directory for -o (edgeprune never deletes files it did not write)")
    own = info.get("files")
    if not isinstance(own, dict):
        raise RunDirError(f"{out} was written by an edgeprune that did not record its files, so what was added "
                          f"to it since cannot be told apart; move it away or choose another -o")
    added = []
    for rel in _tree_files(out):
        if rel == OUTPUT_MARKER:
            continue
        p = out / rel
        if rel not in own:
            added.append(rel)
        elif p.is_symlink() or not p.is_file() or sha256_file(p) != own[rel]:
            raise RunDirError(f"{p} was changed since `{kind}` wrote it; move it away (edgeprune never deletes "
                              f"files it did not write) or choose another -o")
    return added


def _clash(tmp: Path, added: list[str]) -> str | None:
    """An added file the new output would overwrite (or whose folder is one of the new output's files)."""
    for rel in added:
        parts = Path(rel).parts
        for i in range(1, len(parts) + 1):
            p = tmp.joinpath(*parts[:i])
            if p.is_symlink() or (p.exists() and (i == len(parts) or not p.is_dir())):
                return rel
    return None


@contextlib.contextmanager
def staged_dir(out: Path, kind: str):
    """Yield a temp dir beside ``out``; on success it replaces ``out`` (only if ``out`` is absent, empty or
    this kind's own earlier output), on error it is removed. ``out`` is locked meanwhile. Files added to an
    earlier output since it was written are moved into the new one; the earlier output is moved aside under
    a fresh temporary name (never a fixed one that could be the user's) and removed at the end."""
    out = output_path(out)
    with RunLock(out):
        check_output_dir(out, kind)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
        old = None
        try:
            yield tmp
            files = {rel: sha256_file(tmp / rel) for rel in _tree_files(tmp) if rel != OUTPUT_MARKER}
            marker = {"kind": kind, "edgeprune": __version__, "files": files}
            atomic_write_bytes(tmp / OUTPUT_MARKER, (json.dumps(marker, indent=1) + "\n").encode())
            os.chmod(tmp, 0o777 & ~_umask())
            added = check_output_dir(out, kind)
            clash = _clash(tmp, added)
            if clash:
                raise RunDirError(f"{out / clash} was added to the earlier {kind} output and the new one writes "
                                  f"that name; move it away (edgeprune never deletes files it did not write)")
            if out.exists():
                old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old."))
                os.replace(out, old)  # onto the fresh empty directory
            try:
                os.replace(tmp, out)
            except BaseException:
                if old is not None:
                    os.replace(old, out)
                    old = None
                raise
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if old is not None:
            _keep_added(old, out, added)


def _keep_added(old: Path, out: Path, added: list[str]) -> None:
    """Move the files added to the earlier output (now at ``old``) into the new one, then drop ``old``."""
    try:
        for rel in added:
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(old / rel, out / rel)
    except OSError as e:
        raise RunDirError(f"the new output is in {out}, but moving the files added to the earlier one failed "
                          f"({e.strerror or e}); what is left of them is in {old}") from None
    shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def recipe_hash(recipe: dict) -> str:
    """The sha256 a manifest records for its recipe. Where the work runs (recipe ``exec``, ``runtime``) does
    not make a different run: resuming on Ray or on another device is allowed (the manifest records the
    device each stage ran on)."""
    what = {k: v for k, v in recipe.items() if k not in ("exec", "runtime")}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()


class Run:
    """A run being built (``compress``): staged in ``.NAME.partial``, locked until ``complete`` or ``close``."""

    def __init__(self, path: str | Path, recipe: dict, resume: bool = False):
        self.final = output_path(path)  # a symbolic link as -o is refused
        self.staging = self.final.parent / f".{self.final.name}.partial"
        self.recipe = recipe
        # where the work runs (recipe "exec", "runtime") does not make a different run: resuming on Ray or on
        # another device is allowed (the manifest records the device each stage ran on)
        self.recipe_hash = recipe_hash(recipe)
        from edgeprune.runtime import of_recipe

        self.runtime = of_recipe(recipe).describe()  # a device that is not here fails before anything is written
        self.lock = RunLock(self.final).acquire()  # before looking at anything: another process may own it
        try:
            self._open(resume)
        except BaseException:
            self.lock.release()
            raise

    def _open(self, resume: bool) -> None:
        if self.final.exists() and not resume:
            raise RunDirError(f"run directory {self.final} exists; pass --resume to continue it or choose another -o")
        if self.final.exists() and not (self.final / MANIFEST).is_file():
            raise RunDirError(f"{self.final} exists but is not an edgeprune run (no {MANIFEST})")
        self.final.parent.mkdir(parents=True, exist_ok=True)
        if resume and self.final.exists():
            recover_update(self.final)
            self._check_recipe(read_manifest(self.final))  # a finished run made otherwise is left where it is
            shutil.rmtree(self.staging, ignore_errors=True)
            os.replace(self.final, self.staging)
        elif not resume:
            shutil.rmtree(self.staging, ignore_errors=True)
        self.staging.mkdir(parents=True, exist_ok=True)
        self.manifest = self._load_or_new()
        earlier = self.manifest.get("runtime")
        if earlier and earlier != self.runtime:  # resumed on another device: each stage's device stays known
            self.manifest.setdefault("runtime_earlier", []).append(
                {**earlier, "stages_done": sorted(k for k, v in self.manifest["stages"].items() if v.get("done"))})
        self.manifest["runtime"] = self.runtime

    def close(self) -> None:
        """Release the run's lock (``complete`` does it too); a run left unfinished stays for --resume."""
        self.lock.release()

    @property
    def dir(self) -> Path:
        return self.staging

    def _check_recipe(self, manifest: dict) -> None:
        if manifest.get("recipe_hash") != self.recipe_hash:
            raise RunDirError(f"cannot resume {self.final}: it was made with a different recipe; use a new -o")

    def _load_or_new(self) -> dict:
        mpath = self.staging / MANIFEST
        if mpath.is_file():
            manifest = read_manifest(self.staging)
            self._check_recipe(manifest)
            return manifest
        return {
            "edgeprune": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "recipe": self.recipe,
            "recipe_hash": self.recipe_hash,
            "seeds": {"run": self.recipe.get("seed")},
            "versions": package_versions(),
            "cpu": cpu_info(),  # the CPU model and the features that chose onnxruntime's kernels
            "stages": {},
            "artifacts": {},
        }

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
        return bool(info and info.get("done")) and self.stale(stage) is None

    def stale(self, stage: str) -> str | None:
        """Why a stage that finished before must be rebuilt (an artifact missing or changed), else None."""
        for rel in self.manifest["stages"].get(stage, {}).get("artifacts", []):
            problem = artifact_problem(self.staging, self.manifest, rel)
            if problem:
                return problem
        return None

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
        self.close()
        return self.final


def read_manifest(run_dir: str | Path) -> dict:
    p = Path(run_dir).expanduser() / MANIFEST
    if not p.is_file():
        raise RunDirError(f"{run_dir} is not an edgeprune run directory (no {MANIFEST})")
    try:
        manifest = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise RunDirError(f"{p} cannot be read as JSON ({type(e).__name__}); the run is damaged") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("artifacts", {}), dict):
        raise RunDirError(f"{p} is not an edgeprune manifest")
    return manifest


# --- integrity ------------------------------------------------------------------------------------

def check_recipe(run_dir: str | Path, manifest: dict) -> dict:
    """The manifest's recipe, checked against the ``recipe_hash`` recorded beside it (an edited or corrupted
    manifest is refused before anything is built or read from its recipe)."""
    recipe = manifest.get("recipe")
    if not isinstance(recipe, dict) or manifest.get("recipe_hash") != recipe_hash(recipe):
        raise RunDirError(f"{Path(run_dir) / MANIFEST}: its recipe does not match the recipe_hash recorded with it "
                          "(edited or corrupted since the run was made); edgeprune will not use it")
    return recipe


def confined(run_dir: str | Path, rel) -> Path:
    """``run_dir / rel`` for a run-relative path taken from a run's own files, refused (RunDirError) unless it
    stays inside the run: a relative path without ``..``, which resolves (symlinks followed) inside it."""
    root = Path(run_dir).expanduser().resolve()
    parts = Path(rel).parts if isinstance(rel, str) and rel and "\\" not in rel and "\0" not in rel else None
    if not parts or Path(rel).is_absolute() or ".." in parts:
        raise RunDirError(f"{root}: a file of the run names the path {str(rel)[:120]!r}, which is not inside the "
                          "run; edgeprune reads only the run's own files")
    p = (root / rel).resolve()
    if not p.is_relative_to(root):
        raise RunDirError(f"{root}: {str(rel)[:120]!r} leads outside the run (to {str(p)[:120]}); edgeprune reads "
                          "only the run's own files")
    return p


def read_verified(run_dir: str | Path, manifest: dict, rel) -> bytes:
    """The bytes of artifact ``rel`` (confined to the run), read once and checked against the manifest's
    sha256 (no window between the check and the use)."""
    p = confined(run_dir, rel)
    want = manifest.get("artifacts", {}).get(rel)
    if want is None:
        raise RunDirError(f"{Path(run_dir) / rel}: not recorded in the run's manifest; edgeprune reads only files "
                          "whose sha256 the manifest records")
    if not p.is_file():
        raise RunDirError(f"{Path(run_dir) / rel}: missing; rerun `edgeprune compress ... --resume` on the run "
                          "to rebuild it")
    data = p.read_bytes()
    if hashlib.sha256(data).hexdigest() != want:
        raise RunDirError(f"{Path(run_dir) / rel}: differs from the sha256 in the run's manifest (changed or "
                          "corrupted since it was written); rerun `edgeprune compress ... --resume` on the run "
                          "to rebuild it")
    return data


def read_verified_json(run_dir: str | Path, manifest: dict, rel) -> Any:
    try:
        return json.loads(read_verified(run_dir, manifest, rel))
    except (UnicodeDecodeError, ValueError):
        raise RunDirError(f"{Path(run_dir) / rel} cannot be read as JSON; the run is damaged") from None

def artifact_problem(run_dir: Path, manifest: dict, rel: str) -> str | None:
    """What is wrong with artifact ``rel`` of a run (missing, unrecorded, or not its recorded sha256)."""
    p = Path(run_dir) / rel
    want = manifest.get("artifacts", {}).get(rel)
    if want is None:
        return f"{rel} is not recorded in the run's manifest"
    if not p.is_file():
        return f"{rel} is missing"
    if sha256_file(p) != want:
        return f"{rel} differs from the sha256 in the run's manifest (changed or corrupted since it was written)"
    return None


def verify_artifact(run_dir: str | Path, manifest: dict, rel: str) -> str:
    """Check artifact ``rel`` against the manifest before reading it; returns its (actual) sha256."""
    problem = artifact_problem(Path(run_dir), manifest, rel)
    if problem:
        raise RunDirError(f"{Path(run_dir) / rel}: {problem.split(' ', 1)[1]}; rerun `edgeprune compress ... "
                          f"--resume` on the run to rebuild it")
    return manifest["artifacts"][rel]


# --- updating a finished run in place ------------------------------------------------------------

COMMIT = "COMMIT"  # the journal: the list of staged files, written last; its presence means "swap them in"


def update_dir(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir).expanduser().resolve()
    return run_dir.parent / f".{run_dir.name}.update"


def recover_update(run_dir: str | Path) -> None:
    """Finish an update that was committed but interrupted while swapping its files in, or drop one that never
    committed (the run was not touched). Call it with the run's lock held."""
    run_dir = Path(run_dir).expanduser().resolve()
    stage = update_dir(run_dir)
    if not stage.exists():
        return
    journal = stage / COMMIT
    if journal.is_file():
        try:
            rels = json.loads(journal.read_text())
        except (OSError, ValueError):
            rels = None
        if isinstance(rels, list):
            _swap_in(run_dir, stage, rels)
            return
    shutil.rmtree(stage, ignore_errors=True)


def _swap_in(run_dir: Path, stage: Path, rels: list[str]) -> None:
    """Rename every staged file into the run, then the manifest; idempotent (a rerun after a kill resumes)."""
    for rel in rels:
        src = stage / "files" / rel
        if src.is_file():
            (run_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, run_dir / rel)
    if (stage / MANIFEST).is_file():
        os.replace(stage / MANIFEST, run_dir / MANIFEST)
    shutil.rmtree(stage, ignore_errors=True)


class RunUpdate:
    """Add or replace files of a finished run without moving it (audit, export, bench).

    Holds the run's lock; new files are written under ``.NAME.update/files/``; ``commit`` writes the new
    manifest and the journal there, then swaps the files in. Killed before the journal is written: the run
    is untouched and the next command that locks it drops the stage; killed after: the next one finishes it.
    ``path`` reads the run (or this update's staged version of a file), ``tmp_path``/``write_*`` write.
    """

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir).expanduser().resolve()
        if not (self.dir / MANIFEST).is_file() and (self.dir.parent / f".{self.dir.name}.partial").is_dir():
            with RunLock(self.dir):  # a compress (--resume) at work names its PID; else say what to do
                raise RunDirError(f"{run_dir} is an unfinished run; finish it with `edgeprune compress ... "
                                  f"-o {run_dir} --resume`")
        read_manifest(self.dir)  # an existing run, before a lock file is made beside it
        self.lock = RunLock(self.dir).acquire()
        try:
            recover_update(self.dir)
            self.manifest = read_manifest(self.dir)
            if not self.manifest.get("complete"):
                raise RunDirError(f"{run_dir} is not a finished run")
            self.stage = update_dir(self.dir)
            shutil.rmtree(self.stage, ignore_errors=True)
            (self.stage / "files").mkdir(parents=True)
        except BaseException:
            self.lock.release()
            raise
        self.staged: list[str] = []

    def staged_path(self, rel: str) -> Path:
        p = self.stage / "files" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def path(self, rel: str) -> Path:
        """Where ``rel`` is read from: this update's new version if it wrote one, else the run's file."""
        return self.stage / "files" / rel if rel in self.staged else self.dir / rel

    def tmp_path(self, rel: str) -> Path:
        return self.staged_path(rel)

    def commit(self, rel: str) -> Path:
        """Register a file written at ``tmp_path(rel)`` (as ``Run.commit`` does)."""
        p = self.staged_path(rel)
        self.manifest["artifacts"][rel] = sha256_file(p)
        if rel not in self.staged:
            self.staged.append(rel)
        return p

    def write_bytes(self, rel: str, data: bytes) -> Path:
        atomic_write_bytes(self.staged_path(rel), data)
        return self.commit(rel)

    def stage_tree(self, rel_dir: str) -> list[str]:
        """Swap in, with the rest, the files written under ``tmp_path(rel_dir)`` that the manifest does not
        record (a cache's entries)."""
        root = self.stage / "files"
        new = [rel_dir + "/" + rel for rel in _tree_files(root / rel_dir)] if (root / rel_dir).is_dir() else []
        self.staged += [rel for rel in new if rel not in self.staged]
        return new

    def write_json(self, rel: str, obj: Any) -> Path:
        return self.write_bytes(rel, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())

    def write_text(self, rel: str, text: str) -> Path:
        return self.write_bytes(rel, text.encode())

    def save(self) -> None:
        """Swap the staged files and the updated manifest into the run (all or, after a kill, on recovery)."""
        atomic_write_bytes(self.stage / MANIFEST, (json.dumps(self.manifest, indent=2) + "\n").encode())
        atomic_write_bytes(self.stage / COMMIT, json.dumps(self.staged).encode())
        _swap_in(self.dir, self.stage, self.staged)

    def abort(self) -> None:
        shutil.rmtree(self.stage, ignore_errors=True)

    def close(self) -> None:
        self.lock.release()

    def __enter__(self) -> RunUpdate:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.save()
            else:
                self.abort()
        finally:
            self.close()
