"""Every `edgeprune ...` command in README.md's ```bash blocks (and the one heading each examples/*.yaml
recipe) runs, shrunk to small data and epochs.

The commands run in README order in one process (typer's CliRunner) and share one directory, so a later
command finds the runs an earlier one made (runs/mlp50, runs/r20, bundle/). A command is shrunk by the
tables below, option by option; a README command with an option, data set or path the tables do not know
fails `test_every_readme_command_has_a_rule` (fast) with the line to add, so a new README example is either
run here or consciously listed in NOT_RUN with its reason.
"""

import functools
import importlib
import pickle
import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from edgeprune.cli import app

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

# README commands that are not run here, each with why (the exact command text, comments stripped).
NOT_RUN = {
    "edgeprune deploy bundle/ --host user@jetson --build-engine":
        "needs a Jetson (or any host) over SSH with trtexec; deploy runs against a loopback SSH device in "
        "tests/test_remote.py",
    "edgeprune compress lenet5 --recipe examples/private-cifar10.yaml -o runs/private-cifar10":
        "real CIFAR-10 (as JPEGs) from ../shared/data, outside the repository; the cifar10-jpeg reader is tested "
        "on generated archives in tests/test_data_readers.py",
    "edgeprune compress mlp --recipe examples/private-location.yaml -o runs/private-location":
        "the Location data set from ../shared/data, outside the repository; the location reader is tested in "
        "tests/test_data_readers.py",
}

# --data specs -> small built-in data of the same kind (same input shape family and reader where cheap).
DATA = {
    "purchase-synth": "purchase-synth:1500",
    "digits": "digits",
    "cifar10:~/data/cifar-10-batches-py": "cifar10:{tmp}/cifar-10-batches-py",  # 120 images (MAKE)
    "npz:data.npz": "npz:{tmp}/data.npz",  # 400 digits (MAKE)
    "purchase-synth:20000": "purchase-synth:1500",  # examples/private-purchase.yaml
}

# Options, per command ("*": every command). A value is what to do with the option's value:
#   KEEP: runs as written; an int: at most this many (the README's value if smaller); FIRST: the first
#   comma-separated value only; TMP: a path, mapped into the test's directory; DATA: through the DATA table;
#   a str: replaced by this value; DROP: the option and its value are removed; FLAG: a flag without a value.
KEEP, FIRST, TMP, DROP, FLAG, RECIPE = "keep", "first", "tmp", "drop", "flag", "recipe"
OPTIONS = {
    "*": {"--data": "data", "-o": TMP, "--out": TMP, "--sparsity": KEEP, "--method": KEEP, "--criterion": KEEP,
          "--quant": KEEP, "--defense": KEEP, "--defense-scope": KEEP, "--weights": TMP, "--recipe": RECIPE,
          "--resume": FLAG, "--epochs": 1, "--finetune-epochs": 1, "--qat-epochs": 1},
    "prune": {"--schedule": KEEP, "--plan": TMP},
    "audit": {"--attacks": KEEP, "--shadows": 1, "--references": 2, "--preset": KEEP, "--threat": KEEP,
              "--seeds": 2, "--layer": KEEP, "--split-noise": KEEP, "--ensemble": 2, "--model": KEEP,
              "--executor": KEEP, "--ray-address": KEEP},
    # tune: a grid of one value per axis but the criterion (2 trials: halving has something to halve)
    "tune": {"--sparsity": FIRST, "--defense": FIRST, "--quant": FIRST, "--criterion": KEEP, "--max-acc-drop": KEEP,
             "--max-auc": KEEP, "--objective": KEEP, "--search": KEEP, "--jobs": KEEP},
    "export": {"--fp16": FLAG, "--int8": FLAG, "--format": KEEP, "--split": KEEP},
    "bundle": {"--precision": KEEP, "--split": KEEP},
    "bench": {"--backend": KEEP, "--batch": "1,8"},
}
# Options the test adds where the README line lacks them (smaller attacker counts, shorter timings).
ADD = {
    "compress": ["--epochs", "1", "--finetune-epochs", "1"],
    "prune": ["--epochs", "1", "--finetune-epochs", "1"],
    "tune": ["--epochs", "1", "--finetune-epochs", "1", "--references", "0", "--shadows", "0"],
    "bench": ["--warmup", "0", "--duration", "0.05"],
}
# A --preset keeps its name; the counts it implies are capped through the explicit options above.
PRESET_CAPS = {"thorough": ["--shadows", "1", "--references", "2", "--seeds", "2"]}
# A --recipe file is copied into the test's directory with these fields overridden; compress / tune without
# --recipe get a recipe of these alone: the bench stage's timings, the audit's bootstrap and RMIA population,
# and the defender's reference data (2,000 by default: more than purchase-synth:1500's attacker pool, which
# would leave tune no validation split), smaller; everything else the defaults.
RECIPE_OVERRIDES = {"train": {"epochs": 1}, "finetune": {"epochs": 1},
                    "bench": {"batches": [1], "warmup_s": 0.0, "duration_s": 0.05, "min_runs": 3},
                    "audit": {"bootstrap": 50, "population": 300}, "defense": {"reference_samples": 300}}
