"""The typed, versioned recipe: one source of defaults, YAML/JSON in and out, unknown keys are errors."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgeprune.errors import ConfigError

RECIPE_VERSION = 1


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

    def to_dict(self) -> dict:
        return asdict(self)

    def hash(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    def validate(self) -> Recipe:
        if not 0.0 < self.prune.sparsity < 1.0:
            raise ConfigError(f"sparsity must be in (0, 1), got {self.prune.sparsity}")
        if self.prune.round_to < 1:
            raise ConfigError(f"round_to must be >= 1, got {self.prune.round_to}")
        for name, t in (("train", self.train), ("finetune", self.finetune)):
            if t.epochs < 0 or t.batch_size < 1 or t.lr <= 0:
                raise ConfigError(f"{name}: epochs must be >= 0, batch_size >= 1 and lr > 0")
            if t.optimizer not in ("adam", "sgd"):
                raise ConfigError(f"{name}.optimizer must be adam or sgd, got {t.optimizer!r}")
            if t.schedule not in ("cosine", "constant"):
                raise ConfigError(f"{name}.schedule must be cosine or constant, got {t.schedule!r}")
            if not 0.0 <= t.label_smoothing < 1.0 or t.early_stopping < 0 or t.weight_decay < 0:
                raise ConfigError(f"{name}: label_smoothing must be in [0, 1), early_stopping and weight_decay >= 0")
            if t.augment not in ("none", "crop-flip"):
                raise ConfigError(f"{name}.augment must be none or crop-flip, got {t.augment!r}")
        self._validate_scope()
        if self.quant.mode not in ("int8", "mixed", "none"):
            raise ConfigError(f"quant mode must be int8, mixed or none, got {self.quant.mode!r}")
        if not 4.0 <= self.quant.target_bits <= 8.0:
            raise ConfigError(f"quant target_bits must be in [4, 8], got {self.quant.target_bits}")
        if self.quant.qat_epochs < 0:
            raise ConfigError(f"quant qat_epochs must be >= 0, got {self.quant.qat_epochs}")
        if self.quant.mode == "none" and self.quant.qat_epochs:
            raise ConfigError("quant qat_epochs needs a quantized mode (int8 or mixed)")
        from edgeprune.defend import check_config

        check_config(self.defense)
        if self.quant.activations not in ("uint8", "int8"):
            raise ConfigError(f"quant activations must be uint8 or int8, got {self.quant.activations!r}")
        if self.quant.calibration not in ("minmax", "entropy", "percentile"):
            raise ConfigError(f"calibration must be minmax, entropy or percentile, got {self.quant.calibration!r}")
        if self.audit.shadows < 0 or self.audit.references < 0:
            raise ConfigError("audit shadows and references must be >= 0")
        if self.audit.references == 1:
            raise ConfigError("audit references must be 0 or at least 2 (LiRA needs IN and OUT references)")
        if not self.bench.batches or any(b < 1 for b in self.bench.batches):
            raise ConfigError(f"bench batches must be positive, got {self.bench.batches}")
        if self.version != RECIPE_VERSION:
            raise ConfigError(f"recipe version {self.version} is not supported (this edgeprune reads {RECIPE_VERSION})")
        return self


    def _validate_scope(self) -> None:
        if self.defense.scope not in SCOPES:
            raise ConfigError(f"defense scope must be one of {', '.join(SCOPES)}, got {self.defense.scope!r}")
        kind, k = parse_rewind(self.prune.rewind)
        if kind == "epoch" and k > self.train.epochs:
            raise ConfigError(f"prune rewind epoch:{k} is past the dense training's {self.train.epochs} epochs")
        if self.weights and (kind == "epoch" and k > 0 or self.defense.scope != "finetune"
                             and self.defense.name != "none"):
            raise ConfigError("rewind to a training epoch and defense scope train / both need the dense model "
                              "trained here, not loaded weights")


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
    raise ConfigError(f"prune rewind must be none, init or epoch:K (K a whole number), got {spec!r}")


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
            raise ConfigError(f"{where} must be a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and (not isinstance(value, tp) or (tp is int and isinstance(value, bool))):
        raise ConfigError(f"{where} must be {tp.__name__}, got {value!r}")
    return value


def from_dict(cls, data, where: str = "recipe"):
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown key(s) in {where}: {', '.join(unknown)} (allowed: {', '.join(sorted(names))})")
    kwargs = {k: _convert(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def load_recipe(path: str | Path) -> Recipe:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"recipe {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    return from_dict(Recipe, data).validate()


def dump_recipe(recipe: Recipe) -> str:
    import yaml

    return yaml.safe_dump(recipe.to_dict(), sort_keys=False)
