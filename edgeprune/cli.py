"""The command line. Thin: parse, call edgeprune.api, render with rich. Heavy imports stay inside commands."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(
    help="Compress PyTorch models for edge GPUs and measure membership-inference leakage next to latency.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def _esc(text) -> str:
    """User-, file- and docstring-derived text printed literally (rich would read ``[...]`` as markup)."""
    from rich.markup import escape

    return escape(str(text))


def _log(msg: str) -> None:
    """Progress lines from the API. They quote paths and names the user chose, so the text is printed
    literally; a message wholly wrapped in one style tag (``[dim]...[/dim]``) keeps that style."""
    import re

    m = re.fullmatch(r"\[(dim|yellow|red|green|bold)\](.*)\[/\1?\]", str(msg), re.S)
    text = f"[{m.group(1)}]{_esc(m.group(2))}[/{m.group(1)}]" if m else _esc(msg)
    _console(stderr=True).print(text)


def _fail(msg: str, code: int = 2) -> None:
    first = str(msg).strip().splitlines()[0] if str(msg).strip() else "failed"
    if len(first) > 1000:  # a last bound: messages quote user values, which are cut where they are quoted
        first = first[:997] + "..."
    _console(stderr=True).print(f"[bold red]error:[/bold red] {_esc(first)}", soft_wrap=True)
    raise typer.Exit(code)


RESUME = "rerun with --resume to continue"
AGAIN = "run the same command again"


def _guard(fn, *args, interrupted: str = AGAIN, out: Path | None = None, **kwargs):
    """Run ``fn``; a UserError becomes one red line and exit code 2, and so does a file-system error on a
    path the user named (unwritable -o, a file where a directory should be) and a full disk anywhere (named
    by the path that was written, else ``out``). Ctrl-C says ``interrupted``: how to continue this command."""
    from edgeprune.errors import UserError

    try:
        return fn(*args, **kwargs)
    except UserError as e:
        _fail(str(e))
    except KeyboardInterrupt:
        _fail(f"interrupted; {interrupted}", code=130)
    except Exception as e:
        full = _disk_full(e)
        if full is not None:
            where = full.filename or out or "the output"
            _fail(f"no space left on the device writing {where}; free some space, then {interrupted}")
        if not isinstance(e, OSError) or e.filename is None:
            raise
        _fail(f"{e.strerror or type(e).__name__}: {e.filename}")


def _disk_full(e: BaseException) -> OSError | None:
    """The full-disk (or over-quota) OSError behind ``e``, also when a library wrapped it, else None."""
    import errno

    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return e
        if "No space left on device" in str(e):
            return OSError(errno.ENOSPC, "No space left on device")
        e = e.__cause__ or e.__context__
    return None


def _trust_opt():
    return typer.Option(False, "--trust-code", help="build the run's model even where its recipe names code "
                        "(pkg.module:factory): a run directory is data; pass this only for runs you made or trust")


def _model_opt(onnx: bool = False):
    return typer.Option(None, "--model", help=("architecture of an ONNX target, for shadows / references; for a "
                                                "run: " if onnx else "") + "the run's model spec where it is code "
                        "(pkg.module:factory), which builds that spec only (see --trust-code)")


def _trusting(model: str | None, trust: bool):
    """The block in which a finished run's code-named model may be built (edgeprune.stages.common.trust_code)."""
    from edgeprune.stages.common import trust_code

    return trust_code([model] if model else [], trust)


def _check_out(path: Path, what: str = "-o") -> None:
    """Refuse at once an output path that cannot be created: its nearest existing ancestor must be a
    writable directory (a file in the way, a read-only or special file system fail here, before any work)."""
    import os

    from edgeprune.errors import ConfigError

    p = Path(path).expanduser().absolute()
    if p.is_symlink():  # dangling or not: its target is not where the user said to write
        raise ConfigError(f"{what} {path} is a symbolic link; name a real path (edgeprune does not write through links)")
    parent = p.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"cannot create {what} {path}: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK) or str(parent.resolve()).startswith(("/proc", "/sys")):
        raise ConfigError(f"cannot create {what} {path}: {parent} is not writable")