FAST_RECIPE = {k: RECIPE_OVERRIDES[k] for k in ("bench", "audit", "defense")}
# A recipe's attacker counts and QAT epochs, capped.
RECIPE_CAPS = {"audit": {"shadows": 1, "references": 2, "seeds": 1}, "quant": {"qat_epochs": 1}}
RECIPE_COMMANDS = ("compress", "tune")
# Positional arguments: words kept as written, and paths (prefixes) mapped into the test's directory.
WORDS = {"mlp", "resnet18", "resnet20", "mobilenetv2"}
TMP_PREFIXES = ("runs/", "bundle/", "bundle-split/", "audits/", "report.html", "model.onnx", "resnet18.safetensors")
# Runs a README command reads that no earlier README command makes: made first, with these options.
PREREQUISITES = {
    "runs/mlp30": ["compress", "mlp", "--data", "purchase-synth", "--sparsity", "0.3", "--quant", "int8", "-o", "runs/mlp30"],
    "runs/mlp70": ["compress", "mlp", "--data", "purchase-synth", "--sparsity", "0.7", "--quant", "int8", "-o", "runs/mlp70"],
}
# Settings no option or recipe field reaches, made smaller for commands that contain the key: the module's
# class gets these defaults (model inversion: its decoder's epochs, white-box steps and sample counts).
PATCHES = {
    "--attacks inversion": ("edgeprune.attack.inversion", "InversionPlan",
                            {"epochs": 2, "wb_steps": 5, "samples": 40, "pool": 200, "bootstrap": 20}),
}
# What a command must also print: every backend asked for is timed (its table) or says why it is skipped.
MUST_SAY = {"bench": [rf"backend {b}: skipped \(.+\)|{b} \(\d+ thread" for b in ("torch", "ort-cpu", "ort-cuda", "tensorrt")]}

HOW_TO_ADD = ("add a rule to tests/test_readme.py: the option to OPTIONS['{cmd}'] or OPTIONS['*'] (KEEP if it runs as written, "
              "an int cap, FIRST, TMP for a path, or a replacement value), a data spec to DATA (and a writer of its "
              "files to MAKE), a word to WORDS, "
              "a path prefix to TMP_PREFIXES, or the whole command to NOT_RUN with the reason it cannot run here")


class NoRule(Exception):
    pass


def example_commands() -> list[str]:
    """The command on the first line of each examples/*.yaml recipe (``# edgeprune compress ...``), for the
    recipes no README command runs."""
    out, readme = [], " ".join(readme_commands())
    for f in sorted((ROOT / "examples").glob("*.yaml")):
        first = f.read_text().splitlines()[0]
        if first.startswith("# edgeprune ") and f"examples/{f.name}" not in readme:
            out.append(" ".join(shlex.quote(w) for w in shlex.split(first[2:])))
    return out


def readme_commands(text: str | None = None) -> list[str]:
    """Every `edgeprune ...` command of README.md's ```bash blocks, continuations joined, comments stripped."""
    text = README.read_text() if text is None else text
    out = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words[:1] == ["edgeprune"]:
                out.append(" ".join(shlex.quote(w) for w in words))
    return out


def _cap(value: str, cap: int) -> str:
    return str(min(int(value), cap))


