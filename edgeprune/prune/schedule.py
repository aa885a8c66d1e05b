"""Pruning schedules: one-shot, iterative (k steps with fine-tuning between), gradual (cubic sparsity ramp
during fine-tuning, Zhu & Gupta '17) and ADMM (Zhang et al. '18: a projection target Z updated every few
epochs with a dynamic quadratic penalty, then hard pruning and retraining).

Every schedule works on every method: structured steps physically shrink the model (Torch-Pruning), mask
methods (unstructured, 2:4, block) keep shapes and zero weights. The returned plan replays the result.
"""

from __future__ import annotations

import torch

from edgeprune.errors import ConfigError
from edgeprune.prune import masks as M
from edgeprune.prune import structured as S

METHODS = ("structured", "block", "2:4", "unstructured")
SCHEDULES = ("one-shot", "iterative", "gradual", "admm")
ALIASES = {"l1-structured": ("structured", "l1"), "l2-structured": ("structured", "l2")}


def resolve(method: str, criterion: str) -> tuple[str, str]:
    if method in ALIASES:
        return ALIASES[method]
    if method not in METHODS:
        raise ConfigError(f"unknown pruning method {method[:40]!r}; choose one of: {', '.join(METHODS + tuple(ALIASES))}")
    S.CRITERIA.get(criterion)
    return method, criterion


def cubic(step: int, total: int, final: float) -> float:
    """Zhu & Gupta's gradual schedule: s_t = s_f * (1 - (1 - t/T)^3)."""
    t = min(max(step, 0), total) / max(total, 1)
    return final * (1.0 - (1.0 - t) ** 3)


def compute_masks(model, method: str, sparsity: float, block: int, exclude) -> dict[str, torch.Tensor]:
    if method == "unstructured":
        return M.unstructured(model, sparsity, scope="global", exclude=exclude)
    if method == "2:4":
        return M.n_m(model, 2, 4, exclude=exclude)[0]
    if method == "block":
        return M.block(model, sparsity, size=block, exclude=exclude)[0]
    raise ValueError(method)


def _batches(x, y, n: int = 4, size: int = 64):
    return [(x[i : i + size], y[i : i + size]) for i in range(0, min(len(x), n * size), size)]


