"""The typed, versioned recipe: one source of defaults, YAML/JSON in and out, unknown keys are errors."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgeprune.errors import ConfigError

RECIPE_VERSION = 1
OPSET_RANGE = (18, 23)  # torch's dynamo exporter writes 18+ natively; onnxruntime / TensorRT read up to 23
BLOCK_SIZES = (4, 8, 16, 32, 64)  # 16 / 32 / 64 for real use, 4 and 8 for tests
MAX_RECIPE_BYTES = 1 << 20
MAX_BOOTSTRAP = 2000
MAX_ATTACK_MODELS = 256  # shadow or reference models: each is a full training run


def short(value, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters: messages never print unbounded user values."""
    if isinstance(value, (list, tuple, dict, set)) and len(value) > 20:
        text = f"{type(value).__name__} of {len(value)} items"
    else:
        try:
            text = repr(value)
        except ValueError:  # an int too long to print
            text = f"<a {type(value).__name__} too long to print>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class TrainConfig:
    epochs: int = 40
    batch_size: int = 128
    optimizer: str = "adam"  # adam | sgd
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    schedule: str = "cosine"  # cosine | constant
    label_smoothing: float = 0.0  # cross-entropy label smoothing (0 = off)
    early_stopping: int = 0  # patience in epochs on the defender's reference data (0 = off); best epoch kept
    augment: str = "none"  # none | crop-flip (images: random 4-pixel-padded crop + horizontal flip)


@dataclass
class SplitConfig:
    member_fraction: float = 0.25  # members and non-members each; the attacker pool gets the rest
    max_members: int | None = None


@dataclass
class PruneConfig:
    method: str = "structured"  # structured | block | 2:4 | unstructured (l1-/l2-structured: aliases)
    criterion: str = "l1"  # l1 | l2 | bn-scale | taylor | random (structured)
    sparsity: float = 0.5  # fraction of channels (structured), weights (unstructured) or blocks removed
    schedule: str = "one-shot"  # one-shot | iterative | gradual | admm
    steps: int = 3  # iterative / gradual steps
    round_to: int = 8  # kept channels are a multiple of this
    block: int = 32  # block size for method=block
    global_ranking: bool = False  # rank channels across layers instead of per layer
    exclude: list[str] = field(default_factory=list)  # module-name globs never pruned (the classifier always is)
    plan: str | None = None  # replay this plan.json instead of computing one
    leakage_weight: float = 1.0  # criterion=leakage: weight of the memorisation score against task importance
    rewind: str = "none"  # none | init | epoch:K: retrain the pruned architecture from these dense weights


@dataclass
class QuantConfig:
    mode: str = "int8"  # int8 | mixed (per-layer 8/4-bit weights chosen against leakage) | none
    activations: str = "uint8"  # uint8 | int8 (weights are always symmetric int8 per channel)
    # 7-bit weights for onnxruntime on CPUs whose U8S8 kernels saturate; None = auto from this CPU's features
    # (x86 without VNNI / AMX), true / false force it (see edgeprune.quant.targets)
    reduce_range: bool | None = None
    calibration: str = "minmax"  # minmax | entropy | percentile
    calibration_samples: int = 256
    qat_epochs: int = 0  # fake-quant fine-tuning epochs before export (with the recipe's defense)
    target_bits: float = 6.0  # mixed: average weight bits to reach (8 = all int8, 4 = all int4)
    max_acc_drop: float = 0.01  # mixed: a layer goes to 4 bits only if held-out accuracy falls at most this much


@dataclass
class DefenseConfig:
    name: str = "none"  # none | kl | advreg | relaxloss | dpsgd | dmp | distill-reg (see `edgeprune defenses`)
    strength: float | None = None  # the defense's own strength parameter; None = its default
    reference_samples: int = 2000  # defender's reference data (from outside members and non-members)
    max_grad_norm: float = 1.0  # dpsgd: per-sample clipping norm
    delta: float | None = None  # dpsgd: target delta (default 1 / members)
    temperature: float = 4.0  # dmp / distill-reg: softmax temperature
    # dmp: weight of the cross-entropy on the reference samples' own labels, beside the teacher's soft labels
    # (Hinton et al.'s distillation with ground truth; the defender's data, no member in it). 0 = DMP as
    # published (soft labels only); 1 = the reference data alone, no teacher: what the teacher adds.
    # Other defenses ignore it (as they ignore temperature)
    hard_labels: float = 0.0
    scope: str = "finetune"  # finetune | train (the dense model's training) | both
    upper: float | None = None  # relaxloss: confidence clamp; None = the data set's published default