@app.command()
def compress(
    model: str = typer.Argument(..., help="zoo name (see `edgeprune models`) or pkg.module:factory"),
    data: str | None = typer.Option(None, "--data", "-d", help="digits | purchase-synth[:N] | cifar10:DIR | npz:FILE"),
    sparsity: float | None = typer.Option(None, help="fraction of channels removed per prunable group (0-1)"),
    method: str | None = typer.Option(None, help="structured | block | 2:4 | unstructured"),
    criterion: str | None = typer.Option(None, help="structured: l1 | l2 | bn-scale | taylor | random | leakage"),
    schedule: str | None = typer.Option(None, help="one-shot | iterative | gradual | admm"),
    epochs: int | None = typer.Option(None, help="epochs to train the dense model"),
    finetune_epochs: int | None = typer.Option(None, help="epochs to fine-tune after pruning"),
    defense: str | None = typer.Option(None, help="fine-tuning defense NAME[:STRENGTH], e.g. kl:4 (see `edgeprune defenses`)"),
    defense_scope: str | None = typer.Option(None, help="where the defense acts: finetune | train (the dense model) | both"),
    rewind: str | None = typer.Option(None, help="retrain the pruned model from dense weights: none | init | epoch:K"),
    quant: str | None = typer.Option(None, help="int8 | mixed (8/4-bit weights chosen against leakage) | none"),
    qat_epochs: int | None = typer.Option(None, help="fake-quant fine-tuning epochs before export (0: PTQ only)"),
    target_bits: float | None = typer.Option(None, help="mixed: average weight bits to reach (4-8)"),
    weights: Path | None = typer.Option(None, help="dense weights (.safetensors, or a state_dict read with weights_only=True)"),
    seed: int | None = typer.Option(None, help="seed for split, training and fine-tuning"),
    recipe: Path | None = typer.Option(None, help="YAML recipe; options given here override it"),
    out: Path = typer.Option(Path("runs/latest"), "--out", "-o", help="run directory"),
    resume: bool = typer.Option(False, help="continue an interrupted run, skipping finished stages"),
    executor: str | None = typer.Option(None, help="where attacker models / trials run: local | process | ray"),
    ray_address: str | None = typer.Option(None, help="ray: unset starts a local Ray, 'auto' joins a running cluster, or HOST:PORT"),
    ensemble: int | None = typer.Option(None, help="attacker models trained together as one batched ensemble (1: one by one)"),
    workers: int | None = typer.Option(None, help="process pool size / CPUs of a local Ray (0: all cores)"),
    device: str | None = typer.Option(None, "--device", help="where models train: auto (a GPU where CUDA exists) | cpu | cuda | cuda:N"),
    amp: bool | None = typer.Option(None, "--amp/--no-amp", help="bf16 autocast on a GPU"),
):
    """Train (or load), prune, fine-tune, export, quantize, audit and benchmark one model."""

    def go():
        from edgeprune import api
        from edgeprune.defend import parse
        from edgeprune.recipe import Recipe, load_recipe
        from edgeprune.report.tables import to_rich

        _check_out(out)
        r = load_recipe(recipe) if recipe else Recipe()
        r.model = model
        if defense is not None:
            r.defense.name, r.defense.strength = parse(defense)
        overrides = [(r.quant, "qat_epochs", qat_epochs), (r.quant, "target_bits", target_bits),
                     (r, "data", data), (r.prune, "sparsity", sparsity), (r.prune, "method", method),
                     (r.prune, "criterion", criterion), (r.prune, "schedule", schedule), (r.train, "epochs", epochs),
                     (r.finetune, "epochs", finetune_epochs), (r.quant, "mode", quant),
                     (r, "weights", str(weights) if weights is not None else None), (r, "seed", seed),
                     (r.defense, "scope", defense_scope), (r.prune, "rewind", rewind)]
        for section, field, value in overrides:  # options given on the command line win over the recipe
            if value is not None:
                setattr(section, field, value)
        r.exec = _execution(r.exec, executor, ray_address, ensemble, workers)
        _runtime(r, device, amp)
        con = _console()
        run_dir = api.compress(r, out, resume=resume, log=_log)
        report = api.load_report(run_dir)
        con.print(to_rich(report))
        con.print(f"run directory: {_esc(run_dir)}  (report.md, report.json, manifest.json)")

    _guard(go, interrupted=RESUME, out=out)


