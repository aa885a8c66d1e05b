"""Structured channel pruning that physically shrinks the model, recorded as a replayable plan.

Dependencies come from Torch-Pruning's DepGraph (one traced forward): channels coupled through residual
adds, concatenations, depthwise / grouped convs, BatchNorm and Linear-after-flatten are removed together.
The plan records every module-level pruning call (module name, function, indices) in order, so the pruned
model is rebuilt from the original architecture + plan.json + safetensors without pickles.
Custom layers plug in with ``register_pruner(ModuleClass, pruning_function_object)``.
"""

from __future__ import annotations

import fnmatch

import torch
from torch import nn

from edgeprune.errors import ConfigError, UserError
from edgeprune.registry import Registry

PLAN_VERSION = 2
CRITERIA: Registry = Registry("importance criterion")
CUSTOM_PRUNERS: dict[type, object] = {}


def register_pruner(module_type: type, pruner) -> None:
    """Teach the engine a custom layer: ``pruner`` is a torch_pruning BasePruningFunc instance."""
    CUSTOM_PRUNERS[module_type] = pruner


def _tp():
    import torch_pruning as tp

    return tp


CRITERIA.register("l1")(lambda tp: tp.importance.GroupMagnitudeImportance(p=1))
CRITERIA.register("l2")(lambda tp: tp.importance.GroupMagnitudeImportance(p=2))
CRITERIA.register("bn-scale")(lambda tp: tp.importance.BNScaleImportance())
CRITERIA.register("taylor")(lambda tp: tp.importance.GroupTaylorImportance())
CRITERIA.register("random")(lambda tp: tp.importance.RandomImportance())


@CRITERIA.register("leakage")
def _leakage(tp, beta: float = 1.0):
    from edgeprune.prune.leakage import LeakageImportance

    return LeakageImportance(beta)


def channels_to_keep(n: int, sparsity: float, round_to: int) -> int:
    """Channels a layer of ``n`` keeps: ``int(n * (1 - sparsity))`` (the engine's arithmetic), rounded down to a
    multiple of ``round_to`` but never below ``round_to``; a layer narrower than ``round_to`` cannot be
    rounded and stays whole. The engine's pruner is ``_RoundingPruner`` below, which holds to this."""
    keep = int(n * (1 - sparsity))
    if round_to > 1:
        keep = n if n < round_to else max(round_to, keep - keep % round_to)
    return max(1, keep)


def _rounding_pruner(tp):
    class _RoundingPruner(tp.pruner.MetaPruner):
        """Torch-Pruning's MetaPruner with ``round_to`` clamped at ``round_to`` kept channels. The engine rounds
        the kept channels down to a multiple, so a layer asked to keep fewer than ``round_to`` (16 channels at
        sparsity 0.8 keep 3) rounded to zero, the engine refused to remove every channel and left the layer
        whole: at 0.8, LeNet-5's conv2 and ResNet-20's first two stages stayed dense (wider than at 0.5)."""

        def _round_to(self, n_pruned, current_channels, round_to):
            if current_channels < round_to:
                return 0
            keep = current_channels - n_pruned
            return current_channels - max(round_to, keep - keep % round_to)

    return _RoundingPruner


def output_layers(model: nn.Module, in_shape) -> list[str]:
    """Layers whose output tensor is the model's output (the classifier): never pruned on their outputs."""
    seen: dict[int, str] = {}
    hooks = [m.register_forward_hook(lambda mod, i, o, name=name: seen.__setitem__(id(o), name))
             for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(2, *in_shape))
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    return [seen[id(out)]] if id(out) in seen else []


def _ignored(model: nn.Module, in_shape, exclude: list[str]) -> list[nn.Module]:
    names = set(output_layers(model, in_shape))
    for name, _ in model.named_modules():
        if name and any(fnmatch.fnmatch(name, pat) for pat in exclude):
            names.add(name)
    return [model.get_submodule(n) for n in names]


