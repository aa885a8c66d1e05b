"""Split points: where a model can be cut into a head (input -> features) and a tail (features -> logits).

A split point is a place in the traced graph (torch.fx) where one tensor carries everything the rest of the
network needs: every value computed before it and used after it is that tensor (a single-tensor cut). Of
those, the *block boundaries* are the ones at the end of a block: the output of a sub-module that has
children (a residual block, a stage), or of a nonlinearity / pooling layer that is not directly followed by
another one (conv-relu-pool ends at the pool). ``input`` (the identity cut) is a split point too, used as
the sanity check of an inversion attack; it is never a default.

Names are module paths (``layers.1.0``, ``features.2``): the innermost sub-module with children that ends
at the cut, else the leaf module; every module path ending there is accepted as an alias.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import fx, nn

from edgeprune.errors import UserError

INPUT = "input"
_ENDS_A_UNIT = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.ELU, nn.Sigmoid, nn.Tanh, nn.Hardswish,
                nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d,
                nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_FUNCTIONS = {torch.relu, torch.nn.functional.relu, torch.nn.functional.max_pool2d,
              torch.nn.functional.avg_pool2d, torch.nn.functional.adaptive_avg_pool2d, torch.sigmoid, torch.tanh}


class UnknownSplitError(UserError):
    """A split-point name the model does not have."""


class NotSplittableError(UserError):
    """A model torch.fx cannot trace, so it cannot be cut."""


@dataclass
class SplitPoint:
    name: str
    node: str  # the fx node whose output is the feature tensor
    shape: tuple[int, ...]  # per sample
    aliases: list[str] = field(default_factory=list)
    block: bool = True  # a block boundary (the default audit set); False only for ``input``

    @property
    def numel(self) -> int:
        return int(math.prod(self.shape))

    def bytes_per_sample(self, dtype_bytes: int = 4) -> int:
        return self.numel * dtype_bytes

    def to_json(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "numel": self.numel,
                "bytes_per_sample_fp32": self.bytes_per_sample(4), "bytes_per_sample_int8": self.bytes_per_sample(1),
                "aliases": [a for a in self.aliases if a != self.name]}


def trace(model: nn.Module) -> fx.GraphModule:
    try:
        return fx.symbolic_trace(model)
    except Exception as e:  # torch.fx raises many kinds of errors on dynamic control flow
        raise NotSplittableError(f"{type(model).__name__} cannot be traced by torch.fx, so it has no split points: "
                                 f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def _ends_unit(gm: fx.GraphModule, n: fx.Node) -> bool:
    if n.op == "call_module":
        return isinstance(gm.get_submodule(n.target), _ENDS_A_UNIT)
    return n.op == "call_function" and n.target in _FUNCTIONS or n.op == "call_method" and n.target in ("relu", "sigmoid")


def _scopes(n: fx.Node) -> list[str]:
    stack = n.meta.get("nn_module_stack") or {}
    out = []
    for key, val in stack.items():  # values are (qualified name, type) in recent torch; keys in older
        path = val[0] if isinstance(val, tuple) else key
        if path:
            out.append(path)
    if n.op == "call_module" and n.target not in out:
        out.append(n.target)
    return out


def split_points(model: nn.Module, in_shape: tuple[int, ...]) -> list[SplitPoint]:
    """Every split point of ``model`` in forward order: ``input`` first, then the block boundaries."""
    from torch.fx.passes.shape_prop import ShapeProp

    was_training = model.training
    model.eval()
    try:
        gm = trace(model)
        with torch.no_grad():
            ShapeProp(gm).propagate(torch.zeros(2, *in_shape))
    finally:
        model.train(was_training)
    nodes = list(gm.graph.nodes)
    pos = {n: i for i, n in enumerate(nodes)}
    last_use = {n: max((pos[u] for u in n.users), default=-1) for n in nodes}
    out_node = next(n for n in nodes if n.op == "output")
    final = {a for a in out_node.all_input_nodes}  # the logits themselves are not a split point
    # scope -> position of its last node
    scope_end: dict[str, int] = {}
    for n in nodes:
        for s in _scopes(n):
            scope_end[s] = max(scope_end.get(s, -1), pos[n])
    containers = {name for name, m in model.named_modules() if name and any(True for _ in m.children())}

    valid: list[fx.Node] = []
    live: set[fx.Node] = set()
    for i, n in enumerate(nodes):
        if n.op == "output":
            break
        if n.op != "get_attr" and last_use[n] > i:
            live.add(n)
        live = {v for v in live if last_use[v] > i}
        tensor = hasattr(n.meta.get("tensor_meta"), "shape")
        if live == {n} and tensor and n not in final:
            valid.append(n)

    cands: dict[fx.Node, list[str]] = {}
    for n in valid:
        ending = sorted((s for s, end in scope_end.items() if end == pos[n]), key=lambda s: (s.count("."), s))
        block_ends = [s for s in ending if s in containers]
        if n.op == "placeholder":
            cands[n] = [INPUT]
        elif block_ends or _ends_unit(gm, n):
            inner = [s for s in reversed(block_ends)]  # innermost container first
            leaf = [n.target] if n.op == "call_module" else []
            names = inner + [s for s in ending if s not in inner and s not in leaf] + leaf or [n.name]
            cands[n] = list(dict.fromkeys(names))
    # a nonlinearity directly followed by another unit end (relu -> pool) is not a block end on its own
    keep = []
    for n, names in cands.items():
        users = list(n.users)
        only_unit = n.op != "placeholder" and not any(s in containers for s in names)
        if only_unit and len(users) == 1 and users[0] in cands and _ends_unit(gm, users[0]):
            continue
        keep.append(n)
    return [SplitPoint(cands[n][0], n.name, tuple(int(d) for d in n.meta["tensor_meta"].shape[1:]), cands[n],
                       block=n.op != "placeholder") for n in keep]


def resolve(model: nn.Module, in_shape: tuple[int, ...], names: list[str] | None) -> list[SplitPoint]:
    """The split points called ``names`` (aliases accepted), or every block boundary when ``names`` is empty."""
    points = split_points(model, in_shape)
    if not names:
        return [p for p in points if p.block]
    by_name = {a: p for p in points for a in p.aliases}
    bad = [n for n in names if n not in by_name]
    if bad:
        raise UnknownSplitError(f"{bad[0]!r} is not a split point of this model; valid split points: "
                                f"{', '.join(p.name for p in points)}")
    return list({by_name[n].name: by_name[n] for n in names}.values())


def cut(model: nn.Module, point: SplitPoint) -> tuple[fx.GraphModule, fx.GraphModule]:
    """(head, tail): head(x) is the features at ``point``, tail(features) the logits; they share the model's
    parameters (no copies), so the tail can be fine-tuned in place."""
    gm = trace(model)
    nodes = list(gm.graph.nodes)
    at = next((i for i, n in enumerate(nodes) if n.name == point.node), None)
    if at is None:
        raise UnknownSplitError(f"split point {point.name!r} is not in this model's graph")
    head_g, tail_g = fx.Graph(), fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for n in nodes[: at + 1]:
        env[n] = head_g.node_copy(n, lambda a: env[a])
    head_g.output(env[nodes[at]])
    tenv: dict[fx.Node, fx.Node] = {nodes[at]: tail_g.placeholder("features")}
    for n in nodes[:at]:  # constants read after the cut
        if n.op == "get_attr" and any(u in nodes[at + 1 :] for u in n.users):
            tenv[n] = tail_g.node_copy(n, lambda a: tenv[a])
    for n in nodes[at + 1 :]:
        tenv[n] = tail_g.node_copy(n, lambda a: tenv[a])
    head, tail = fx.GraphModule(gm, head_g), fx.GraphModule(gm, tail_g)
    return head.eval() if not model.training else head, tail.eval() if not model.training else tail