@app.command()
def audit(
    target: str = typer.Argument(..., help="a run directory, an .onnx file, or a model spec with --weights"),
    data: str | None = typer.Option(None, "--data", "-d", help="data spec (a run's own data by default)"),
    attacks: str = typer.Option("", help="comma-separated attack names, or 'all' (default: the run's recipe)"),
    shadows: int | None = typer.Option(None, help="shadow models through the same pipeline (nn, samia, diff, class-wise)"),
    references: int | None = typer.Option(None, help="reference models for lira / rmia (even numbers pair up)"),
    on: str = typer.Option("onnx", help="run dirs: audit the exported ONNX artifacts (int8 included) or the torch modules"),
    model: str | None = _model_opt(onnx=True),
    trust: bool = _trust_opt(),
    weights: Path | None = typer.Option(None, help="weights of a model-spec target"),
    membership: str = typer.Option("train-test", help="non-run targets: train-test (npz / cifar10 parts) or split"),
    seed: int = typer.Option(0, help="non-run targets: seed of the split and of the attacker's models"),
    out: Path | None = typer.Option(None, "--out", "-o", help="non-run targets: audit directory"),
    threat: str | None = typer.Option(None, help="adaptive | non-adaptive | both: attacker models with / without the defense"),
    seeds: int | None = typer.Option(None, help="trained targets (training seeds) behind every figure: mean, sd, CI"),
    preset: str | None = typer.Option(None, help="quick (1 shadow, 4 references, 1 seed) or thorough (4, 16, 3)"),
    layer: str | None = typer.Option(None, "--layer", help="inversion attacks: split points, comma-separated "
                                     "(default: every block boundary; `edgeprune inspect MODEL` lists them)"),
    split_noise: float = typer.Option(0.0, "--split-noise", help="inversion: defend one --layer with Gaussian noise "
                                      "(this many feature stds) in fine-tuning and deployment; reports its accuracy cost"),
    executor: str | None = typer.Option(None, help="where attacker models / trials run: local | process | ray"),
    ray_address: str | None = typer.Option(None, help="ray: unset starts a local Ray, 'auto' joins a running cluster, or HOST:PORT"),
    ensemble: int | None = typer.Option(None, help="attacker models trained together as one batched ensemble (1: one by one)"),
    workers: int | None = typer.Option(None, help="process pool size / CPUs of a local Ray (0: all cores)"),
    batch_training: str | None = typer.Option(None, "--batch-training", help="an ensemble's training steps: auto "
                                              "(batched on a GPU, one by one on a CPU) | batched | one-by-one"),
    device: str | None = typer.Option(None, "--device", help="where models train: auto (a GPU where CUDA exists) | cpu | cuda | cuda:N"),
    amp: bool | None = typer.Option(None, "--amp/--no-amp", help="bf16 autocast on a GPU"),
):
    """Membership-inference audit (table sorted by TPR@0.1%FPR, log-log ROC and per-class plots), and model
    inversion from split-point features (--attacks inversion,inversion-wb)."""

    def go():
        from edgeprune import api
        from edgeprune.attack import audit as _registers_every_attack  # noqa: F401
        from edgeprune.attack.audit import ALL
        from edgeprune.attack.base import names_of_kind
        from edgeprune.attack.tables import audit_table

        names = [a.strip() for a in attacks.split(",") if a.strip()] or None
        log = _log
        runtime = _runtime(None, device, amp) if device is not None or amp is not None else None
        _check_audit_target(target)
        inversion = names_of_kind("inversion", [n for n in names if n != ALL]) if names else []  # 'all': membership
        if inversion:
            if not Path(target).expanduser().is_dir():
                _fail("inversion attacks audit a run directory (they need the model's split points)")
            layers = [w.strip() for w in (layer or "").split(",") if w.strip()]
            with _trusting(model, trust):
                result = api.inversion_audit(Path(target).expanduser(), inversion, layers, split_noise, log=log)
            _console().print(_inversion_table(result))
            names = [n for n in names if n not in inversion]
            if not names:
                return
        elif layer or split_noise:
            _fail("--layer and --split-noise go with inversion attacks (--attacks inversion or inversion-wb)")
        given = any(v is not None for v in (executor, ray_address, ensemble, workers, batch_training))
        execution = _execution(None, executor, ray_address, ensemble, workers, batch_training) if given else None
        if Path(target).expanduser().is_dir():
            with _trusting(model, trust):
                result = api.audit_run(Path(target).expanduser(), names, shadows, references, on, data, log=log,
                                       threat=threat, seeds=seeds, preset=preset, execution=execution,
                                       runtime=runtime)
            where = Path(target)
        else:
            if data is None:
                _fail("auditing a model file needs --data")
            if out is not None:
                _check_out(out)
            where, result = api.audit_model(target, data, model, str(weights) if weights else None, membership, seed,
                                            names, shadows, references, out, log=log, threat=threat or "adaptive",
                                            seeds=seeds, preset=preset, execution=execution, runtime=runtime)
        con = _console()
        for table in audit_table(result):
            con.print(table)
        t = result["timing"]
        ex = result.get("execution") or {}
        if "models_trained" in ex:
            con.print(f"attacker models: {ex['models_trained']} trained, {ex['models_cached']} from the cache, "
                      f"{ex['tasks']} task(s) on {ex['executor']} (ensemble {ex['ensemble']}, {ex['runtime']['device']}), {ex['wall_s']:.1f}s wall")
        con.print(f"training attacker models {t['shadow_and_reference_training_s']:.1f}s, signals {t['signals_s']:.1f}s, "
                  f"attacks {t['attacks_s']:.1f}s; plots: {_esc(where)}/audit_roc.png, {_esc(where)}/audit_per_class.png")

    _guard(go, interrupted="run the same audit again (the run or -o is as it was)", out=out or Path(target))


def _check_audit_target(target: str) -> None:
    """A target that looks like a path (a run directory or an .onnx file) must exist: say so at once,
    before asking for --data, --membership or --weights."""
    from edgeprune.errors import ConfigError

    p = Path(target).expanduser()
    if p.exists():
        if p.is_file() and p.suffix != ".onnx":
            raise ConfigError(f"{target} is a file but not an .onnx model (give a run directory, an .onnx file "
                              "or a model spec with --weights)")
        return
    looks_like_path = "/" in target or target.startswith((".", "~")) or target.endswith(".onnx")
    if looks_like_path:
        raise ConfigError(f"{target} not found (no such run directory or .onnx file)")


def _inversion_table(result: dict):
    from rich.table import Table

    t = Table("variant", "split point", "feature", "attack", "PSNR dB (95% CI)", "SSIM", "judge acc",
              title=f"model inversion (judge accuracy on the originals {result['judge_accuracy_on_originals']:.3f})")
    for variant, layers in result["variants"].items():
        for name, e in layers.items():
            for attack, a in e["attacks"].items():
                ps = a["psnr"]
                t.add_row(variant, name, "x".join(map(str, e["feature_shape"])), attack,
                          f"{ps['mean']:.2f} ({ps['ci95'][0]:.2f}-{ps['ci95'][1]:.2f})",
                          f"{a['ssim']['mean']:.3f}" if "ssim" in a else "-", f"{a['judge_accuracy']['mean']:.3f}")
    return t
def _runtime(r, device: str | None, amp: bool | None):
    """The recipe's ``runtime`` section (``r``: a Recipe, or None for a fresh section) with --device / --amp,
    resolved at once: ``--device cuda`` where there is no CUDA is one line and exit 2 before anything is
    written. Returns the section."""
    import dataclasses

    from edgeprune.recipe import RuntimeConfig
    from edgeprune.runtime import resolve

    rt = dataclasses.replace(r.runtime) if r is not None else RuntimeConfig()
    if device is not None:
        rt.device = device
    if amp is not None:
        rt.amp = amp
    resolve(rt.device, rt.amp)
    if r is not None:
        r.runtime = rt
    return rt


def _execution(base, executor, ray_address, ensemble, workers, batch_training=None):
    """The recipe's ``exec`` section with the command-line options that were given."""
    import dataclasses

    from edgeprune.errors import ConfigError
    from edgeprune.recipe import BATCH_TRAINING, ExecConfig

    if batch_training is not None and batch_training not in BATCH_TRAINING:
        raise ConfigError(f"--batch-training must be one of {', '.join(BATCH_TRAINING)}, got {batch_training!r}")
    e = dataclasses.replace(base) if base is not None else ExecConfig()
    for name, value in (("executor", executor), ("ray_address", ray_address), ("ensemble", ensemble),
                        ("workers", workers), ("batch_training", batch_training)):
        if value is not None:
            setattr(e, name, value)
    return e