def make_pruner(model: nn.Module, in_shape, sparsity: float, criterion: str = "l1", round_to: int = 8,
                global_ranking: bool = False, exclude: list[str] = (), max_ratio: float = 0.95, steps: int = 1,
                schedule=None, leakage_weight: float = 1.0):
    tp = _tp()
    if not 0.0 < sparsity < 1.0:
        raise ConfigError(f"sparsity must be in (0, 1), got {sparsity}")
    imp = CRITERIA.get(criterion)(tp, leakage_weight) if criterion == "leakage" else CRITERIA.get(criterion)(tp)
    kwargs = {}
    if schedule is not None:
        kwargs["iterative_pruning_ratio_scheduler"] = schedule
    try:
        return _rounding_pruner(tp)(
            model, torch.zeros(1, *in_shape), importance=imp, pruning_ratio=sparsity, global_pruning=global_ranking,
            round_to=round_to if round_to > 1 else None, ignored_layers=_ignored(model, in_shape, list(exclude)),
            max_pruning_ratio=max_ratio, iterative_steps=steps, customized_pruners=dict(CUSTOM_PRUNERS) or None,
            **kwargs,
        )
    except Exception as e:
        raise UserError(f"cannot build the dependency graph of {type(model).__name__}: {type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''}") from None


def _taylor_gradients(model: nn.Module, batches) -> None:
    import torch.nn.functional as F

    model.zero_grad()
    model.eval()
    for x, y in batches:
        F.cross_entropy(model(x), y).backward()


def prune_step(model: nn.Module, pruner, criterion: str, batches=None, reference=None) -> list[dict]:
    """One pruning step in place; returns the module-level calls it made (appended to the plan).
    ``reference``: held-out batches (the leakage criterion compares them with the member ``batches``)."""
    if criterion == "leakage":
        if not batches or not reference:
            raise ConfigError("the leakage criterion needs member batches and held-out reference data")
        pruner.importance.prepare(model, batches, reference)
    if criterion == "taylor":
        if not batches:
            raise ConfigError("the taylor criterion needs a few batches of data")
        _taylor_gradients(model, batches)
    names = {m: n for n, m in model.named_modules()}
    ops = []
    for group in pruner.step(interactive=True):
        for item in group:
            module = item.dep.target.module
            if module in names:
                ops.append({"module": names[module], "fn": item.dep.handler.__name__,
                            "idxs": sorted(int(i) for i in item.idxs)})
        group.prune()
    if criterion == "taylor":
        model.zero_grad(set_to_none=True)
    return ops


def make_plan(model: nn.Module, in_shape, sparsity: float, criterion: str = "l1", round_to: int = 8,
              method: str = "structured", global_ranking: bool = False, exclude: list[str] = (),
              batches=None) -> dict:
    """Prune a copy-free ``model`` in place (one shot) and return the plan that reproduces it."""
    pruner = make_pruner(model, in_shape, sparsity, criterion, round_to, global_ranking, exclude)
    ops = prune_step(model, pruner, criterion, batches)
    return new_plan(method, criterion, sparsity, round_to, global_ranking, exclude, ops)


def new_plan(method, criterion, sparsity, round_to, global_ranking, exclude, ops, masks=None) -> dict:
    return {"version": PLAN_VERSION, "method": method, "criterion": criterion, "sparsity": sparsity,
            "round_to": round_to, "global_ranking": global_ranking, "exclude": list(exclude),
            "ops": ops, "masks": masks or {}}


def _function_for(module: nn.Module):
    tp = _tp()
    for cls, pr in CUSTOM_PRUNERS.items():
        if isinstance(module, cls):
            return pr
    return tp.pruner.function.PrunerBox.get(tp.ops.module2type(module))


def read_plan(path) -> dict:
    """Read a plan.json and check its layout (not yet against a model: ``apply_plan`` does that)."""
    import base64
    import binascii
    import json
    from pathlib import Path

    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"plan file not found: {path}")
    try:
        plan = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ConfigError(f"plan {path} is not valid JSON: {str(e).splitlines()[0][:120]}") from None
    except OSError as e:
        raise ConfigError(f"cannot read plan {path}: {e.strerror}") from None
    if not isinstance(plan, dict):
        raise ConfigError(f"plan {path} must be a JSON object, got a {type(plan).__name__}")
    if plan.get("version") != PLAN_VERSION:
        raise ConfigError(f"plan {path}: version {str(plan.get('version'))[:20]} is not supported (expected {PLAN_VERSION})")
    ops, masks = plan.get("ops", []), plan.get("masks", {})
    if not isinstance(ops, list) or not isinstance(masks, dict):
        raise ConfigError(f"plan {path}: 'ops' must be a list and 'masks' an object")
    for i, op in enumerate(ops):
        ok = (isinstance(op, dict) and isinstance(op.get("module"), str) and op.get("fn") in (
              "prune_out_channels", "prune_in_channels") and isinstance(op.get("idxs"), list)
              and all(isinstance(j, int) and not isinstance(j, bool) and j >= 0 for j in op["idxs"])
              and len(set(op["idxs"])) == len(op["idxs"]))
        if not ok:
            raise ConfigError(f"plan {path}: ops[{i}] must be {{module, fn: prune_out_channels | prune_in_channels, "
                              f"idxs: distinct channel indices >= 0}}")
    for name, enc in masks.items():
        try:
            shape = enc["shape"]
            assert isinstance(shape, list) and shape and all(isinstance(d, int) and 0 < d < 2**31 for d in shape)
            n = 1
            for d in shape:
                n *= d
            bits = base64.b64decode(enc["bits"], validate=True)
            assert len(bits) * 8 >= n
        except (AssertionError, KeyError, TypeError, binascii.Error):
            raise ConfigError(f"plan {path}: the mask for {name[:60]!r} is not a valid {{shape, bits}} encoding") from None
    return plan