def shrink(command: str, tmp: Path) -> list[str]:
    """The CliRunner arguments of one README command, shrunk; NoRule names what the tables lack."""
    words = shlex.split(command)[1:]
    cmd = words[0]
    rules = {**OPTIONS["*"], **OPTIONS.get(cmd, {})}
    args, given, i = [cmd], set(), 1
    while i < len(words):
        w = words[i]
        if not w.startswith("-"):
            if w in WORDS:
                args.append(w)
            elif w.startswith(TMP_PREFIXES):
                args.append(str(tmp / w))
            else:
                raise NoRule(f"argument {w!r} of `edgeprune {cmd}`")
            i += 1
            continue
        if w not in rules:
            raise NoRule(f"option {w} of `edgeprune {cmd}`")
        rule, given = rules[w], given | {w}
        if rule == FLAG:
            args.append(w)
            i += 1
            continue
        value, i = words[i + 1], i + 2
        if rule == DROP:
            continue
        if rule == KEEP:
            pass
        elif rule == FIRST:
            value = value.split(",")[0]
        elif rule == TMP:
            value = str(tmp / value)
        elif rule == "data":
            if value not in DATA:
                raise NoRule(f"data set {value!r} (DATA table)")
            value = DATA[value].format(tmp=tmp)
        elif rule == RECIPE:
            value = str(_small_recipe(ROOT / value, tmp))
        elif isinstance(rule, int):
            value = _cap(value, rule)
        else:
            value = rule
        args += [w, value]
    extra = list(ADD.get(cmd, []))
    if cmd == "audit" and "--preset" in given:
        extra += PRESET_CAPS.get(args[args.index("--preset") + 1], [])
    if cmd in RECIPE_COMMANDS and "--recipe" not in given:
        extra += ["--recipe", str(_write_recipe(FAST_RECIPE, tmp / "fast.yaml"))]
    for k, v in zip(extra[::2], extra[1::2], strict=True):
        if k not in given:
            args += [k, v]
            given.add(k)
    return args


def _write_recipe(recipe: dict, path: Path) -> Path:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(recipe))
    return path


def _small_recipe(src: Path, tmp: Path) -> Path:
    if not src.is_file():
        raise NoRule(f"recipe {src} (not a file in the repository)")
    recipe = yaml.safe_load(src.read_text()) or {}
    for section, fields in RECIPE_OVERRIDES.items():
        recipe[section] = {**(recipe.get(section) or {}), **fields}
    for section, caps in RECIPE_CAPS.items():
        for name, cap in caps.items():
            if name in (recipe.get(section) or {}):
                recipe[section][name] = min(recipe[section][name], cap)
    if "data" in recipe:
        if recipe["data"] not in DATA:
            raise NoRule(f"data set {recipe['data']!r} of recipe {src.name} (DATA table)")
        recipe["data"] = DATA[recipe["data"]].format(tmp=tmp)
    return _write_recipe(recipe, tmp / "recipes" / src.name)


def test_readme_commands_are_found():
    cmds = readme_commands()
    assert len(cmds) >= 25, cmds
    tune = [c for c in cmds if c.startswith("edgeprune tune")]
    assert tune and "--objective latency" in tune[0], "a continuation line was not joined"
    assert not any("#" in c for c in cmds), "a comment was kept"
    text = "```bash\nedgeprune a --b 1 \\\n    --c 2   # note\nmake x\n```\n"
    assert readme_commands(text) == ["edgeprune a --b 1 --c 2"]


def test_every_readme_command_has_a_rule(tmp_path):
    missing = []
    for c in readme_commands() + example_commands():
        if c in NOT_RUN:
            continue
        try:
            shrink(c, tmp_path)
        except NoRule as e:
            missing.append(f"{c}\n    no rule for {e}; {HOW_TO_ADD.format(cmd=shlex.split(c)[1])}")
    assert not missing, "README commands the test cannot shrink:\n" + "\n".join(missing)
    assert set(NOT_RUN) <= set(readme_commands() + example_commands()), "NOT_RUN lists a command nobody has"


def test_unknown_readme_line_fails_with_how_to_add(tmp_path):
    with pytest.raises(NoRule, match="option --frobnicate of `edgeprune compress`"):
        shrink("edgeprune compress mlp --data purchase-synth --frobnicate 3", tmp_path)
    with pytest.raises(NoRule, match="data set 'imagenet'"):
        shrink("edgeprune compress mlp --data imagenet", tmp_path)
    args = shrink("edgeprune audit runs/mlp50 --attacks all --shadows 4 --references 8", tmp_path)
    assert args == ["audit", str(tmp_path / "runs/mlp50"), "--attacks", "all", "--shadows", "1", "--references", "2"]


def _cifar10_batches(path: Path) -> None:
    """CIFAR-10's python batches, 40 random images each (what `cifar10:DIR` reads)."""
    rng = np.random.default_rng(0)
    path.mkdir()
    for name in ("data_batch_1", "data_batch_2", "test_batch"):
        batch = {b"data": rng.integers(0, 256, size=(40, 3072), dtype=np.uint8),
                 b"labels": [int(v) for v in rng.permutation(np.arange(40) % 10)]}
        (path / name).write_bytes(pickle.dumps(batch))