@app.command()
def export(
    run_dir: Path = typer.Argument(..., help="a run directory made by `edgeprune compress`"),
    format: str = typer.Option("onnx", "--format", help="onnx | tensorrt (lint + engine where tensorrt imports, else the bundle)"),
    opset: int = typer.Option(20, help="ONNX opset (18-23: what the exporter writes natively and onnxruntime reads)"),
    dynamic_batch: bool = typer.Option(False, help="dynamic batch dimension (else fixed at --batch)"),
    batch: int = typer.Option(1, help="fixed batch size when not --dynamic-batch"),
    fp16: bool = typer.Option(False, "--fp16", help="also write an fp16 model"),
    int8: bool = typer.Option(False, "--int8", help="also write an int8 QDQ model (per-channel symmetric weights)"),
    activations: str | None = typer.Option(None, help="int8 activations: uint8 (CPU) or int8 (TensorRT; default for --format tensorrt)"),
    calibration: str = typer.Option("minmax", help="minmax | entropy | percentile"),
    block: int = typer.Option(32, help="block size for block-sparse Linear layers (custom op ai.edgeprune)"),
    dense: bool = typer.Option(False, "--dense", help="dense fallback only: no block-sparse custom ops"),
    split: str | None = typer.Option(None, "--split", help="split deployment: write split/head.onnx (input -> "
                                     "features at this split point) and split/tail.onnx (features -> logits)"),
    split_noise: float = typer.Option(0.0, "--split-noise", help="with --split: the head adds Gaussian noise of this "
                                      "many feature standard deviations to the features it sends"),
    model: str | None = _model_opt(),
    trust: bool = _trust_opt(),
):
    """Export the compressed model to verified ONNX (fp32 / fp16 / int8 QDQ / block-sparse) or for TensorRT."""

    def go():
        from rich.table import Table

        from edgeprune import api

        if split is not None:
            with _trusting(model, trust):
                info = api.export_split_run(run_dir, split, opset, split_noise, log=_log)
            v = info["verification"]
            _console().print(f"split at {info['split_point']}: features {tuple(info['feature_shape'])}, "
                             f"{info['bytes_per_sample']['fp32']} bytes per sample (fp32); head+tail vs model: "
                             f"max relative error {v['composed_max_rel_err']:.1e}, top-1 agreement {v['top1_agreement']:.4f}")
            return

        with _trusting(model, trust):
            res = api.export_run(run_dir, format, opset, dynamic_batch, batch, fp16, int8, activations, calibration,
                                 block, dense, log=_log)
        t = Table("file", "precision", "max rel err", "top-1 agree", "test acc")
        for name, info in res["files"].items():
            err = info.get("max_rel_err")
            agree = info.get("top1_agreement", info.get("top1_agreement_with_fp32"))
            t.add_row(_esc(name), info["precision"], "-" if err is None else f"{err:.2e}",
                      "-" if agree is None else f"{agree:.4f}", f"{info['test_accuracy']:.4f}")
        _console().print(t)
        for name, findings in res.get("lint", {}).items():
            for f in findings:
                _console().print(f"[{'red' if f['level'] == 'error' else 'yellow'}]{_esc(name)}: {f['level']}: "
                                 f"{_esc(f['message'])}[/]")
        _console().print(f"written to {_esc(run_dir / 'export')}")

    _guard(go, interrupted="run the same export again (the run is as it was)", out=run_dir)


@app.command()
def bundle(
    run_dir: Path = typer.Argument(..., help="a run directory made by `edgeprune compress`"),
    out: Path = typer.Option(Path("bundle"), "--out", "-o", help="bundle directory"),
    precision: str = typer.Option("fp16,int8", help="comma-separated: fp32, fp16, int8"),
    batch: int = typer.Option(1, help="fixed batch size of the bundled models"),
    dynamic_batch: bool = typer.Option(False, help="dynamic batch (build_engine.sh then passes shape profiles)"),
    split: str | None = typer.Option(None, "--split", help="split deployment: the head up to this split point on "
                                     "the device, the tail under server/ with run_onnx.py"),
    model: str | None = _model_opt(),
    trust: bool = _trust_opt(),
):
    """Write a Jetson deployment bundle: ONNX, plugin sources, build_engine.sh, bench.sh, run_onnx.py, manifest."""

    def go():
        from edgeprune import api

        _check_out(out)
        precisions = [p.strip() for p in precision.split(",") if p.strip()]
        if split is not None:
            with _trusting(model, trust):
                path = api.bundle_split_run(run_dir, out, split, precisions, batch, dynamic_batch, log=_log)
            _console().print(f"split bundle: {_esc(path)}  (device: ./build_engine.sh for the head; server: server/run_onnx.py)")
            return
        with _trusting(model, trust):
            path = api.bundle_run(run_dir, out, precisions, batch, dynamic_batch, log=_log)
        _console().print(f"bundle: {_esc(path)}  (copy it to the device, then ./build_engine.sh && ./bench.sh)")

    _guard(go, interrupted="run the same bundle command again (-o is as it was)", out=out)