@dataclass
class ExportConfig:
    opset: int = 20
    rtol: float = 1e-3  # max |onnx - torch| / max |torch| allowed
    verify_samples: int = 256
    max_int8_drop: float = 0.05  # int8 test accuracy may fall at most this far below fp32


@dataclass
class AuditConfig:
    attacks: list[str] = field(default_factory=lambda: ["loss", "confidence"])  # or ["all"]
    shadows: int = 0  # shadow models (same pipeline as the target) for nn / samia / class-wise / diff
    references: int = 0  # reference models for lira / rmia
    max_samples: int = 5000  # candidates per side (members / non-members)
    population: int = 2000  # pool samples for RMIA
    bootstrap: int = 200  # resamples for the 95% confidence intervals
    threat: str = "adaptive"  # adaptive | non-adaptive | both (attacker models with / without the defense)
    seeds: int = 1  # trained targets whose figures are averaged (the run's own + seeds - 1 retrained)


BATCH_TRAINING = ("auto", "batched", "one-by-one")


@dataclass
class ExecConfig:
    executor: str = "local"  # local | process | ray (see edgeprune.executor)
    ray_address: str | None = None  # ray: None starts a local instance, "auto" joins a running cluster, or HOST:PORT
    workers: int = 0  # process: pool size; ray without an address: CPUs of the local instance (0 = all cores)
    task_cpus: int = 1  # CPUs each task declares (torch threads in process / Ray workers)
    task_gpus: float | None = None  # GPUs each Ray task declares (None: 1 where the cluster has GPUs, else 0)
    ensemble: int = 8  # attacker models trained together as one batched ensemble per task (1 = one by one)
    # how an ensemble's training steps run: "batched" (vmap over the stacked members), "one-by-one" (each member
    # its own loop; the task still shares the ONNX export), "auto": batched on a GPU, one by one on a CPU, where
    # benchmarks/audit_scale.py measured batched MLP training slower than one by one (compute-bound matmuls)
    batch_training: str = "auto"


@dataclass
class RuntimeConfig:
    device: str = "auto"  # auto (a GPU where CUDA exists, else the CPU) | cpu | cuda | cuda:N
    amp: bool = False  # bf16 autocast on a GPU (ignored on the CPU)


@dataclass
class BenchConfig:
    batches: list[int] = field(default_factory=lambda: [1, 32])
    threads: int = 1  # onnxruntime intra-op threads; 0 lets onnxruntime choose
    warmup_s: float = 0.2
    duration_s: float = 1.0
    min_runs: int = 20


