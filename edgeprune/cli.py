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


def _fail(msg: str, code: int = 2) -> None:
    _console(stderr=True).print(f"[bold red]error:[/bold red] {msg}", soft_wrap=True)
    raise typer.Exit(code)


def _guard(fn, *args, **kwargs):
    """Run ``fn``; a UserError becomes one red line and exit code 2."""
    from edgeprune.errors import UserError

    try:
        return fn(*args, **kwargs)
    except UserError as e:
        _fail(str(e))
    except KeyboardInterrupt:
        _fail("interrupted; rerun with --resume to continue", code=130)


@app.command()
def compress(
    model: str = typer.Argument(..., help="zoo name (see `edgeprune models`) or pkg.module:factory"),
    data: str | None = typer.Option(None, "--data", "-d", help="digits | purchase-synth[:N] | cifar10:DIR | npz:FILE"),
    sparsity: float | None = typer.Option(None, help="fraction of channels removed per prunable group (0-1)"),
    method: str | None = typer.Option(None, help="pruning method: l1-structured | l2-structured"),
    epochs: int | None = typer.Option(None, help="epochs to train the dense model"),
    finetune_epochs: int | None = typer.Option(None, help="epochs to fine-tune after pruning"),
    quant: str | None = typer.Option(None, help="int8 | none"),
    weights: Path | None = typer.Option(None, help="dense weights (.safetensors, or a state_dict read with weights_only=True)"),
    seed: int | None = typer.Option(None, help="seed for split, training and fine-tuning"),
    recipe: Path | None = typer.Option(None, help="YAML recipe; options given here override it"),
    out: Path = typer.Option(Path("runs/latest"), "--out", "-o", help="run directory"),
    resume: bool = typer.Option(False, help="continue an interrupted run, skipping finished stages"),
):
    """Train (or load), prune, fine-tune, export, quantize, audit and benchmark one model."""

    def go():
        from edgeprune import api
        from edgeprune.recipe import Recipe, load_recipe
        from edgeprune.report.tables import to_rich

        r = load_recipe(recipe) if recipe else Recipe()
        r.model = model
        if data is not None:
            r.data = data
        if sparsity is not None:
            r.prune.sparsity = sparsity
        if method is not None:
            r.prune.method = method
        if epochs is not None:
            r.train.epochs = epochs
        if finetune_epochs is not None:
            r.finetune.epochs = finetune_epochs
        if quant is not None:
            r.quant.mode = quant
        if weights is not None:
            r.weights = str(weights)
        if seed is not None:
            r.seed = seed
        con = _console()
        run_dir = api.compress(r, out, resume=resume, log=lambda m: _console(stderr=True).print(m))
        report = api.load_report(run_dir)
        con.print(to_rich(report))
        con.print(f"run directory: {run_dir}  (report.md, report.json, manifest.json)")

    _guard(go)


@app.command()
def audit(
    run_dir: Path = typer.Argument(..., help="a run directory made by `edgeprune compress`"),
    data: str | None = typer.Option(None, "--data", "-d", help="the run's data spec (checked against the run)"),
    attacks: str = typer.Option("", help="comma-separated attack names, or 'all' (default: the run's recipe)"),
    shadows: int | None = typer.Option(None, help="shadow models through the same pipeline (nn, samia, diff, class-wise)"),
    references: int | None = typer.Option(None, help="reference models for lira / rmia (even numbers pair up)"),
    on: str = typer.Option("onnx", help="audit the exported ONNX artifacts (int8 numerics included) or the torch modules"),
):
    """Membership-inference audit of a run's dense and compressed models (table sorted by TPR@0.1%FPR)."""

    def go():
        from edgeprune import api
        from edgeprune.attack.tables import audit_table

        names = [a.strip() for a in attacks.split(",") if a.strip()] or None
        result = api.audit_run(run_dir, names, shadows, references, on, data,
                               log=lambda m: _console(stderr=True).print(m))
        con = _console()
        for table in audit_table(result):
            con.print(table)
        t = result["timing"]
        con.print(f"training attacker models {t['shadow_and_reference_training_s']:.1f}s, signals {t['signals_s']:.1f}s, "
                  f"attacks {t['attacks_s']:.1f}s; plots: {run_dir}/audit_roc.png, {run_dir}/audit_per_class.png")

    _guard(go)