@app.command("bench")
def bench_cmd(
    target: Path = typer.Argument(..., help="a run directory (dense baseline included) or an .onnx file"),
    backend: str = typer.Option("ort-cpu", help="comma-separated: torch, torch-compile, ort-cpu, ort-cuda, tensorrt"),
    batch: str = typer.Option("1,8,32", help="comma-separated batch sizes"),
    threads: int = typer.Option(1, help="intra-op threads (onnxruntime, torch CPU)"),
    warmup: float = typer.Option(0.5, help="seconds of warm-up per measurement"),
    duration: float = typer.Option(2.0, help="minimum seconds of timed runs per measurement"),
    cuda_graph: bool = typer.Option(False, help="torch on CUDA: replay a captured CUDA graph"),
    host: str | None = typer.Option(None, help="--backend remote: user@jetson or an ssh config alias"),
    ssh_config: Path | None = typer.Option(None, help="--backend remote: ssh config file"),
    port: int | None = typer.Option(None, help="--backend remote: ssh port"),
    identity: Path | None = typer.Option(None, help="--backend remote: ssh private key"),
    python: str = typer.Option("python3", help="--backend remote: python with numpy + onnxruntime on the device"),
    remote_dir: str = typer.Option("edgeprune", help="--backend remote: base directory on the device (relative to your home)"),
    model: str | None = _model_opt(),
    trust: bool = _trust_opt(),
):
    """Latency p50/p90/p99 and throughput per backend and batch (plus peak GPU memory for torch on CUDA);
    appended to bench.json."""

    def go():
        from rich.table import Table

        from edgeprune import api

        try:
            batches = [int(b) for b in batch.split(",") if b.strip()]
        except ValueError:
            _fail(f"--batch takes comma-separated whole numbers, got {batch[:40]!r}")
        from edgeprune.bench.remote import Host, check_remote_dir

        if "remote" in backend:
            check_remote_dir(remote_dir)
        h = Host(host, port, str(identity) if identity else None, str(ssh_config) if ssh_config else None) if host else None
        with _trusting(model, trust):
            out, entries = api.bench(target, [b.strip() for b in backend.split(",") if b.strip()], batches, threads,
                                     warmup, duration, cuda_graph, h, python, remote_dir, log=_log)
        for e in entries:
            t = Table(title=f"{e['backend']} ({e.get('threads')} thread(s))")
            for c in ("variant", "batch", "p50 ms", "p90 ms", "p99 ms", "mean ms", "items/s", "vs dense"):
                t.add_column(c, justify="left" if c == "variant" else "right")
            for label, v in e["variants"].items():
                for r in v["latency"]:
                    if "p50_ms" not in r:
                        t.add_row(_esc(label), str(r["batch"]), f"[dim]{_esc(r.get('skipped', ''))}[/dim]", "", "", "", "", "")
                        continue
                    sp = r.get("speedup_vs_dense")
                    t.add_row(_esc(label), str(r["batch"]), f"{r['p50_ms']:.3f}", f"{r['p90_ms']:.3f}", f"{r['p99_ms']:.3f}",
                              f"{r['mean_ms']:.3f}", f"{r['throughput_per_s']:.0f}", "-" if sp is None else f"{sp:.2f}x")
            if e["backend"] == "remote":
                t.title = _esc(f"remote {e['host']} ({e.get('uname') or ''})")
            _console().print(t)
        _console().print(f"appended to {_esc(out)}")

    _guard(go, interrupted="run the same bench again (the run is as it was)", out=target)


@app.command()
def deploy(
    bundle_dir: Path = typer.Argument(..., help="a bundle made by `edgeprune bundle`"),
    host: str = typer.Option(..., help="user@host or an alias from ~/.ssh/config"),
    port: int | None = typer.Option(None, help="ssh port"),
    identity: Path | None = typer.Option(None, help="ssh private key"),
    ssh_config: Path | None = typer.Option(None, help="ssh config file (default: ~/.ssh/config)"),
    remote_dir: str | None = typer.Option(None, help="directory on the device, relative to your home there unless it "
                                          "starts with / (default edgeprune/BUNDLE_NAME; ~ is not expanded)"),
    build_engine: bool = typer.Option(False, help="run build_engine.sh on the device (needs trtexec there)"),
    bench: bool = typer.Option(True, help="benchmark there: bench.sh with engines, else run_onnx.py"),
    python: str = typer.Option("python3", help="python on the device that has numpy + onnxruntime"),
    duration: float = typer.Option(5.0, help="seconds of timed runs per model on the device"),
):
    """Copy a bundle to a Jetson over SSH, build / benchmark there, and collect the JSON (and power)."""

    def go():
        from edgeprune.bench.remote import Host, check_remote_dir
        from edgeprune.bench.remote import deploy as do_deploy

        if remote_dir is not None:
            check_remote_dir(remote_dir)
        h = Host(host, port, str(identity) if identity else None, str(ssh_config) if ssh_config else None)
        info = do_deploy(bundle_dir, h, remote_dir, build_engine, bench, python, duration, log=_log)
        from rich.table import Table

        t = Table(title=_esc(f"{info['host']} ({info['uname']})"))
        for c in ("file", "check", "p50 ms", "p90 ms", "p99 ms", "mJ / inference"):
            t.add_column(c)
        for r in info.get("onnx", {}).get("results", []):
            e = r.get("energy_mj_per_inference")
            t.add_row(_esc(r["file"]), "ok" if r["check_passed"] else "[red]MISMATCH[/red]", f"{r['p50_ms']:.3f}",
                      f"{r['p90_ms']:.3f}", f"{r['p99_ms']:.3f}", "-" if e is None else f"{e:.3f}")
        _console().print(t)
        _console().print(_esc(f"steps: {', '.join(info['steps']) or 'copy only'}; results in {info['results_dir']}"))

    _guard(go)