def run(model, in_shape, x, y, cfg, train_cfg, seed: int, exclude_output: bool = True,
        reference=None, runtime=None) -> tuple[dict, dict]:
    """Apply ``cfg`` (edgeprune.recipe.PruneConfig) to ``model`` in place, fine-tuning with ``train_cfg`` where
    the schedule interleaves training. ``reference``: the defender's held-out (x, y), for the leakage
    criterion; ``runtime``: where the interleaved training runs (edgeprune.engine.fit). Returns (plan, masks to
    keep during later fine-tuning)."""
    import dataclasses
    import functools

    from edgeprune.engine import fit

    train = functools.partial(fit, runtime=runtime)

    method, criterion = resolve(cfg.method, cfg.criterion)
    if cfg.schedule not in SCHEDULES:
        raise ConfigError(f"unknown schedule {cfg.schedule[:40]!r}; choose one of: {', '.join(SCHEDULES)}")
    exclude = list(cfg.exclude)
    if exclude_output and method != "structured":
        exclude += S.output_layers(model, in_shape)
    steps = max(1, cfg.steps)
    per_step = dataclasses.replace(train_cfg, epochs=max(1, train_cfg.epochs // steps))
    ops: list[dict] = []
    masks: dict[str, torch.Tensor] = {}
    if criterion == "leakage" and method != "structured":
        raise ConfigError("the leakage criterion scores channels: use it with method structured")
    ref = _batches(*reference, n=8, size=128) if reference is not None else None
    mb = _batches(x, y, n=8, size=128) if criterion == "leakage" else _batches(x, y)
    lw = {"leakage_weight": cfg.leakage_weight}

    if method == "structured":
        if cfg.schedule == "admm":
            _admm(model, x, y, train_cfg, seed, lambda: _structured_projection(model, in_shape, cfg, criterion, exclude),
                  runtime=runtime)
        if cfg.schedule in ("one-shot", "admm"):
            pruner = S.make_pruner(model, in_shape, cfg.sparsity, criterion, cfg.round_to, cfg.global_ranking, exclude,
                                   **lw)
            ops += S.prune_step(model, pruner, criterion, mb, ref)
        else:
            sched = None if cfg.schedule == "iterative" else (
                lambda ratio, n: [cubic(i, n, ratio) for i in range(n + 1)])
            pruner = S.make_pruner(model, in_shape, cfg.sparsity, criterion, cfg.round_to, cfg.global_ranking,
                                   exclude, steps=steps, schedule=sched, **lw)
            for i in range(steps):
                ops += S.prune_step(model, pruner, criterion, mb, ref)
                if i < steps - 1:
                    train(model, x, y, per_step, seed=seed + 100 + i, description=f"prune step {i + 1}/{steps}")
    else:
        if cfg.schedule == "one-shot":
            masks = compute_masks(model, method, cfg.sparsity, cfg.block, exclude)
        elif cfg.schedule in ("iterative", "gradual"):
            for i in range(1, steps + 1):
                s = cfg.sparsity * i / steps if cfg.schedule == "iterative" else cubic(i, steps, cfg.sparsity)
                masks = compute_masks(model, method, s, cfg.block, exclude) if method != "2:4" else \
                    compute_masks(model, method, cfg.sparsity, cfg.block, exclude)
                _apply(model, masks)
                if i < steps:
                    train(model, x, y, per_step, seed=seed + 100 + i, masks={k: v.float() for k, v in masks.items()},
                          description=f"prune step {i}/{steps}")
        else:  # admm
            _admm(model, x, y, train_cfg, seed, lambda: compute_masks(model, method, cfg.sparsity, cfg.block, exclude),
                  runtime=runtime)
            masks = compute_masks(model, method, cfg.sparsity, cfg.block, exclude)
        _apply(model, masks)
    plan = S.new_plan(method, criterion, cfg.sparsity, cfg.round_to, cfg.global_ranking, exclude, ops,
                      {k: M.encode(v) for k, v in masks.items()})
    plan["schedule"] = cfg.schedule
    plan["steps"] = steps
    return plan, {k: v.float() for k, v in masks.items()}


def _apply(model, masks) -> None:
    params = dict(model.named_parameters())
    with torch.no_grad():
        for k, m in masks.items():
            params[k].mul_(m.to(params[k].dtype))


def _structured_projection(model, in_shape, cfg, criterion, exclude) -> dict[str, torch.Tensor]:
    """ADMM's projection for structured pruning: zero (not remove) the channels a one-shot step would drop."""
    import copy

    probe = copy.deepcopy(model)
    with torch.enable_grad():  # the dependency graph is traced through autograd
        return _projection_masks(model, probe, in_shape, cfg, criterion, exclude)


def _projection_masks(model, probe, in_shape, cfg, criterion, exclude) -> dict[str, torch.Tensor]:
    crit = criterion if criterion not in ("taylor", "leakage") else "l1"  # the projection needs no data
    pruner = S.make_pruner(probe, in_shape, cfg.sparsity, crit, cfg.round_to, cfg.global_ranking, exclude)
    ops = S.prune_step(probe, pruner, crit)
    masks = {}
    params = dict(model.named_parameters())
    for op in ops:
        if op["fn"] != "prune_out_channels":
            continue
        name = f"{op['module']}.weight"
        if name in params and params[name].dim() >= 2:
            m = torch.ones_like(params[name])
            m[op["idxs"]] = 0
            masks[name] = m
    return masks


def _admm(model, x, y, train_cfg, seed: int, project, rho: float = 1e-3, rounds: int = 3, runtime=None) -> None:
    """ADMM rounds: minimise loss + rho/2 ||W - Z + U||^2, then Z = project(W + U), U += W - Z."""
    import dataclasses
    import functools

    from edgeprune.engine import fit

    train = functools.partial(fit, runtime=runtime)

    params = dict(model.named_parameters())
    masks = project()
    Z = {k: (params[k].detach() * m).clone() for k, m in masks.items()}
    U = {k: torch.zeros_like(v) for k, v in Z.items()}
    per_round = dataclasses.replace(train_cfg, epochs=max(1, train_cfg.epochs // rounds))

    def penalty(_model, _x, _y, _logits):
        dev = {k: params[k].device for k in Z}  # fit moved the model to its runtime's device
        return sum(0.5 * rho * (params[k] - Z[k].to(dev[k]) + U[k].to(dev[k])).pow(2).sum() for k in Z)

    for r in range(rounds):
        train(model, x, y, per_round, seed=seed + 200 + r, loss_terms=[penalty], description=f"admm round {r + 1}/{rounds}")
        with torch.no_grad():
            for k in Z:  # project W + U onto the sparse set with the masks the method picks for it
                params[k].add_(U[k])
            new_masks = project()
            for k in Z:
                params[k].sub_(U[k])
                m = new_masks.get(k, torch.ones_like(params[k]))
                Z[k] = ((params[k] + U[k]) * m).detach()
                U[k] = U[k] + params[k].detach() - Z[k]
        rho *= 1.5  # the dynamic part: the penalty tightens every round