@app.command()
def export(
    run_dir: Path = typer.Argument(..., help="a run directory made by `edgeprune compress`"),
    format: str = typer.Option("onnx", "--format", help="onnx | tensorrt (lint + engine where tensorrt imports, else the bundle)"),
    opset: int = typer.Option(20, help="ONNX opset"),
    dynamic_batch: bool = typer.Option(False, help="dynamic batch dimension (else fixed at --batch)"),
    batch: int = typer.Option(1, help="fixed batch size when not --dynamic-batch"),
    fp16: bool = typer.Option(False, "--fp16", help="also write an fp16 model"),
    int8: bool = typer.Option(False, "--int8", help="also write an int8 QDQ model (per-channel symmetric weights)"),
    activations: str | None = typer.Option(None, help="int8 activations: uint8 (CPU) or int8 (TensorRT; default for --format tensorrt)"),
    calibration: str = typer.Option("minmax", help="minmax | entropy | percentile"),
    block: int = typer.Option(32, help="block size for block-sparse Linear layers (custom op ai.edgeprune)"),
    dense: bool = typer.Option(False, "--dense", help="dense fallback only: no block-sparse custom ops"),
):
    """Export the compressed model to verified ONNX (fp32 / fp16 / int8 QDQ / block-sparse) or for TensorRT."""

    def go():
        from rich.table import Table

        from edgeprune import api

        res = api.export_run(run_dir, format, opset, dynamic_batch, batch, fp16, int8, activations, calibration,
                             block, dense, log=lambda m: _console(stderr=True).print(m))
        t = Table("file", "precision", "max rel err", "top-1 agree", "test acc")
        for name, info in res["files"].items():
            err = info.get("max_rel_err")
            agree = info.get("top1_agreement", info.get("top1_agreement_with_fp32"))
            t.add_row(name, info["precision"], "-" if err is None else f"{err:.2e}",
                      "-" if agree is None else f"{agree:.4f}", f"{info['test_accuracy']:.4f}")
        _console().print(t)
        for name, findings in res.get("lint", {}).items():
            for f in findings:
                _console().print(f"[{'red' if f['level'] == 'error' else 'yellow'}]{name}: {f['level']}: {f['message']}[/]")
        _console().print(f"written to {run_dir / 'export'}")

    _guard(go)


@app.command()
def bundle(
    run_dir: Path = typer.Argument(..., help="a run directory made by `edgeprune compress`"),
    out: Path = typer.Option(Path("bundle"), "--out", "-o", help="bundle directory"),
    precision: str = typer.Option("fp16,int8", help="comma-separated: fp32, fp16, int8"),
    batch: int = typer.Option(1, help="fixed batch size of the bundled models"),
    dynamic_batch: bool = typer.Option(False, help="dynamic batch (build_engine.sh then passes shape profiles)"),
):
    """Write a Jetson deployment bundle: ONNX, plugin sources, build_engine.sh, bench.sh, run_onnx.py, manifest."""

    def go():
        from edgeprune import api

        precisions = [p.strip() for p in precision.split(",") if p.strip()]
        path = api.bundle_run(run_dir, out, precisions, batch, dynamic_batch,
                              log=lambda m: _console(stderr=True).print(m))
        _console().print(f"bundle: {path}  (copy it to the device, then ./build_engine.sh && ./bench.sh)")

    _guard(go)


@app.command()
def attacks():
    """List the membership-inference attacks."""
    from rich.table import Table

    from edgeprune.attack.audit import ATTACKS

    t = Table("attack", "needs", "description")
    for name in ATTACKS.names():
        a = ATTACKS.get(name)
        t.add_row(name, ", ".join(sorted(a.needs)) or "-", a.doc)
    _console().print(t)


def _registry_table(registry, heading: str) -> None:
    from rich.table import Table

    t = Table(heading, "description")
    for name in registry.names():
        doc = (registry.get(name).__doc__ or "").strip().splitlines()
        t.add_row(name, doc[0] if doc else "")
    _console().print(t)


@app.command()
def models():
    """List the model zoo."""
    from edgeprune.models import MODELS

    _registry_table(MODELS, "model")


@app.command()
def datasets():
    """List the built-in data sets and readers."""
    from edgeprune.data import DATASETS

    _registry_table(DATASETS, "data")


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", help="print the version and exit", is_eager=True),
):
    if version:
        from edgeprune import __version__

        typer.echo(__version__)
        raise typer.Exit(0)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