@app.command()
def report(
    run_dirs: list[Path] = typer.Argument(..., help="one or more run directories (e.g. a sparsity sweep)"),
    out: Path = typer.Option(Path("report.html"), "--out", "-o", help="HTML file; .md, .json and plots go beside it"),
    leakage: str = typer.Option("tpr", help="the plots' leakage axis: tpr (the strongest attack's TPR at 0.1% FPR, "
                                "1% where below resolution) | auc"),
):
    """One self-contained HTML report (plus Markdown and JSON) comparing runs: latency, accuracy, leakage."""

    def go():
        from edgeprune.report.html import write_report

        _check_out(out, "report file")
        paths = write_report(run_dirs, out, leakage)
        _console().print(_esc(f"report: {paths['html']}  ({paths['markdown'].name}, {paths['json'].name})"))

    _guard(go, out=out)


@app.command()
def predict(
    target: Path = typer.Argument(..., help="a run directory or a bundle of a model trained on image files"),
    images: list[Path] = typer.Argument(..., help="image files"),
    top: int = typer.Option(3, help="classes to print for each image"),
    json_out: bool = typer.Option(False, "--json", help="print JSON (logits included) instead of a table"),
):
    """Classify image files with a run's or a bundle's ONNX model, preprocessed exactly as its training data."""

    def go():
        import json

        from rich.table import Table

        from edgeprune.ops.predict import predict_images

        res = predict_images(target, images, top=top)
        if json_out:
            typer.echo(json.dumps(res, indent=2))
            return
        t = Table("image", "top classes (probability)", title=_esc(f"predictions of {res['model']}"))
        for r in res["images"]:
            t.add_row(_esc(r["file"]), _esc(", ".join(f"{c['class']} ({c['p']:.3f})" for c in r["top"])))
        _console().print(t)

    _guard(go)


@app.command()
def inspect(
    model: str = typer.Argument(..., help="zoo name or pkg.module:factory"),
    data: str = typer.Option("cifar-synth:200", "--data", "-d", help="data spec that fixes input shape and classes"),
    block: int = typer.Option(32, help="block size for the block-sparsity check"),
):
    """Prunable channel groups (coupled layers pruned together), layers it cannot handle and why, params, MACs."""

    def go():
        from rich.table import Table

        from edgeprune.data import load_dataset
        from edgeprune.models import build_model, check_fits, count_macs, count_params
        from edgeprune.prune import masks as M
        from edgeprune.prune.structured import inspect_groups

        ds = load_dataset(data)
        m = build_model(model, ds.in_shape, ds.num_classes)
        check_fits(m, ds.in_shape, ds.num_classes, name=f"model {model!r}")
        groups, unhandled = inspect_groups(m, ds.in_shape)
        con = _console()
        con.print(_esc(f"{model} on {ds.name}: input {ds.in_shape}, {ds.num_classes} classes, "
                       f"{count_params(m):,} params, {count_macs(m, ds.in_shape):,} MACs"))
        t = Table("group root", "channels", "pruned together", title=f"{len(groups)} prunable channel groups")
        for g in groups:
            t.add_row(_esc(g["root"]), str(g["channels"]), _esc(", ".join(g["coupled"])))
        con.print(t)
        t = Table("layer", "why it is not pruned", title="left alone")
        for name, why in unhandled.items():
            t.add_row(_esc(name), _esc(why))
        con.print(t)
        _, nm_skip = M.n_m(m)
        _, blk_skip = M.block(m, 0.5, size=block)
        t = Table("weight", "2:4", f"block {block}", title="mask patterns")
        for name in M.prunable_weights(m):
            t.add_row(_esc(name), _esc(nm_skip.get(name, "ok")), _esc(blk_skip.get(name, "ok")))
        con.print(t)
        _split_table(m, ds.in_shape)

    _guard(go)


def _split_table(model, in_shape) -> None:
    """Candidate split points (export / bundle --split, audit --layer) with their feature sizes."""
    from rich.table import Table

    from edgeprune.errors import UserError
    from edgeprune.models.splits import split_points

    try:
        points = split_points(model, in_shape)
    except UserError as e:
        _console().print(f"[yellow]split points: {e}[/yellow]")
        return
    t = Table("split point", "feature shape", "bytes / sample (fp32)", "int8", "also called",
              title="split points (--split / --layer; input is the identity, not a default)")
    for p in points:
        t.add_row(p.name, "x".join(map(str, p.shape)), f"{p.bytes_per_sample(4):,}", f"{p.bytes_per_sample(1):,}",
                  ", ".join(a for a in p.aliases if a != p.name))
    _console().print(t)


@app.command()
def attacks():
    """List the membership-inference attacks."""
    from rich.table import Table

    from edgeprune.attack.audit import ATTACKS

    t = Table("attack", "needs", "description")
    for name in ATTACKS.names():
        a = ATTACKS.get(name)
        t.add_row(_esc(name), _esc(", ".join(sorted(a.needs)) or "-"), _esc(a.doc))
    _console().print(t)


def _registry_table(registry, heading: str) -> None:
    """Names and one-line descriptions, from the registry's declarations (no torch import)."""
    from rich.table import Table

    t = Table(heading, "description")
    for name in registry.names():
        t.add_row(_esc(name), _esc(registry.meta(name).get("doc", "")))
    _console().print(t)