@dataclass
class Recipe:
    model: str = "mlp"
    data: str = "purchase-synth"
    weights: str | None = None
    seed: int = 0
    version: int = RECIPE_VERSION
    split: SplitConfig = field(default_factory=SplitConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    finetune: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=10, lr=5e-4))
    defense: DefenseConfig = field(default_factory=DefenseConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    exec: ExecConfig = field(default_factory=ExecConfig)  # where the work runs (not part of cache keys)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)  # the device every model trains on

    def to_dict(self) -> dict:
        return asdict(self)

    def hash(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    def validate(self, names: bool = True) -> Recipe:
        """Check every value before any work starts; with ``names`` also the model, data set, pruning
        method / criterion / schedule, defense and attack names and the plan file against their registries."""
        if self.version != RECIPE_VERSION:
            raise ConfigError(f"recipe version {short(self.version)} is not supported (this edgeprune reads {RECIPE_VERSION})")
        _check_types(self)
        if not 0 <= self.seed < 2**32:
            raise ConfigError(f"seed must be in [0, 2^32), got {short(self.seed)}")
        for key in ("model", "data"):
            if not getattr(self, key).strip():
                raise ConfigError(f"{key} must not be empty")
        if not 0.0 < self.split.member_fraction <= 0.5:
            raise ConfigError(f"split.member_fraction must be in (0, 0.5], got {self.split.member_fraction}")
        if self.split.max_members is not None and self.split.max_members < 10:
            raise ConfigError(f"split.max_members must be at least 10, got {short(self.split.max_members)}")
        if not 0.0 < self.prune.sparsity < 1.0:
            raise ConfigError(f"sparsity must be in (0, 1), got {self.prune.sparsity}")
        if self.prune.round_to < 1:
            raise ConfigError(f"round_to must be >= 1, got {self.prune.round_to}")
        if self.prune.steps < 1:
            raise ConfigError(f"prune.steps must be >= 1, got {self.prune.steps}")
        if self.prune.block not in BLOCK_SIZES:
            raise ConfigError(f"block size must be 16, 32 or 64 (4 and 8 for tests), got {short(self.prune.block)}")
        if self.prune.leakage_weight < 0:
            raise ConfigError(f"prune.leakage_weight must be >= 0, got {self.prune.leakage_weight}")
        for name, t in (("train", self.train), ("finetune", self.finetune)):
            if t.epochs < 0 or t.batch_size < 1 or t.lr <= 0:
                raise ConfigError(f"{name}: epochs must be >= 0, batch_size >= 1 and lr > 0")
            if t.weight_decay < 0 or not 0 <= t.momentum < 1:
                raise ConfigError(f"{name}: weight_decay must be >= 0 and momentum in [0, 1)")
            if t.optimizer not in ("adam", "sgd"):
                raise ConfigError(f"{name}.optimizer must be adam or sgd, got {short(t.optimizer)}")
            if t.schedule not in ("cosine", "constant"):
                raise ConfigError(f"{name}.schedule must be cosine or constant, got {short(t.schedule)}")
            if not 0.0 <= t.label_smoothing < 1.0 or t.early_stopping < 0 or t.weight_decay < 0:
                raise ConfigError(f"{name}: label_smoothing must be in [0, 1), early_stopping and weight_decay >= 0")
            if t.augment not in ("none", "crop-flip"):
                raise ConfigError(f"{name}.augment must be none or crop-flip, got {short(t.augment)}")
        self._validate_scope()
        if self.quant.mode not in ("int8", "mixed", "none"):
            raise ConfigError(f"quant mode must be int8, mixed or none, got {short(self.quant.mode)}")
        if not 4.0 <= self.quant.target_bits <= 8.0:
            raise ConfigError(f"quant target_bits must be in [4, 8], got {self.quant.target_bits}")
        if self.quant.qat_epochs < 0:
            raise ConfigError(f"quant qat_epochs must be >= 0, got {self.quant.qat_epochs}")
        if self.quant.mode == "none" and self.quant.qat_epochs:
            raise ConfigError("quant qat_epochs needs a quantized mode (int8 or mixed)")
        from edgeprune.defend import check_config

        check_config(self.defense)
        if self.quant.activations not in ("uint8", "int8"):
            raise ConfigError(f"quant activations must be uint8 or int8, got {short(self.quant.activations)}")
        if self.quant.calibration not in ("minmax", "entropy", "percentile"):
            raise ConfigError(f"calibration must be minmax, entropy or percentile, got {short(self.quant.calibration)}")
        if self.quant.calibration_samples < 1 or not 0 <= self.quant.max_acc_drop <= 1:
            raise ConfigError("quant calibration_samples must be >= 1 and max_acc_drop in [0, 1]")
        lo, hi = OPSET_RANGE
        if not lo <= self.export.opset <= hi:
            raise ConfigError(f"export.opset must be between {lo} and {hi}, got {short(self.export.opset)}")
        if self.export.rtol <= 0 or self.export.verify_samples < 1 or not 0 <= self.export.max_int8_drop <= 1:
            raise ConfigError("export rtol must be > 0, verify_samples >= 1 and max_int8_drop in [0, 1]")
        if self.audit.shadows < 0 or self.audit.references < 0:
            raise ConfigError("audit shadows and references must be >= 0")
        if self.audit.references == 1:
            raise ConfigError("audit references must be 0 or at least 2 (LiRA needs IN and OUT references)")
        for key in ("max_samples", "population", "bootstrap"):
            if getattr(self.audit, key) < 1:
                raise ConfigError(f"audit.{key} must be >= 1, got {short(getattr(self.audit, key))}")
        if self.audit.bootstrap > MAX_BOOTSTRAP:  # the resampling weights are bootstrap x candidates floats
            raise ConfigError(f"audit.bootstrap must be at most {MAX_BOOTSTRAP}, got {short(self.audit.bootstrap)}")
        if max(self.audit.shadows, self.audit.references) > MAX_ATTACK_MODELS:
            raise ConfigError(f"audit shadows and references must be at most {MAX_ATTACK_MODELS} each")
        if not self.bench.batches or any(not 1 <= b <= 65536 for b in self.bench.batches):
            raise ConfigError(f"bench batches must be in [1, 65536], got {short(self.bench.batches)}")
        if not 0 <= self.bench.threads <= 1024:
            raise ConfigError(f"bench.threads must be in [0, 1024] (0 lets onnxruntime choose), got {short(self.bench.threads)}")
        if self.bench.warmup_s < 0 or self.bench.duration_s <= 0 or self.bench.min_runs < 1:
            raise ConfigError("bench warmup_s must be >= 0, duration_s > 0 and min_runs >= 1")
        if self.audit.threat not in ("adaptive", "non-adaptive", "both") or self.audit.seeds < 1:
            raise ConfigError(f"audit threat must be adaptive, non-adaptive or both and seeds >= 1, got "
                              f"{short(self.audit.threat)} and {short(self.audit.seeds)}")
        if self.version != RECIPE_VERSION:
            raise ConfigError(f"recipe version {short(self.version)} is not supported (this edgeprune reads {RECIPE_VERSION})")
        from edgeprune.executor import EXECUTORS

        EXECUTORS.get(self.exec.executor)
        if self.exec.workers < 0 or self.exec.task_cpus < 1 or self.exec.ensemble < 1:
            raise ConfigError("exec: workers must be >= 0, task_cpus and ensemble >= 1")
        if self.exec.batch_training not in BATCH_TRAINING:
            raise ConfigError(f"exec batch_training must be one of {', '.join(BATCH_TRAINING)}, "
                              f"got {short(self.exec.batch_training)}")
        if self.exec.task_gpus is not None and self.exec.task_gpus < 0:
            raise ConfigError(f"exec task_gpus must be >= 0, got {short(self.exec.task_gpus)}")
        from edgeprune.runtime import check_device

        check_device(self.runtime.device)
        if names:
            self._check_names()
        return self

    def _check_names(self) -> None:
        """Registry names and the plan file (imports the registries, so torch for the pruning ones)."""
        from edgeprune.data import DATASETS
        from edgeprune.models.registry import MODELS
        from edgeprune.prune.schedule import SCHEDULES, resolve

        if ":" not in self.model:
            MODELS.get(self.model)
        DATASETS.get(self.data.partition(":")[0])
        method, criterion = resolve(self.prune.method, self.prune.criterion)
        if self.prune.schedule not in SCHEDULES:
            raise ConfigError(f"unknown schedule {short(self.prune.schedule)}; choose one of: {', '.join(SCHEDULES)}")
        if criterion == "leakage" and method != "structured":
            raise ConfigError("the leakage criterion scores channels: use it with method structured")
        from edgeprune.attack.audit import resolve_attacks

        resolve_attacks(self.audit.attacks)
        if self.prune.plan:
            from edgeprune.prune.structured import read_plan

            read_plan(self.prune.plan)

    def _validate_scope(self) -> None:
        if self.defense.scope not in SCOPES:
            raise ConfigError(f"defense scope must be one of {', '.join(SCOPES)}, got {short(self.defense.scope)}")
        kind, k = parse_rewind(self.prune.rewind)
        if kind == "epoch" and k > self.train.epochs:
            raise ConfigError(f"prune rewind epoch:{k} is past the dense training's {self.train.epochs} epochs")
        if self.weights and (kind == "epoch" and k > 0 or self.defense.scope != "finetune"
                             and self.defense.name != "none"):
            raise ConfigError("rewind to a training epoch and defense scope train / both need the dense model "
                              "trained here, not loaded weights")


def _check_types(obj, where: str = "recipe") -> None:
    """Every field has its declared type and every number is finite (CLI overrides skip ``from_dict``)."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value, here = getattr(obj, f.name), f"{where}.{f.name}"
        if dataclasses.is_dataclass(value):
            _check_types(value, here)
            continue
        _convert(hints[f.name], value, here)


SCOPES = ("finetune", "train", "both")


def parse_rewind(spec: str) -> tuple[str, int]:
    """'none' -> ('none', 0); 'init' -> ('epoch', 0); 'epoch:3' -> ('epoch', 3)."""
    if spec == "none":
        return "none", 0
    if spec == "init":
        return "epoch", 0
    head, _, k = spec.partition(":")
    if head == "epoch" and k.isdigit():
        return "epoch", int(k)
    raise ConfigError(f"prune rewind must be none, init or epoch:K (K a whole number), got {short(spec)}")


def _convert(tp, value, where: str):
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, where)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list, got {short(value)}")
        (item,) = typing.get_args(tp)
        return [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        if abs(value) > 1e300:
            raise ConfigError(f"{where} must be a finite number, got {short(value)}")
        return float(value)
    if tp in (int, float, str, bool) and (not isinstance(value, tp) or (tp in (int, float) and isinstance(value, bool))):
        raise ConfigError(f"{where} must be {tp.__name__}, got {short(value)}")
    if tp is float and not math.isfinite(value):
        raise ConfigError(f"{where} must be a finite number, got {value}")
    return value


def from_dict(cls, data, where: str = "recipe"):
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(short(k, 40) for k in data if k not in names)
    if unknown:
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise ConfigError(f"unknown key(s) in {where}: {', '.join(unknown[:5])}{more} "
                          f"(allowed: {', '.join(sorted(names))})")
    kwargs = {k: _convert(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def _loader():
    import yaml

    class NoAliasLoader(yaml.SafeLoader):
        """safe_load without anchors and aliases: a recipe has no use for them, and an alias bomb
        (nested aliases expanding to billions of nodes) would exhaust memory."""

        def compose_node(self, parent, index):
            event = self.peek_event()
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
                mark = event.start_mark
                raise ConfigError(f"recipe line {mark.line + 1}: YAML anchors and aliases (&name, *name) "
                                  "are not allowed in recipes")
            return super().compose_node(parent, index)

    return NoAliasLoader


def load_recipe(path: str | Path) -> Recipe:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe file not found: {path}")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read recipe {path}: {e.strerror}") from None
    if len(raw) > MAX_RECIPE_BYTES:
        raise ConfigError(f"recipe {path} is {len(raw):,} bytes; recipes are at most {MAX_RECIPE_BYTES:,}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"recipe {path} is not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start})") from None
    try:
        data = yaml.load(text, Loader=_loader())
    except yaml.YAMLError as e:
        raise ConfigError(f"recipe {path} is not valid YAML: {short(str(e).splitlines()[0], 200)}") from None
    except RecursionError:
        raise ConfigError(f"recipe {path} nests too deeply") from None
    except ValueError as e:  # e.g. an integer of more than 4300 digits
        raise ConfigError(f"recipe {path} holds a value edgeprune cannot read: {short(str(e), 120)}") from None
    return from_dict(Recipe, {} if data is None else data).validate()


def dump_recipe(recipe: Recipe) -> str:
    import yaml

    return yaml.safe_dump(recipe.to_dict(), sort_keys=False)
