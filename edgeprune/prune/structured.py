"""Structured channel pruning that physically shrinks layers, recorded as a replayable plan."""

from __future__ import annotations

import math

import torch
from torch import nn

from edgeprune.errors import ConfigError, UserError
from edgeprune.prune.graph import ChannelGroup, find_groups
from edgeprune.prune.importance import IMPORTANCE

PLAN_VERSION = 1


def channels_to_keep(n: int, sparsity: float, round_to: int) -> int:
    """Channels left after removing ``sparsity`` of ``n``, rounded up to a multiple of ``round_to``."""
    keep = max(1, round(n * (1.0 - sparsity)))
    if round_to > 1 and n >= round_to:
        keep = min(n, int(math.ceil(keep / round_to) * round_to))
    return keep


def make_plan(
    model: nn.Module,
    in_shape: tuple[int, ...],
    sparsity: float,
    criterion: str = "l1",
    round_to: int = 8,
    method: str = "l1-structured",
) -> dict:
    """Rank channels per group (layer-wise) and keep the most important ones."""
    if not 0.0 < sparsity < 1.0:
        raise ConfigError(f"sparsity must be in (0, 1), got {sparsity}")
    score = IMPORTANCE.get(criterion)
    report = find_groups(model, in_shape)
    if not report.groups:
        raise UserError(f"{type(model).__name__} has no channel group that structured pruning can shrink")
    groups = []
    for g in report.groups:
        scores = score(model, g)
        keep = channels_to_keep(g.channels, sparsity, round_to)
        # stable ordering: highest score first, ties by index, then stored sorted
        order = sorted(range(g.channels), key=lambda i: (-float(scores[i]), i))
        kept = sorted(order[:keep])
        groups.append({**g.to_json(), "kept": kept})
    return {
        "version": PLAN_VERSION,
        "method": method,
        "criterion": criterion,
        "sparsity": sparsity,
        "round_to": round_to,
        "groups": groups,
        "skipped": report.skipped,
    }


def _slice_param(module: nn.Module, name: str, idx: torch.Tensor, dim: int) -> None:
    p = getattr(module, name)
    if p is None:
        return
    new = p.detach().index_select(dim, idx).clone()
    if isinstance(p, nn.Parameter):
        setattr(module, name, nn.Parameter(new, requires_grad=p.requires_grad))
    else:
        module.register_buffer(name, new)


def _prune_out(m: nn.Module, idx: torch.Tensor) -> None:
    _slice_param(m, "weight", idx, 0)
    _slice_param(m, "bias", idx, 0)
    if isinstance(m, nn.Linear):
        m.out_features = len(idx)
    else:
        m.out_channels = len(idx)


def _prune_norm(m: nn.Module, idx: torch.Tensor) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        _slice_param(m, name, idx, 0)
    m.num_features = len(idx)


def _prune_depthwise(m: nn.Conv2d, idx: torch.Tensor) -> None:
    _slice_param(m, "weight", idx, 0)
    _slice_param(m, "bias", idx, 0)
    m.in_channels = m.out_channels = m.groups = len(idx)


def _prune_in(m: nn.Module, idx: torch.Tensor) -> None:
    _slice_param(m, "weight", idx, 1)
    if isinstance(m, nn.Linear):
        m.in_features = len(idx)
    else:
        m.in_channels = len(idx)


def apply_plan(model: nn.Module, plan: dict) -> nn.Module:
    """Shrink ``model`` in place as ``plan`` says. The model must be the unpruned architecture."""
    if plan.get("version") != PLAN_VERSION:
        raise UserError(f"plan version {plan.get('version')!r} is not supported (expected {PLAN_VERSION})")
    for g in plan["groups"]:
        group = ChannelGroup(**{k: g[k] for k in ChannelGroup.__dataclass_fields__})
        try:
            prod = model.get_submodule(group.producer)
        except AttributeError:
            raise UserError(f"plan names layer {group.producer!r}, which this model does not have") from None
        current = prod.out_features if isinstance(prod, nn.Linear) else prod.out_channels
        if current != group.channels:
            raise UserError(f"plan expects {group.channels} channels in {group.producer!r}, model has {current}")
        kept = torch.tensor(g["kept"], dtype=torch.long)
        if kept.numel() == 0 or int(kept.max()) >= group.channels or int(kept.min()) < 0:
            raise UserError(f"plan keeps invalid channel indices in {group.producer!r}")
        _prune_out(prod, kept)
        for name in group.norms:
            _prune_norm(model.get_submodule(name), kept)
        for name in group.depthwise:
            _prune_depthwise(model.get_submodule(name), kept)
        f = group.flatten_factor
        cons_idx = (kept[:, None] * f + torch.arange(f)[None, :]).reshape(-1) if f > 1 else kept
        _prune_in(model.get_submodule(group.consumer), cons_idx)
    return model