@app.command()
def prune(
    model: str = typer.Argument(..., help="zoo name or pkg.module:factory"),
    data: str = typer.Option("purchase-synth", "--data", "-d", help="data spec"),
    method: str = typer.Option("structured", help="structured | block | 2:4 | unstructured"),
    criterion: str = typer.Option("l1", help="structured: l1 | l2 | bn-scale | taylor | random"),
    sparsity: float = typer.Option(0.5, help="channels (structured), blocks (block) or weights (unstructured) removed"),
    schedule: str = typer.Option("one-shot", help="one-shot | iterative | gradual | admm"),
    steps: int = typer.Option(3, help="iterative / gradual steps"),
    block: int = typer.Option(32, "--block", help="block size (16 / 32 / 64) for --method block"),
    round_to: int = typer.Option(8, help="kept channels are a multiple of this"),
    global_ranking: bool = typer.Option(False, help="rank channels across layers"),
    exclude: str = typer.Option("", help="comma-separated module-name globs never pruned"),
    plan: Path | None = typer.Option(None, help="replay this plan.json instead of computing one"),
    weights: Path | None = typer.Option(None, help="dense weights (else the model is trained)"),
    epochs: int | None = typer.Option(None, help="epochs to train the dense model"),
    finetune_epochs: int | None = typer.Option(None, help="fine-tuning epochs (split across schedule steps)"),
    seed: int = typer.Option(0),
    out: Path = typer.Option(Path("runs/prune"), "--out", "-o"),
    resume: bool = typer.Option(False),
    device: str | None = typer.Option(None, "--device", help="where models train: auto (a GPU where CUDA exists) | cpu | cuda | cuda:N"),
    amp: bool | None = typer.Option(None, "--amp/--no-amp", help="bf16 autocast on a GPU"),
):
    """Prune a model: structured (physically smaller), block, 2:4 or unstructured, with a schedule; saves plan.json."""

    def go():
        from rich.table import Table

        from edgeprune import api
        from edgeprune.recipe import Recipe

        _check_out(out)
        r = Recipe(model=model, data=data, seed=seed)
        p = r.prune
        p.method, p.criterion, p.sparsity, p.schedule, p.steps = method, criterion, sparsity, schedule, steps
        p.block, p.round_to, p.global_ranking = block, round_to, global_ranking
        p.exclude = [e.strip() for e in exclude.split(",") if e.strip()]
        p.plan = str(plan) if plan else None
        r.weights = str(weights) if weights else None
        if epochs is not None:
            r.train.epochs = epochs
        if finetune_epochs is not None:
            r.finetune.epochs = finetune_epochs
        _runtime(r, device, amp)
        res = api.prune_run(r, out, resume=resume, log=_log)
        t = Table("", "dense", "pruned", title=_esc(f"{model}: {res['method']} ({res['schedule']}) at {sparsity}"))
        t.add_row("params", f"{res['params_dense']:,}", f"{res['params_pruned']:,}")
        t.add_row("non-zero params", "", f"{res['params_pruned_nonzero']:,}")
        t.add_row("MACs", f"{res['macs_dense']:,}", f"{res['macs_pruned']:,}")
        t.add_row("test acc", f"{res['dense_test_accuracy']:.4f}", f"{res['test_accuracy']:.4f}")
        _console().print(t)
        _console().print(_esc(f"plan: {res['run_dir']}/plan.json  (ONNX verified: {res['onnx_verified']})"))

    _guard(go, interrupted=RESUME, out=out)


@app.command()
def models():
    """List the model zoo."""
    from edgeprune.models.registry import MODELS

    _registry_table(MODELS, "model")


