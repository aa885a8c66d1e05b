"""Property (issue 17): over generated recipes and npz contents, `compress` exits 0, or exits 2 with one
error line; never a traceback, and no file outside the output directory changes.

The generated recipes are small (1 epoch, tiny data, one cheap attack, no int8) so the few valid examples
finish in seconds; most examples are invalid and must be refused before any work.
"""

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from edgeprune.cli import app

runner = CliRunner()

BASE = {
    "model": "mlp",
    "train": {"epochs": 1, "batch_size": 32},
    "finetune": {"epochs": 1},
    "quant": {"mode": "none"},
    "export": {"verify_samples": 16},
    "audit": {"attacks": ["loss"], "bootstrap": 5, "max_samples": 50},
    "bench": {"batches": [1], "warmup_s": 0.0, "duration_s": 0.01, "min_runs": 1},
}

floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32), st.sampled_from([0.5, 1e-3]))
ints = st.one_of(st.integers(-3, 3), st.sampled_from([10**12, 1]))
junk = st.one_of(st.text(max_size=8), st.none(), st.booleans(), st.lists(st.integers(0, 3), max_size=3))

# (section, key) -> a strategy mixing valid and invalid values
FIELDS = {
    ("train", "lr"): floats,
    ("train", "epochs"): st.one_of(st.integers(-1, 1), junk),
    ("prune", "sparsity"): floats,
    ("prune", "method"): st.sampled_from(["structured", "block", "2:4", "magic", ""]),
    ("prune", "block"): st.sampled_from([4, 7, 32]),
    ("export", "opset"): st.integers(5, 30),
    ("audit", "bootstrap"): ints,
    ("audit", "attacks"): st.sampled_from([["loss"], ["nosuch"], [], "loss"]),
    ("bench", "threads"): ints,
    ("bench", "batches"): st.sampled_from([[1], [0], [], [70000]]),
    ("split", "member_fraction"): floats,
    (None, "seed"): st.one_of(ints, junk),
    (None, "not_a_key"): st.integers(0, 1),
}


NPZ = {  # npz property -> values that break it (the default is a valid 120-sample, 4-feature, 3-class set)
    "n": st.sampled_from([0, 3]),
    "d": st.just(0),
    "k": st.just(1),
    "kind": st.sampled_from(["complex", "nan", "int"]),
    "label": st.sampled_from(["stray", "negative", "float"]),
}
MUTATIONS = [("recipe", k) for k in FIELDS] + [("npz", k) for k in NPZ]


RUN_FILES = {"run", ".run.partial", ".run.lock"}  # the run, its staging and its lock file (run.RunLock)


@st.composite
def inputs(draw):
    """A valid recipe and npz with up to two properties changed (often to invalid values)."""
    r = yaml.safe_load(yaml.safe_dump(BASE))
    data = {"n": 120, "d": 4, "k": 3, "kind": "float32", "label": "ok"}
    for kind, key in draw(st.lists(st.sampled_from(MUTATIONS), max_size=2, unique=True)):
        if kind == "npz":
            data[key] = draw(NPZ[key])
        elif key[0] is None:
            r[key[1]] = draw(FIELDS[key])
        else:
            r.setdefault(key[0], {})[key[1]] = draw(FIELDS[key])
    return r, _arrays(**data)


def _arrays(n, d, k, kind, label):
    x = np.random.default_rng(0).normal(size=(n, d))
    if kind == "complex":
        x = x + 1j
    elif kind == "int":
        x = (x * 10).astype(np.int32)
    elif kind == "nan" and x.size:
        x[0, 0] = np.nan
    x = x.astype(np.float32) if kind == "float32" else x
    y = np.arange(n) % k
    if label == "stray" and n:
        y[-1] = 5000
    elif label == "negative" and n:
        y[0] = -1
    elif label == "float":
        y = y.astype(np.float64)
    half = n // 2
    return {"x_train": x[:half], "y_train": y[:half], "x_test": x[half:], "y_test": y[half:]}


def _snapshot(root: Path, skip: set[str]) -> dict:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in skip]
        for f in filenames:
            if f in skip:
                continue
            p = Path(dirpath) / f
            st_ = p.stat()
            out[str(p)] = (st_.st_size, st_.st_mtime_ns)
    return out


@pytest.mark.slow
@settings(max_examples=10, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(case=inputs())
def test_compress_exits_0_or_2_with_one_line_and_writes_only_its_output(case):
    recipe, arrays = case
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        np.savez(tmp / "d.npz", **arrays)
        recipe["data"] = f"npz:{tmp / 'd.npz'}"
        (tmp / "r.yaml").write_text(yaml.safe_dump(recipe))
        before = _snapshot(tmp, RUN_FILES)
        cwd = os.getcwd()
        os.chdir(tmp)  # anything written to the working directory would show up in the snapshot
        try:
            res = runner.invoke(app, ["compress", "mlp", "--recipe", str(tmp / "r.yaml"), "-o", str(tmp / "run")])
        finally:
            os.chdir(cwd)
        text = res.output
        event(f"exit {res.exit_code}")
        assert res.exit_code in (0, 2), (res.exit_code, text, repr(res.exception))
        assert "Traceback" not in text, text
        if res.exit_code == 2:
            lines = [ln for ln in text.splitlines() if ln.strip()]
            errors = [ln for ln in lines if ln.startswith("error:")]
            assert lines == errors and len(errors) == 1, text  # refused before any stage ran
            assert not (tmp / "run").exists()
        else:
            assert (tmp / "run" / "manifest.json").is_file()
        assert _snapshot(tmp, RUN_FILES) == before
