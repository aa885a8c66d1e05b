"""What the stages and the operations on a finished run share: the Context (data, split, architecture),
the run's file names, and loading the run's models back."""

from __future__ import annotations

import contextlib
import contextvars
import json
from pathlib import Path

import numpy as np

from edgeprune.errors import ConfigError, RunDirError
from edgeprune.recipe import Recipe

DENSE_WEIGHTS = "dense/model.safetensors"
DENSE_ONNX = "dense/model.onnx"
PRUNED_WEIGHTS = "pruned/model.safetensors"  # right after the pruning schedule, before fine-tuning
TEACHER_WEIGHTS = "dense/teacher.safetensors"  # undefended dense model (defense scope train/both + dmp/distill-reg)
REWIND_WEIGHTS = "dense/rewind.safetensors"  # the dense weights prune.rewind retrains the pruned model from
PLAN = "plan.json"
WEIGHTS = "model.safetensors"
ONNX = "model.onnx"
INT8_ONNX = "model.int8.onnx"
MIXED_ONNX = "model.mixed.onnx"
INVERSION = "inversion.json"  # edgeprune.ops.inversion
SPLIT_DIR = "split"  # edgeprune.ops.split


class Context:
    """What every stage needs: the data, the split and how to build the architecture."""

    def __init__(self, recipe: Recipe):
        import torch

        from edgeprune.data import load_dataset, make_split
        from edgeprune.models import build_model, check_fits, load_weights
        from edgeprune.runtime import resolve

        recipe.validate()  # every value and name, before any work
        self.recipe = recipe
        self.runtime = resolve(recipe.runtime.device, recipe.runtime.amp)  # where every model of the run trains
        self.ds = load_dataset(recipe.data)
        torch.manual_seed(recipe.seed)  # the initial weights are part of "same seed, same numbers"
        model = build_model(recipe.model, self.ds.in_shape, self.ds.num_classes)
        check_fits(model, self.ds.in_shape, self.ds.num_classes, name=f"model {recipe.model!r}")
        if recipe.weights:
            self.init_state = {k: v.detach().clone() for k, v in model.state_dict().items()}  # rewind: init
            load_weights(model, recipe.weights)
        if recipe.prune.plan:  # a replayed plan must fit this model before the dense model trains
            import copy

            from edgeprune.prune.structured import apply_plan, read_plan

            pruned = apply_plan(copy.deepcopy(model), read_plan(recipe.prune.plan))
            check_fits(pruned, self.ds.in_shape, self.ds.num_classes, name=f"plan {recipe.prune.plan!r} on {recipe.model!r}")
        self.initial = model
        self.split = make_split(self.ds, recipe.seed, recipe.split.member_fraction, recipe.split.max_members)
        if self.split.members.size < 10:
            raise ConfigError(f"only {self.split.members.size} members after the split; use more data")
        self.x = torch.from_numpy(self.ds.x)
        self.y = torch.from_numpy(self.ds.y)

    def tensors(self, part: str):
        idx = getattr(self.split, part)
        return self.x[idx], self.y[idx]

    def arrays(self, part: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        idx = getattr(self.split, part)
        if limit is not None and idx.size > limit:
            idx = np.sort(np.random.default_rng(self.recipe.seed).choice(idx, limit, replace=False))
        return self.ds.x[idx], self.ds.y[idx]

    def reference(self):
        """The defender's reference data: a seeded subset of the pool (never a member or an audited
        non-member), for the defenses, the leakage criterion and mixed precision."""
        from edgeprune.pipeline import split_reference

        x, y = self.tensors("pool")
        return split_reference(x, y, self.recipe.defense.reference_samples, self.recipe.seed + 5)

    def fresh_model(self):
        return self.builder()()

    def builder(self):
        from edgeprune.models import Builder

        return Builder(self.recipe.model, tuple(self.ds.in_shape), self.ds.num_classes)

    def model_info(self) -> dict:
        return {"spec": self.recipe.model, "in_shape": list(self.ds.in_shape), "num_classes": self.ds.num_classes}


def state_bytes(model) -> bytes:
    from safetensors.torch import save

    return save({k: v.detach().contiguous().clone() for k, v in model.state_dict().items()})


def load_state(model, path: Path):
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(path)))
    return model.eval()


