"""Model inversion at split points of a finished run (edgeprune.attack.inversion): the dense, pruned and
quantized variants, and the --split-noise defense."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from edgeprune.errors import ConfigError
from edgeprune.ops.split import feature_std
from edgeprune.stages.common import (
    INVERSION,
    PLAN,
    Context,
    load_dense,
    load_pruned,
    open_run,
    variants,
)


def _noisy_source(src, sigma: float, seed: int):
    from edgeprune.attack.inversion import FeatureSource

    rng = np.random.default_rng(seed)

    def features(x):
        f = src.features(x)
        return (f + sigma * rng.standard_normal(f.shape)).astype(np.float32)

    return FeatureSource(features, src.head, f"{src.numerics} + Gaussian noise of std {sigma:.4g} (--split-noise)")


def _inversion_sources(ctx: Context, run_dir: Path, models: dict, quantized: bool = True) -> dict:
    """FeatureSource per variant and split point name; ``models`` maps a variant to (torch model, its split
    points by name). Torch heads for dense / pruned (they match the exported fp32 ONNX to ~1e-7); for the
    quantized variant, the exported QDQ graph read at the split tensor."""
    import torch

    from edgeprune.attack.inversion import FeatureSource
    from edgeprune.export.split import locate_feature_tensor, onnx_features
    from edgeprune.models.splits import cut

    def torch_source(model, p):
        head, _ = cut(model, p)
        for q in head.parameters():
            q.requires_grad_(False)

        def features(x):
            with torch.no_grad():
                return np.concatenate([head(torch.from_numpy(np.ascontiguousarray(x[i:i + 512], np.float32))).numpy()
                                       for i in range(0, len(x), 512)])
        return FeatureSource(features, head, "torch fp32 (the exported fp32 ONNX matches it to ~1e-7)")

    out = {label: {name: torch_source(model, p) for name, p in points.items()}
           for label, (model, points) in models.items()}
    probe, _ = ctx.arrays("nonmembers", 64)
    for label, rel in variants(ctx)[2:] if quantized else []:  # the quantized artifact, at the split tensor
        out[label] = {}
        for name, ref in out["pruned"].items():
            tensor = locate_feature_tensor(run_dir / rel, probe, ref.features(probe))
            out[label][name] = FeatureSource(onnx_features(run_dir / rel, tensor), ref.head,
                                             f"{rel} at tensor {tensor!r} (onnxruntime, reference QDQ semantics); "
                                             "white-box: the pruned fp32 head")
    return out


def _noise_hook(model, point, sigma: float):
    """Gaussian noise of std ``sigma`` on the output of the split point's module (train and eval)."""
    import torch

    from edgeprune.errors import ConfigError

    names = [a for a in point.aliases if a in dict(model.named_modules())]
    if not names:
        raise ConfigError(f"--split-noise needs a split point at a module's output, not {point.name!r}")
    module = model.get_submodule(names[0])
    return module.register_forward_hook(lambda m, i, o: o + sigma * torch.randn_like(o))


def _split_noise_variant(ctx: Context, run_dir: Path, pruned, point, sigma_rel: float, seed: int) -> tuple:
    """The --split-noise defense at ``point``: the pruned model fine-tuned again (the recipe's fine-tuning,
    masks kept) with Gaussian noise on the split features, deployed with the same noise. The std is
    ``sigma_rel`` times the std of the pruned model's features on the members (the defender's data).
    Returns (model with the noise hook on, accuracy figures)."""
    import copy

    import torch

    from edgeprune.prune.structured import plan_masks
    from edgeprune.train import accuracy, predict_logits, train

    plan = json.loads((run_dir / PLAN).read_text())
    xm, ym = ctx.tensors("members")
    xn, yn = ctx.tensors("nonmembers")
    sigma = sigma_rel * feature_std(ctx, pruned, point)
    torch.manual_seed(seed)
    plain = copy.deepcopy(pruned)
    h = _noise_hook(plain, point, sigma)
    acc_noise_only = accuracy(predict_logits(plain, xn), yn)
    h.remove()
    model = load_pruned(ctx, run_dir)
    hook = _noise_hook(model, point, sigma)
    cfg = dataclasses.replace(ctx.recipe.finetune)
    train(model, xm, ym, cfg, seed=seed, description=f"fine-tune with split noise at {point.name}",
          masks=plan_masks(plan) or None)
    model.eval()
    torch.manual_seed(seed + 1)
    acc = accuracy(predict_logits(model, xn), yn)
    hook.remove()  # the returned model is clean; the inversion sources add the noise to its head's features
    return model, {"split_point": point.name, "sigma_relative": sigma_rel, "sigma": sigma,
                   "test_accuracy_pruned": accuracy(predict_logits(pruned, xn), yn),
                   "test_accuracy_noise_without_finetuning": acc_noise_only,
                   "test_accuracy_noise_finetuned": acc,
                   "finetune_epochs": cfg.epochs}