def apply_plan(model: nn.Module, plan: dict) -> nn.Module:
    """Replay ``plan`` on the unpruned architecture (structure first, then weight masks)."""
    from edgeprune.prune.masks import decode

    if plan.get("version") != PLAN_VERSION:
        raise UserError(f"plan version {str(plan.get('version'))[:20]} is not supported (expected {PLAN_VERSION})")
    for op in plan.get("ops", []):
        try:
            module = model.get_submodule(op["module"])
        except AttributeError:
            raise UserError(f"plan names layer {op['module'][:80]!r}, which this model does not have") from None
        fn = _function_for(module)
        if fn is None or op["fn"] not in ("prune_out_channels", "prune_in_channels"):
            raise UserError(f"plan step {str(op['fn'])[:40]} on {op['module'][:80]!r} ({type(module).__name__}) "
                            "has no pruning function")
        # Torch-Pruning silently ignores indices past the end: check them against the layer's channels
        size = fn.get_out_channels(module) if op["fn"] == "prune_out_channels" else fn.get_in_channels(module)
        idxs = op["idxs"]
        if size is not None and (any(not 0 <= j < size for j in idxs) or len(set(idxs)) >= size):
            raise UserError(f"plan step {op['fn']} on {op['module'][:80]!r} removes channels "
                            f"{str(sorted(idxs))[:60]} of a layer that has {size}")
        getattr(fn, op["fn"])(module, idxs)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, enc in plan.get("masks", {}).items():
            if name not in params:
                raise UserError(f"plan has a mask for {name[:80]!r}, which this model does not have")
            mask = decode(enc)
            if tuple(mask.shape) != tuple(params[name].shape):
                raise UserError(f"plan mask for {name!r} has shape {tuple(mask.shape)}, weight is {tuple(params[name].shape)}")
            params[name].mul_(mask.to(params[name].dtype))
    return model


def plan_masks(plan: dict) -> dict[str, torch.Tensor]:
    from edgeprune.prune.masks import decode

    return {name: decode(enc).float() for name, enc in plan.get("masks", {}).items()}


def inspect_groups(model: nn.Module, in_shape) -> tuple[list[dict], dict[str, str]]:
    """The dependency groups the engine would prune, and the layers it leaves alone with the reason."""
    tp = _tp()
    names = {m: n for n, m in model.named_modules()}
    ignored = _ignored(model, in_shape, [])
    try:
        dg = tp.DependencyGraph().build_dependency(model, example_inputs=torch.zeros(1, *in_shape),
                                                   customized_pruners=dict(CUSTOM_PRUNERS) or None)
    except Exception as e:
        raise UserError(f"cannot build the dependency graph of {type(model).__name__}: {e}") from None
    groups = []
    for g in dg.get_all_groups(ignored_layers=ignored, root_module_types=[nn.Conv2d, nn.Linear]):
        root = g[0].dep.target.module
        coupled = sorted({names[i.dep.target.module] for i in g if i.dep.target.module in names} - {names[root]})
        groups.append({"root": names[root], "channels": len(g[0].idxs), "coupled": coupled})
    unhandled = {names[m]: "its outputs are the model's outputs (classes)" for m in ignored}
    for name, m in model.named_modules():
        if not name or m in ignored or not list(m.parameters(recurse=False)):
            continue
        if _function_for(m) is None:
            unhandled[name] = f"no pruning function for {type(m).__name__}: register one with register_pruner()"
    return groups, unhandled