def load_dense(ctx: Context, run_dir: Path):
    return load_state(ctx.fresh_model(), run_dir / DENSE_WEIGHTS)


def load_teacher(ctx: Context, run_dir: Path):
    """The undefended dense model: the teacher of dmp / distill-reg (see edgeprune.pipeline.teacher_of)."""
    path = Path(run_dir) / TEACHER_WEIGHTS
    return load_state(ctx.fresh_model(), path) if path.is_file() else load_dense(ctx, run_dir)


def load_pruned(ctx: Context, run_dir: Path):
    from edgeprune.prune.structured import apply_plan

    plan = json.loads((run_dir / PLAN).read_text())
    return load_state(apply_plan(ctx.fresh_model(), plan), run_dir / WEIGHTS)


def quant_file(ctx: Context) -> str | None:
    """The run's quantized ONNX file (None without quantization)."""
    return {"int8": INT8_ONNX, "mixed": MIXED_ONNX}.get(ctx.recipe.quant.mode)


def variants(ctx: Context) -> list[tuple[str, str]]:
    """(label, run-relative ONNX file) of every exported variant: dense, pruned and the quantized one."""
    from edgeprune.pipeline import quant_variant

    out = [("dense", DENSE_ONNX), ("pruned", ONNX)]
    if quant_file(ctx):
        out.append((quant_variant(ctx.recipe), quant_file(ctx)))
    return out


_TRUST: contextvars.ContextVar[tuple[bool, frozenset]] = contextvars.ContextVar("edgeprune_trust_code",
                                                                                  default=(False, frozenset()))


@contextlib.contextmanager
def trust_code(models: list[str] | tuple[str, ...] = (), everything: bool = False):
    """Within the block, a finished run whose recipe names code (a ``pkg.module:factory`` model) may build it
    when the spec is one of ``models`` (the user named it) or ``everything`` (``--trust-code``). A run
    directory is data: without this, its manifest cannot make edgeprune import and call code."""
    token = _TRUST.set((everything, frozenset(m for m in models if m)))
    try:
        yield
    finally:
        _TRUST.reset(token)


def check_model_trusted(run_dir: str | Path, spec: str) -> None:
    """Refuse (one line) to build a run's ``pkg.module:factory`` model the user has not named or trusted."""
    everything, named = _TRUST.get()
    if ":" not in spec or everything or spec in named:
        return
    raise ConfigError(f"{run_dir} names code as its model ({spec[:200]!r}); edgeprune imports and calls it only when "
                      f"you name it (--model {spec[:200]}) or pass --trust-code")


def open_run(run_dir: str | Path):
    """A finished run's manifest and its Context: the manifest's recipe checked against its hash, a model
    that is code built only when trusted (``trust_code``), the files that rebuild its models checked first."""
    from edgeprune.recipe import from_dict
    from edgeprune.run import check_recipe, read_manifest, verify_artifact

    manifest = read_manifest(run_dir)
    if not manifest.get("complete"):
        raise RunDirError(f"{run_dir} is not a finished run")
    recipe = check_recipe(run_dir, manifest)
    check_model_trusted(run_dir, str(recipe.get("model", "")))
    for rel in (PLAN, WEIGHTS, DENSE_WEIGHTS):  # what rebuilding the models reads
        verify_artifact(run_dir, manifest, rel)
    ctx = Context(from_dict(Recipe, recipe))
    if ctx.split.hash() != manifest["split"]["hash"]:
        raise RunDirError(f"the data behind {run_dir} changed (split hash differs)")
    return manifest, ctx