def _resnet18_weights(path: Path) -> None:
    """Dense weights of a freshly built CIFAR-style ResNet-18 (the user's own --weights)."""
    import torch
    from safetensors.torch import save_file

    from edgeprune.models.loading import build_model

    torch.manual_seed(0)
    save_file(build_model("resnet18", (3, 32, 32), 10).state_dict(), str(path))


def _digits_npz(path: Path) -> None:
    """400 digits as an npz with train / test parts (a data set made elsewhere)."""
    from edgeprune.data.datasets import load_dataset

    digits = load_dataset("digits")
    x, y = digits.x[:400], digits.y[:400]
    np.savez(path, x_train=x[:200], y_train=y[:200], x_test=x[200:], y_test=y[200:])


# The files README commands name as the user's own (through DATA or a TMP path), written into the shared
# directory before the first command: name -> writer.
MAKE = {"cifar-10-batches-py": _cifar10_batches, "resnet18.safetensors": _resnet18_weights,
        "data.npz": _digits_npz}


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """The directory every README command shares, with the files of MAKE."""
    tmp = tmp_path_factory.mktemp("readme")
    for name, write in MAKE.items():
        write(tmp / name)
    return {"tmp": tmp, "ray": None}


def _made_before(command: str, shared) -> None:
    """What a command reads that no earlier README command made (runs for `report`, a model file)."""
    tmp = shared["tmp"]
    for w in shlex.split(command):
        if w in PREREQUISITES and not (tmp / w).exists():
            _invoke(shrink(" ".join(["edgeprune", *PREREQUISITES[w]]), tmp), command)
    if " model.onnx " in command and not (tmp / "model.onnx").exists():
        shutil.copy(tmp / "runs/r20/model.onnx", tmp / "model.onnx")  # a ResNet-20 on digits, "made elsewhere"
    if "--executor ray" in command and shared["ray"] is None:
        ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'edgeprune[ray]')")
        # the "running cluster" --ray-address auto joins: a local head started here (the executor uses a
        # Ray this process is connected to)
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        shared["ray"] = ray


def _invoke(args: list[str], command: str) -> str:
    res = CliRunner().invoke(app, args)
    out = res.output
    assert res.exit_code == 0 and "Traceback" not in out, (
        f"README command failed (exit {res.exit_code}):\n  {command}\nran as:\n  edgeprune {shlex.join(args)}\n{out}"
        + (f"\n{res.exception!r}" if res.exception else ""))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("command", readme_commands() + example_commands(), ids=lambda c: c.replace("'", "")[10:90])
def test_readme_command_runs(command, shared, monkeypatch):
    if command in NOT_RUN:
        pytest.skip(NOT_RUN[command])
    for key, (module, name, defaults) in PATCHES.items():
        if key in command:
            mod = importlib.import_module(module)
            monkeypatch.setattr(mod, name, functools.partial(getattr(mod, name), **defaults))
    _made_before(command, shared)
    try:
        out = _invoke(shrink(command, shared["tmp"]), command)
    finally:
        if shared["ray"] is not None and "--executor ray" in command:
            shared["ray"].shutdown()
            shared["ray"] = None
    for pattern in MUST_SAY.get(shlex.split(command)[1], []):
        assert re.search(pattern, out, re.I | re.S), f"{command}: output lacks /{pattern}/:\n{out}"


def test_audit_attacks_all_reaches_the_audit(tmp_path, monkeypatch):
    """The README's first audit example: `--attacks all` is not an attack name to look up (it was:
    "unknown attack 'all'"); with an inversion attack beside it, 'all' still means the membership attacks."""
    import edgeprune.api
    from edgeprune.errors import ConfigError

    seen = []

    def audit_run(run_dir, names, shadows, references, *a, **k):
        seen.append((names, shadows, references))
        raise ConfigError("stopped here by the test")

    def inversion_audit(run_dir, attacks, layers, noise, log=None):
        seen.append(attacks)
        return {"judge_accuracy_on_originals": 1.0, "variants": {}}

    monkeypatch.setattr(edgeprune.api, "audit_run", audit_run)
    monkeypatch.setattr(edgeprune.api, "inversion_audit", inversion_audit)
    for attacks in ("all", "all,inversion"):
        res = CliRunner().invoke(app, ["audit", str(tmp_path), "--attacks", attacks, "--shadows", "4", "--references", "8"])
        assert res.exit_code == 2 and "stopped here by the test" in res.output, res.output
    assert seen == [(["all"], 4, 8), ["inversion"], (["all"], 4, 8)]
