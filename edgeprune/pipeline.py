"""The compression pipeline as plain functions, shared by the target run and by the attacker's
shadow / reference models (which must go through exactly the same steps: an adaptive attacker)."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgeprune.recipe import Recipe

Reference = tuple[torch.Tensor, torch.Tensor] | None  # the defender's held-out data (never audited)


def make_defense(recipe: Recipe, reference: Reference, teacher: nn.Module | None, seed: int, phase: str = "finetune"):
    """The recipe's defense for ``phase`` (train | finetune), or None where its scope leaves that phase out."""
    from edgeprune.defend import build

    if not defended(recipe, phase):
        return None
    defense = build(recipe.defense, reference=reference, teacher=teacher, seed=seed, data=recipe.data)
    defense.phase = phase
    return defense


def defended(recipe: Recipe, phase: str) -> bool:
    return recipe.defense.name != "none" and recipe.defense.scope in (phase, "both")


def _validation(cfg, reference: Reference) -> Reference:
    return reference if cfg.early_stopping else None


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@dataclass
class Dense:
    """What training the dense model produced beside its weights."""

    history: list[float]
    defense: dict | None = None  # the defense's report when the scope covers training
    teacher: nn.Module | None = None  # undefended model on the same data, when a defended one needs a teacher
    rewind: dict[str, torch.Tensor] | None = None  # the weights ``prune.rewind`` names


def teacher_of(dense: nn.Module, trained: Dense | None) -> nn.Module:
    """The teacher of dmp / distill-reg: the undefended model trained on the members (the dense model itself
    unless the defense's scope covered its training)."""
    return trained.teacher if trained is not None and trained.teacher is not None else dense


def dense_phase(model: nn.Module, x: torch.Tensor, y: torch.Tensor, recipe: Recipe, seed: int, desc="train dense",
                reference: Reference = None):
    """Train the dense model in place: with the recipe's defense when its scope covers training (a defense
    that needs a teacher first gets an undefended copy trained on the same data), keeping the weights
    ``prune.rewind`` asks for. A phase generator (edgeprune.engine): yields its training requests, returns Dense."""
    import copy

    from edgeprune.defend import needs
    from edgeprune.engine import FitRequest
    from edgeprune.errors import ConfigError
    from edgeprune.recipe import parse_rewind

    kind, k = parse_rewind(recipe.prune.rewind)
    snap: dict = {}
    if kind == "epoch" and k == 0:
        snap["state"] = _state(model)

    def keep(epoch: int, m: nn.Module) -> None:
        if kind == "epoch" and epoch == k:
            snap["state"] = _state(m)

    out = Dense(history=[])
    teacher = None
    if defended(recipe, "train") and "teacher" in needs(recipe.defense.name):
        teacher = copy.deepcopy(model)
        yield FitRequest(teacher, x, y, recipe.train, seed, phase="teacher training", description=f"{desc} (teacher)",
                         validation=_validation(recipe.train, reference))
        out.teacher = teacher.eval()
    defense = make_defense(recipe, reference, teacher, seed, phase="train")
    out.history = yield FitRequest(model, x, y, recipe.train, seed, phase="dense training", description=desc,
                                   defense=defense, validation=_validation(recipe.train, reference),
                                   on_epoch=keep if kind == "epoch" else None)
    out.defense = defense.info() if defense is not None else None
    if kind == "epoch":
        if "state" not in snap:
            raise ConfigError(f"prune rewind {recipe.prune.rewind}: training stopped early after "
                              f"{len(out.history)} epochs")
        out.rewind = snap["state"]
    return out


def train_dense(model: nn.Module, x: torch.Tensor, y: torch.Tensor, recipe: Recipe, seed: int, desc="train dense",
                reference: Reference = None, runtime=None) -> Dense:
    """``dense_phase`` trained on ``runtime`` (the stages' call)."""
    from edgeprune.engine import run

    return run(dense_phase(model, x, y, recipe, seed, desc, reference), runtime)


def rewound(make_model, state: dict[str, torch.Tensor], plan: dict) -> nn.Module:
    """The pruned architecture of ``plan`` carrying the rewound dense weights (kept channels, masks applied)."""
    from edgeprune.prune.structured import apply_plan

    model = make_model()
    model.load_state_dict(state)
    return apply_plan(model, plan)


