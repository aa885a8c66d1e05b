"""benchmarks/cpu_regression.py: two source trees timed alternately, each command a subprocess with that tree on
PYTHONPATH; the table's ratio and the JSON. Harness checked with two small source trees whose `edgeprune.cli`
only takes a known time (a real tiny run, `--scale tiny`, takes minutes here: run by hand, see the docstring)."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CLI = '''import sys, time
from pathlib import Path
args = sys.argv[1:]
Path("calls.log").open("a").write("@TREE@ " + args[0] + "\\n")
if args[0] == "compress":
    run = Path(args[args.index("-o") + 1])
    (run / "audit_cache").mkdir(parents=True)
    assert "--sparsity" in args and "--quant" in args
else:
    assert not (Path(args[1]) / "audit_cache").exists(), "the audit must start from an empty signal cache"
    assert args[args.index("--references") + 1] == "2"
time.sleep(@DELAY@)
'''


def _load():
    spec = importlib.util.spec_from_file_location("cpu_regression", ROOT / "benchmarks" / "cpu_regression.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _tree(root: Path, name: str, delay: float) -> Path:
    pkg = root / name / "edgeprune"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "cli.py").write_text(CLI.replace("@TREE@", name).replace("@DELAY@", str(delay)))
    return root / name


def test_trees_alternate_and_the_ratio_is_after_over_before(tmp_path, monkeypatch):
    mod = _load()
    before, after = _tree(tmp_path, "base", 0.4), _tree(tmp_path, "merged", 0.1)
    calls = []
    orig = mod._cli

    def spy(tree, args, cwd):
        t = orig(tree, args, cwd)
        calls.append((Path(cwd) / "calls.log").read_text().split()[-2:])  # what the subprocess imported
        return t

    monkeypatch.setattr(mod, "_cli", spy)
    out = tmp_path / "res.json"
    monkeypatch.setattr(sys, "argv", ["cpu_regression.py"])
    assert mod.main(["--before", str(before), "--after", str(after), "--scale", "tiny", "--repeats", "3",
                     "--out", str(out)]) == 0
    assert [c[0] for c in calls] == ["base", "base", "merged", "merged", "merged", "merged", "base", "base",
                                     "base", "base", "merged", "merged"]  # before, after, after, before, ...
    doc = json.loads(out.read_text())
    assert doc["order"] == ["before", "after", "after", "before", "before", "after"]
    assert doc["machine"]["cpu"] and doc["scale"] == "tiny" and doc["before"]["tree"] == str(before)
    rows = {r["workload"]: r for r in doc["rows"]}
    for w in ("compress", "audit8"):
        r = rows[w]
        assert len(r["before_s"]) == len(r["after_s"]) == 3
        assert r["ratio_after_before"] == pytest.approx(r["after_median_s"] / r["before_median_s"], rel=1e-2)
        assert r["ratio_after_before"] < 0.9  # the after tree's CLI sleeps 0.1 s, the before tree's 0.4 s
    assert not list(tmp_path.glob("*.tmp"))


def test_a_failing_tree_and_a_non_tree_stop_with_one_message(tmp_path):
    mod = _load()
    with pytest.raises(SystemExit, match="not an edgeprune source tree"):
        mod.main(["--before", str(tmp_path), "--after", str(ROOT), "--out", str(tmp_path / "r.json")])
    bad = _tree(tmp_path, "bad", 0.0)
    (bad / "edgeprune" / "cli.py").write_text("raise SystemExit('error: broken tree')\n")
    with pytest.raises(SystemExit, match="failed in .*bad"):
        mod.measure(bad, bad, 1, "tiny", log=lambda m: None)