def _floats(text: str, name: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        _fail(f"--{name} takes comma-separated numbers, got {text[:40]!r}")


def _words(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


@app.command()
def tune(
    model: str = typer.Argument(..., help="zoo name or pkg.module:factory"),
    data: str | None = typer.Option(None, "--data", "-d", help="data spec"),
    sparsity: str = typer.Option("0.5", help="comma-separated sparsities to try"),
    method: str = typer.Option("structured", help="comma-separated pruning methods"),
    criterion: str = typer.Option("l1", help="comma-separated criteria (l1, leakage, ...)"),
    defense: str = typer.Option("none", help="comma-separated NAME[:STRENGTH] defenses, e.g. none,kl:4,relaxloss:1"),
    quant: str = typer.Option("int8", help="comma-separated quantization modes (int8, mixed, none)"),
    defense_scope: str | None = typer.Option(None, help="where every trial's defense acts: finetune | train | both"),
    rewind: str | None = typer.Option(None, help="every trial retrains the pruned model from: none | init | epoch:K"),
    max_acc_drop: float | None = typer.Option(None, help="budget: accuracy points below the dense model"),
    max_auc: float | None = typer.Option(None, help="budget: AUC of the strongest attack"),
    max_tpr: float | None = typer.Option(None, help="budget: TPR at 0.1% FPR of the strongest attack"),
    objective: str = typer.Option("latency", help="latency | size | auc | tpr | accuracy"),
    search: str = typer.Option("grid", help="grid | halving (a third of the fine-tuning first, then the best third)"),
    jobs: int = typer.Option(1, help="trials run in parallel processes"),
    attacks: str | None = typer.Option(None, help="attacks per trial (default: the recipe's)"),
    shadows: int | None = typer.Option(None, help="shadow models per trial"),
    references: int | None = typer.Option(None, help="reference models per trial"),
    epochs: int | None = typer.Option(None, help="epochs to train the dense model (once)"),
    finetune_epochs: int | None = typer.Option(None, help="fine-tuning epochs per trial"),
    weights: Path | None = typer.Option(None, help="dense weights instead of training"),
    seed: int | None = typer.Option(None, help="seed"),
    recipe: Path | None = typer.Option(None, help="YAML recipe for everything not searched"),
    out: Path = typer.Option(Path("runs/tune"), "--out", "-o", help="tune directory"),
    executor: str | None = typer.Option(None, help="where trials run: local (--jobs > 1: process) | process | ray"),
    ray_address: str | None = typer.Option(None, help="ray: unset starts a local Ray, 'auto' joins a running cluster, or HOST:PORT"),
    ensemble: int | None = typer.Option(None, help="attacker models of each trial's audit trained as one batched ensemble"),
    device: str | None = typer.Option(None, "--device", help="where models train: auto (a GPU where CUDA exists) | cpu | cuda | cuda:N"),
    amp: bool | None = typer.Option(None, "--amp/--no-amp", help="bf16 autocast on a GPU"),
):
    """Search compression settings to an accuracy / leakage budget; Pareto front and the chosen point."""

    def go():
        from edgeprune.recipe import Recipe, load_recipe
        from edgeprune.tune import Budget, Space
        from edgeprune.tune import tune as run_tune

        _check_out(out)
        r = load_recipe(recipe) if recipe else Recipe()
        r.model = model
        for section, field, value in [(r, "data", data), (r.train, "epochs", epochs),
                                      (r.finetune, "epochs", finetune_epochs), (r, "seed", seed),
                                      (r.audit, "shadows", shadows), (r.audit, "references", references),
                                      (r, "weights", str(weights) if weights is not None else None),
                                      (r.audit, "attacks", _words(attacks) if attacks else None),
                                      (r.defense, "scope", defense_scope), (r.prune, "rewind", rewind)]:
            if value is not None:
                setattr(section, field, value)
        r.exec = _execution(r.exec, executor, ray_address, ensemble, None)
        _runtime(r, device, amp)
        r.validate()
        space = Space(_floats(sparsity, "sparsity"), _words(method), _words(criterion), _words(defense), _words(quant))
        budget = Budget(max_acc_drop, max_auc, max_tpr, objective)
        res = run_tune(r, space, budget, out, search=search, jobs=jobs, log=_log)
        con = _console()
        con.print(_tune_table(res))
        con.print(_esc(res["verdict"]))
        con.print(f"tune directory: {_esc(out)}  (tune.json, tune_pareto.png, trials/)")

    _guard(go, interrupted="run the same tune command again (finished trials are reused)", out=out)


TUNE_KEYS = ("method", "criterion", "sparsity", "defense", "quant")


def _tune_table(res: dict):
    """One row per final-rung trial; each searched parameter that varies gets its own column, so trials
    stay distinguishable however narrow the output is (the fixed ones go in the title)."""
    from rich.table import Table

    trials = [tr for tr in res["trials"] if tr["rung"] == 1]
    varying = [k for k in TUNE_KEYS if len({str(tr["config"][k]) for tr in trials}) > 1]
    fixed = [k for k in TUNE_KEYS if k not in varying and trials]
    title = f"edgeprune tune: {len(res['trials'])} trials"
    if fixed:
        title += " with " + ", ".join(f"{k} {trials[0]['config'][k]}" for k in fixed)
    from rich import box

    t = Table(title=_esc(title), box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1, 0, 0))
    t.add_column("id", no_wrap=True)
    for k in varying:  # folded, never cut: these are what tell the trials apart
        t.add_column(k, overflow="fold")
    for c in ("acc", "drop", "AUC", "TPR", "ms", "note"):
        t.add_column(c, no_wrap=True, justify="right")
    for tr in trials:
        c, m = tr["config"], tr.get("metrics")
        note = "chosen" if tr["id"] == res["chosen"] else ("ok" if tr["feasible"] else "no")
        note = ("* " if tr.get("pareto") else "") + ("[bold green]chosen[/]" if note == "chosen" else note)
        conf = [_esc(c[k]) for k in varying]
        if m is None:
            t.add_row(str(tr["id"]), *conf, "-", "-", "-", "-", "-", _esc(tr.get("error", "failed")[:40]))
            continue
        t.add_row(str(tr["id"]), *conf, f"{m['accuracy']:.3f}", f"{m['acc_drop_points']:.2f}", f"{m['auc']:.3f}",
                  "below res." if m["tpr_at_0.1"] is None else f"{m['tpr_at_0.1']:.3f}", f"{m['latency_ms']:.3f}", note)
    t.caption = ("drop: accuracy points below dense; TPR at 0.1% FPR of the strongest attack; ms: latency at "
                 "batch 1; note: * on the Pareto front, ok / no: within / outside the budget")
    return t


@app.command()
def defenses():
    """List the privacy defenses (--defense NAME[:STRENGTH])."""
    from rich.table import Table

    from edgeprune.defend import describe

    t = Table("defense", "strength (default)", "needs")
    for d in describe():
        t.add_row(_esc(d["name"]), _esc(f"{d['strength']} ({'per data set' if d['default_strength'] is None else d['default_strength']})") if d["name"] != "none" else "-",
                  _esc(", ".join(d["needs"]) or "-"))
    _console().print(t)


@app.command()
def datasets():
    """List the built-in data sets and readers."""
    from edgeprune.data import DATASETS

    _registry_table(DATASETS, "data")


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", help="print the version and exit"),
    verbose: bool = typer.Option(False, "--verbose", help="with --version: package versions and CPU features for a bug report"),
):
    if version:
        from edgeprune import __version__

        typer.echo(__version__)
        if verbose:  # standard library only: importlib.metadata and /proc/cpuinfo, torch is not imported
            from edgeprune.versions import bug_report

            typer.echo(bug_report())
        raise typer.Exit(0)
    if ctx.invoked_subcommand is None:
        _fail("--verbose goes with --version or a command; see edgeprune --help" if verbose else
              "missing command; see edgeprune --help")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