def plan_for(model: nn.Module, in_shape, recipe: Recipe, x: torch.Tensor, y: torch.Tensor, seed: int,
             reference: Reference = None, runtime=None):
    """Prune ``model`` in place with the recipe's method and schedule; returns (plan, masks). The global RNG
    is seeded first, so the decisions (criterion random) do not depend on what ran before."""
    from edgeprune.prune import schedule

    torch.manual_seed(seed)
    return schedule.run(model, in_shape, x, y, recipe.prune, recipe.finetune, seed, reference=reference,
                        runtime=runtime)


def finetune_phase(pruned: nn.Module, x: torch.Tensor, y: torch.Tensor, recipe: Recipe, seed: int, desc="fine-tune",
                   masks=None, reference: Reference = None, teacher: nn.Module | None = None):
    """Fine-tune (or, after a rewind, retrain) with the recipe's defense where its scope covers fine-tuning; a
    phase generator returning (loss history, what the defense reports)."""
    from edgeprune.defend.base import NoDefense
    from edgeprune.engine import FitRequest

    defense = make_defense(recipe, reference, teacher, seed) or NoDefense(None, None)
    history = yield FitRequest(pruned, x, y, recipe.finetune, seed, phase="fine-tuning", description=desc,
                               masks=masks or None, defense=defense, validation=_validation(recipe.finetune, reference))
    return history, defense.info()


def finetune(pruned: nn.Module, x: torch.Tensor, y: torch.Tensor, recipe: Recipe, seed: int, desc="fine-tune",
             masks=None, reference: Reference = None, teacher: nn.Module | None = None,
             runtime=None) -> tuple[list[float], dict]:
    """``finetune_phase`` trained on ``runtime`` (the stages' call)."""
    from edgeprune.engine import run

    return run(finetune_phase(pruned, x, y, recipe, seed, desc, masks, reference, teacher), runtime)


class ExportCache:
    """The fp32 ONNX export (the slow part of quantizing a small model) once per pruned shape within one
    attacker task: a model's graph is exported directly for the first two models of a shape; if swapping the
    second model's weights into the first graph reproduces its direct export byte for byte, later models of
    that shape reuse the graph with their own weights; otherwise every model is exported."""

    def __init__(self, where: Path):
        self.where = Path(where)
        self.shapes: dict[tuple, list] = {}  # shape -> [template path, reusable (None: not yet known)]
        self.count = 0
        self.reused = 0

    def export(self, model: nn.Module, in_shape, dst: Path, opset: int) -> Path:
        import onnx

        from edgeprune.engine import shape_signature
        from edgeprune.export.onnx import export_onnx

        sig = shape_signature(model)
        entry = self.shapes.get(sig)
        if entry is not None and entry[1]:
            onnx.save(_with_weights(onnx.load(str(entry[0])), model), str(dst))
            self.reused += 1
            return dst
        self.count += 1
        path = export_onnx(model, in_shape, self.where / f"export{self.count}.onnx", opset=opset)
        if entry is None:
            self.shapes[sig] = [path, None]
        elif entry[1] is None:
            swapped = _with_weights(onnx.load(str(entry[0])), model).SerializeToString()
            entry[1] = swapped == onnx.load(str(path)).SerializeToString()
        return path


def _with_weights(template, model: nn.Module):
    """A copy of ``template`` whose initializers named like ``model``'s state tensors hold its values."""
    import copy

    from onnx import numpy_helper

    out = copy.deepcopy(template)
    state = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    for init in out.graph.initializer:
        if init.name in state and tuple(init.dims) == state[init.name].shape:
            init.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(state[init.name]).astype(
                numpy_helper.to_array(init).dtype), init.name))
    return out