def inversion_audit(run_dir: str | Path, attacks: list[str] | None = None, layers: list[str] | None = None,
                    split_noise: float = 0.0, plan=None, log=print) -> dict:
    """Model inversion at split points of a finished run, for the dense, pruned and quantized variants (and,
    with ``split_noise``, the noise-defended split deployment); writes inversion.json and one picture grid
    per split point into the run."""

    from edgeprune.attack.audit import pick_candidates
    from edgeprune.attack.base import names_of_kind
    from edgeprune.attack.inversion import InversionPlan, grid_plot, run_inversion
    from edgeprune.models.splits import resolve
    from edgeprune.run import RunUpdate

    plan = plan or InversionPlan(seed=0)
    attacks = attacks or ["inversion"]
    bad = [a for a in attacks if a not in names_of_kind("inversion", None)]
    if bad:
        raise ConfigError(f"{bad[0]!r} is not an inversion attack; choose from {', '.join(names_of_kind('inversion'))}")
    if split_noise < 0:
        raise ConfigError(f"--split-noise must be >= 0, got {split_noise}")
    manifest, ctx = open_run(run_dir)
    run_dir = Path(run_dir)
    plan = dataclasses.replace(plan, attacks=attacks, layers=list(layers or []), seed=ctx.recipe.seed)
    dense, pruned = load_dense(ctx, run_dir), load_pruned(ctx, run_dir)
    points = resolve(dense, ctx.ds.in_shape, plan.layers)
    pruned_points = {p.name: resolve(pruned, ctx.ds.in_shape, [p.name])[0] for p in points}  # fewer channels
    noise = {}
    if split_noise > 0:
        if len(points) != 1:
            raise ConfigError("--split-noise defends one split point: pass exactly one --layer")
        noise["pruned+noise"] = _split_noise_variant(ctx, run_dir, pruned, pruned_points[points[0].name], split_noise,
                                                     ctx.recipe.seed + 7)
    models = {"dense": (dense, {p.name: p for p in points}), "pruned": (pruned, pruned_points)}
    sources = _inversion_sources(ctx, run_dir, models)
    for label, (model, info) in noise.items():  # the defended deployment: its head's features + the noise
        clean = _inversion_sources(ctx, run_dir, {label: (model, pruned_points)}, quantized=False)[label]
        sources[label] = {name: _noisy_source(src, info["sigma"], plan.seed + 99) for name, src in clean.items()}
    cand = pick_candidates(ctx.split, plan.samples, plan.seed)
    rng = np.random.default_rng(plan.seed + 41)
    pool = ctx.split.pool
    pool = np.sort(rng.choice(pool, min(plan.pool, pool.size), replace=False)) if pool.size else pool
    if pool.size < 10:
        raise ConfigError("the inversion attacker needs its own data: the split left no attacker pool")

    def judge(x):
        import torch

        with torch.no_grad():
            return dense(torch.from_numpy(np.ascontiguousarray(x, np.float32))).numpy()

    from edgeprune.runtime import of_recipe

    result, pictures = run_inversion(ctx.ds.x[pool], ctx.ds.x[cand.idx], ctx.ds.y[cand.idx], cand.is_member,
                                     sources, points, judge, ctx.ds.preprocessing, plan, log=log,
                                     runtime=of_recipe(ctx.recipe))
    result["judge"] = "the run's dense model (fp32)"
    if noise:
        result["split_noise"] = next(iter(noise.values()))[1]
    with RunUpdate(run_dir) as run:  # locked, never moved: the new files are swapped in at the end
        grids = {}
        if ctx.ds.x.ndim == 4:
            for p in points:
                rel = f"inversion/{p.name}.png"
                grid_plot(pictures[p.name], run.tmp_path(rel), title=f"inversion from the features at {p.name} "
                                                                       f"{tuple(p.shape)}")
                run.commit(rel)
                grids[p.name] = rel
        result["grids"] = grids
        run.write_json(INVERSION, result)
        run.manifest["inversion"] = {"file": INVERSION, "layers": [p.name for p in points], "attacks": attacks,
                                     "grids": grids}
    log(f"inversion audit written to {run_dir / INVERSION}")
    return result