def quantize_phase(model: nn.Module, in_shape, calibration: np.ndarray, recipe: Recipe, dst: Path,
                   x: torch.Tensor | None = None, y: torch.Tensor | None = None, reference: Reference = None,
                   teacher: nn.Module | None = None, masks=None, seed: int = 0, exports: ExportCache | None = None):
    """Quantize ``model`` to QDQ ONNX at ``dst``: int8, or mixed 8/4-bit weights chosen against leakage;
    with ``quant.qat_epochs`` > 0 first fine-tune with fake-quant weights (and the recipe's defense) on
    (x, y). ``model`` is not changed. ``exports``: an attacker task's shared fp32 exports (ExportCache). A
    phase generator (QAT yields its training) returning (path, what was done)."""
    import copy

    from edgeprune.errors import ConfigError
    from edgeprune.export.onnx import export_onnx
    from edgeprune.quant.ptq import quantize_int8
    from edgeprune.quant.qat import qat_phase, quant_layers

    cfg = recipe.quant
    model = copy.deepcopy(model).eval()
    bits = {n: 8 for n in quant_layers(model)}
    settings = int8_settings(recipe)
    info: dict = {"mode": cfg.mode, "int8": settings}
    if cfg.mode == "mixed":
        from edgeprune.quant.mixed import choose_bits

        if x is None or reference is None:
            raise ConfigError("mixed precision needs member and reference data")
        choice = choose_bits(model, (x, y), reference, cfg.target_bits, cfg.max_acc_drop)
        bits = choice["bits"]
        info["mixed"] = choice
    if cfg.qat_epochs > 0:
        import dataclasses

        if x is None:
            raise ConfigError("QAT needs training data")
        from edgeprune.defend.base import NoDefense

        defense = make_defense(recipe, reference, teacher, seed + 5) or NoDefense(None, None)
        defense.from_scratch = False  # QAT continues the protected model (DMP must not re-initialise it)
        qat_cfg = dataclasses.replace(recipe.finetune, epochs=cfg.qat_epochs)
        yield from qat_phase(model, x, y, qat_cfg, bits, seed + 5, masks=masks, defense=defense,
                             validation=_validation(qat_cfg, reference))  # early stopping on the reference data
        info["qat"] = {"epochs": cfg.qat_epochs, "defense": defense.info()}
    with tempfile.TemporaryDirectory() as tmp:
        src = (exports.export(model, in_shape, Path(tmp) / "fp32.onnx", recipe.export.opset) if exports is not None
               else export_onnx(model, in_shape, Path(tmp) / "fp32.onnx", opset=recipe.export.opset))
        weight_bits = {f"{n}.weight": b for n, b in bits.items()} if cfg.mode == "mixed" else None
        path = quantize_int8(src, dst, calibration, activations=settings["activations"], method=cfg.calibration,
                             weight_bits=weight_bits, reduce_range=settings["reduce_range"])
    info["weight_bits"] = {n: b for n, b in bits.items()}
    return path, info


def quantize_model(model: nn.Module, in_shape, calibration: np.ndarray, recipe: Recipe, dst: Path,
                   x: torch.Tensor | None = None, y: torch.Tensor | None = None, reference: Reference = None,
                   teacher: nn.Module | None = None, masks=None, seed: int = 0, runtime=None) -> tuple[Path, dict]:
    """``quantize_phase`` with its QAT trained on ``runtime`` (the stages' call)."""
    from edgeprune.engine import run

    return run(quantize_phase(model, in_shape, calibration, recipe, dst, x, y, reference, teacher, masks, seed),
               runtime)


def int8_settings(recipe: Recipe) -> dict:
    """The run's quantized artifact is for onnxruntime on a CPU (the bench stage times it there)."""
    from edgeprune.quant.targets import TARGETS

    return TARGETS.get("ort-cpu").settings(recipe.quant.activations, recipe.quant.reduce_range)


def quant_variant(recipe: Recipe) -> str | None:
    """The label of the quantized variant a recipe produces (None without quantization)."""
    return {"int8": "pruned+int8", "mixed": "pruned+mixed"}.get(recipe.quant.mode)


def reference_positions(total: int, n: int, seed: int) -> np.ndarray:
    """Which of ``total`` samples (positions) ``split_reference`` picks: the audit keeps its evaluation
    samples disjoint from them."""
    if n <= 0 or total == 0:
        return np.array([], dtype=np.int64)
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(total, generator=g)[:n].sort().values.numpy()


def split_reference(x: torch.Tensor, y: torch.Tensor, n: int, seed: int) -> Reference:
    """A seeded subset of at most ``n`` samples, used as the defender's reference data."""
    idx = reference_positions(len(x), n, seed)
    if idx.size == 0:
        return None
    idx = torch.from_numpy(idx)
    return x[idx], y[idx]


def calibration_set(x: np.ndarray, n: int, seed: int) -> np.ndarray:
    if len(x) <= n:
        return x
    return x[np.sort(np.random.default_rng(seed).choice(len(x), n, replace=False))]


@dataclass
class PipelineModels:
    """Every variant one pass of the pipeline produces, keyed like the run's variants."""

    models: dict[str, nn.Module] = field(default_factory=dict)  # dense, pruned
    onnx: dict[str, Path] = field(default_factory=dict)  # pruned+int8 / pruned+mixed


def model_pipeline(make_model, in_shape, x: torch.Tensor, y: torch.Tensor, recipe: Recipe, seed: int, workdir: Path,
                   tag: str, dense_only: bool = False, reference: Reference = None, runtime=None,
                   exports: ExportCache | None = None):
    """The whole pipeline for one fresh model on (x, y), as one phase generator: the very phase functions the
    stages call, with the stages' seeds (dense ``seed``, pruning and fine-tuning ``seed + 1``), so a model
    trained on the target's members with the target's seed and reference data is the target, bit for bit."""
    torch.manual_seed(seed)  # the initial weights, as Context draws the target's
    dense = make_model()
    trained = yield from dense_phase(dense, x, y, recipe, seed, desc=f"{tag} dense", reference=reference)
    if dense_only:
        return PipelineModels(models={"dense": dense.eval()})
    pruned = make_model()
    pruned.load_state_dict(dense.state_dict())
    plan, masks = plan_for(pruned, in_shape, recipe, x, y, seed + 1, reference=reference, runtime=runtime)
    if trained.rewind is not None:
        pruned = rewound(make_model, trained.rewind, plan)
    teacher = teacher_of(dense, trained)
    yield from finetune_phase(pruned, x, y, recipe, seed + 1, desc=f"{tag} fine-tune", masks=masks,
                              reference=reference, teacher=teacher)
    out = PipelineModels(models={"dense": dense.eval(), "pruned": pruned.eval()})
    label = quant_variant(recipe)
    if label:
        calib = calibration_set(x.numpy(), recipe.quant.calibration_samples, seed)
        out.onnx[label], _ = yield from quantize_phase(pruned, in_shape, calib, recipe, workdir / f"{tag}.q.onnx", x, y,
                                                       reference, teacher, masks, seed + 1, exports)
    return out


def run_pipeline(
    make_model, in_shape, x: torch.Tensor, y: torch.Tensor, recipe: Recipe, seed: int, workdir: Path, tag: str,
    dense_only: bool = False, reference: Reference = None, runtime=None,
) -> PipelineModels:
    """Train, prune, fine-tune (and quantize) a fresh model on (x, y): what an attacker's shadow goes through,
    with ``reference`` standing in for the defender's reference data."""
    from edgeprune.engine import run

    return run(model_pipeline(make_model, in_shape, x, y, recipe, seed, workdir, tag, dense_only, reference, runtime),
               runtime)


@dataclass
class Member:
    """One attacker model's inputs to the pipeline."""

    x: torch.Tensor
    y: torch.Tensor
    seed: int
    tag: str
    reference: Reference = None


def run_pipelines(make_model, in_shape, members: list[Member], recipe: Recipe, workdir: Path, dense_only: bool = False,
                  runtime=None, batch_training: str = "auto"):
    """``model_pipeline`` for every member, in lockstep: each model through the same phase functions, only the
    training steps batched (``edgeprune.engine.run_many``) where ``batched_on(device, batch_training)`` and the
    recipe's features allow. Returns (PipelineModels in member order, EnsembleReport)."""
    from edgeprune.engine import EnsembleReport, batched_on, run_many
    from edgeprune.runtime import Runtime

    runtime = runtime or Runtime.cpu()
    report = EnsembleReport()
    exports = ExportCache(Path(workdir) / "fp32-exports")
    exports.where.mkdir(parents=True, exist_ok=True)
    phases = [model_pipeline(make_model, in_shape, m.x, m.y, recipe, m.seed, workdir, m.tag, dense_only, m.reference,
                             runtime, exports) for m in members]
    outs = run_many(phases, runtime, batched_on(runtime.device, batch_training), report)
    if exports.count:
        report.add("quantization", f"{len(members)} models: {exports.count} ONNX export(s), "
                                   f"{exports.reused} reused graph(s)")
    return outs, report
