"""Train K small models of one architecture at once, as one batched ensemble.

The members' parameters are stacked along a new leading dimension (``torch.func.stack_module_state``) and
one forward pass runs every member on its own batch (``vmap`` over ``functional_call``: linear layers become
batched matmuls, convolutions grouped ones). Each member keeps its own data, seed, batch order and pruning
mask, and the optimizer is exactly the per-model one: Adam and SGD (with momentum, weight decay) act
elementwise, so one optimizer over the stacked tensors is K independent optimizers, provided every member
takes its steps at the same time (same number of steps per epoch, same learning-rate schedule). Members are
grouped so that holds; the loss of a member is the mean cross-entropy over its own batch (shorter last
batches are padded with zero-weight samples, or, for models with BatchNorm, whose batch statistics padding
would change, only members with the same sample count are batched together).

``run_pipelines`` is ``edgeprune.pipeline.run_pipeline`` for many models: the dense phase is batched, pruning
is decided per model, fine-tuning is batched over the members whose pruned shapes agree (structured pruning
may give every member its own architecture), and the int8 export reuses one verified ONNX graph per shape.
What could not be batched is trained one by one, and the returned report says which and why.
"""

from __future__ import annotations

import contextlib
import copy
import math
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgeprune.recipe import Recipe, TrainConfig


def shape_signature(model: nn.Module) -> tuple:
    """Models with equal signatures can be stacked: same parameter / buffer names, shapes and dtypes."""
    return tuple((k, tuple(v.shape), str(v.dtype)) for k, v in model.state_dict().items())


def _has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def _step_signature(n: int, batch_size: int, exact: bool):
    """Members whose training loops step in lockstep: same steps per epoch and the same skipped steps
    (``train`` skips a batch of one sample); with BatchNorm the same sample count (no padding)."""
    if exact:
        return ("n", n)
    return ("steps", max(1, math.ceil(n / batch_size)), n % batch_size == 1 and n >= 2)


def train_ensemble(models: list[nn.Module], data: list[tuple[torch.Tensor, torch.Tensor]], cfg: TrainConfig,
                   seeds: list[int], masks: list[dict[str, torch.Tensor]] | None = None,
                   description: str = "ensemble", device: str | torch.device = "cpu") -> list[list[float]]:
    """Train every model in place as ``edgeprune.train.train(models[k], *data[k], cfg, seeds[k], masks=masks[k])``
    would (no defense, no extra loss terms), all at once. The models must share ``shape_signature``.
    Returns each member's mean loss per epoch."""
    if not models:
        return []
    if len({shape_signature(m) for m in models}) != 1:
        raise ValueError("ensemble members must have the same architecture (parameter shapes)")
    exact = _has_batchnorm(models[0])
    groups: dict[tuple, list[int]] = defaultdict(list)
    for k, (x, _) in enumerate(data):
        groups[_step_signature(len(x), cfg.batch_size, exact)].append(k)
    history: list[list[float]] = [[] for _ in models]
    for members in groups.values():
        hist = _train_group([models[k] for k in members], [data[k] for k in members], cfg, [seeds[k] for k in members],
                            [masks[k] for k in members] if masks else None, description, torch.device(device))
        for k, h in zip(members, hist, strict=True):
            history[k] = h
    return history


def _train_group(models, data, cfg, seeds, masks, description, device) -> list[list[float]]:
    from torch.func import functional_call, stack_module_state, vmap

    from edgeprune.defend.base import NoDefense
    from edgeprune.progress import progress
    from edgeprune.train import make_optimizer

    K = len(models)
    for m in models:
        m.train()
    params, buffers = stack_module_state(models)
    params = {k: v.detach().to(device).requires_grad_(True) for k, v in params.items()}
    buffers = {k: v.detach().to(device).clone() for k, v in buffers.items()}
    base = copy.deepcopy(models[0]).to("meta")
    base.train()

    def fwd(p, b, xb):
        return functional_call(base, (p, b), (xb,))

    forward = vmap(fwd, randomness="different")
    stacked_masks = None
    if masks and any(masks):
        names = sorted(set().union(*[set(m) for m in masks]))
        stacked_masks = {n: torch.stack([m[n] if n in m else torch.ones_like(params[n][0].detach().cpu())
                                         for m in masks]).to(device=device, dtype=params[n].dtype) for n in names}

    def apply_masks():
        if stacked_masks:
            with torch.no_grad():
                for n, mk in stacked_masks.items():
                    params[n].mul_(mk)

    torch.manual_seed(seeds[0])  # randomness inside the forward (dropout) draws per member from here
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    sampler = NoDefense(None, None)
    ns = [len(x) for x, _ in data]
    opt = make_optimizer(list(params.values()), cfg)
    steps_per_epoch = max(1, math.ceil(max(ns) / cfg.batch_size))
    total = cfg.epochs * steps_per_epoch
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(total, 1)) if cfg.schedule == "cosine"
             else torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0))
    apply_masks()
    xs = [x.to(device) for x, _ in data]
    ys = [y.to(device) for _, y in data]
    history: list[list[float]] = [[] for _ in range(K)]
    with progress() as bar:
        task = bar.add_task(f"{description} ({K} models)", total=total)
        for _epoch in range(cfg.epochs):
            running = torch.zeros(K, dtype=torch.float64)
            seen = torch.zeros(K, dtype=torch.float64)
            orders = [sampler.epoch_batches(n, cfg.batch_size, g) for n, g in zip(ns, gens, strict=True)]
            for step in range(len(orders[0])):
                bar.advance(task)
                idx = [o[step] for o in orders]
                sizes = [len(i) for i in idx]
                if sizes[0] < 2 and ns[0] >= 2:  # train() skips a one-sample batch (BatchNorm); all members agree
                    continue
                width = max(sizes)
                xb = torch.stack([torch.cat([x[i], x[i[:1]].expand(width - len(i), *x.shape[1:])]) if len(i) < width
                                  else x[i] for x, i in zip(xs, idx, strict=True)])
                yb = torch.stack([torch.cat([y[i], y[i[:1]].expand(width - len(i))]) if len(i) < width else y[i]
                                  for y, i in zip(ys, idx, strict=True)])
                weight = torch.zeros(K, width, device=device)
                for k, s in enumerate(sizes):
                    weight[k, :s] = 1.0
                logits = forward(params, buffers, xb)
                ce = F.cross_entropy(logits.flatten(0, 1), yb.flatten(), reduction="none").view(K, width)
                per_member = (ce * weight).sum(1) / weight.sum(1)
                opt.zero_grad(set_to_none=True)
                per_member.sum().backward()  # member k's gradient is that of its own mean loss
                opt.step()
                sched.step()
                apply_masks()
                sz = torch.tensor(sizes, dtype=torch.float64)
                running += per_member.detach().double().cpu() * sz
                seen += sz
            for k in range(K):
                history[k].append(float(running[k] / max(float(seen[k]), 1.0)))
    with torch.no_grad():
        for k, m in enumerate(models):
            for name, p in m.named_parameters():
                p.copy_(params[name][k].detach().to(p.device))
            for name, b in m.named_buffers():
                if name in buffers:
                    b.copy_(buffers[name][k].to(b.device))
            m.eval()
    return history


# --- the pipeline for many models ----------------------------------------------------------------

@dataclass
class Member:
    """One attacker model's inputs to the pipeline."""

    x: torch.Tensor
    y: torch.Tensor
    seed: int
    tag: str
    reference: tuple[torch.Tensor, torch.Tensor] | None = None


@dataclass
class EnsembleReport:
    """What was batched and what ran one by one (and why), per phase."""

    phases: dict[str, list[str]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, phase: str, line: str) -> None:
        self.phases.setdefault(phase, []).append(line)

    @contextlib.contextmanager
    def timed(self, phase: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - t0

    def lines(self) -> list[str]:
        return [f"{phase}: {'; '.join(v)}" for phase, v in self.phases.items()]


def batched_on(device: str | torch.device, batch_training: str) -> bool:
    """Whether an ensemble's training steps run batched: ``batch_training`` "batched" / "one-by-one", or "auto":
    batched on a GPU only. On a CPU the MLP's matmuls are already compute-bound one by one (a training step of 8
    stacked members: a baddbmm step as long as 8 separate steps, the vmap step 1.2-1.4x longer; benchmarks/README.md,
    audit_scale.py --mlp-steps), so batching saves nothing there; the task still shares the ONNX export per shape."""
    if batch_training == "auto":
        return torch.device(device).type == "cuda"
    return batch_training == "batched"


def _batch_or_one_by_one(phase: str, models, data, cfg, seeds, masks, report: EnsembleReport, device,
                         batched: bool = True) -> None:
    """Train ``models`` batched by shape; a group that cannot be vmapped, or every group when ``batched`` is
    off, trains one by one (said in the report)."""
    from edgeprune.train import train

    def one_by_one(idx):
        for k in idx:
            train(models[k], *data[k], cfg, seed=seeds[k], masks=masks[k] if masks else None, description=phase)

    if not batched:
        report.add(phase, f"{len(models)} models one by one (batched training off on {torch.device(device).type})")
        one_by_one(range(len(models)))
        return
    by_shape: dict[tuple, list[int]] = defaultdict(list)
    for k, m in enumerate(models):
        by_shape[shape_signature(m)].append(k)
    for idx in by_shape.values():
        if len(idx) == 1:
            report.add(phase, "1 model alone (no other member has its shapes): one by one")
            one_by_one(idx)
            continue
        try:
            train_ensemble([models[k] for k in idx], [data[k] for k in idx], cfg, [seeds[k] for k in idx],
                           [masks[k] for k in idx] if masks else None, description=phase, device=device)
            report.add(phase, f"{len(idx)} models batched")
        except (RuntimeError, NotImplementedError) as e:  # an op vmap cannot batch: train these one by one
            why = str(e).splitlines()[0][:120]
            report.add(phase, f"{len(idx)} models one by one (vmap failed: {why})")
            one_by_one(idx)


def run_pipelines(make_model, in_shape, members: list[Member], recipe: Recipe, workdir: Path,
                  dense_only: bool = False, device: str | None = None, batch_training: str = "batched"):
    """``edgeprune.pipeline.run_pipeline`` for every member, batched where the models allow (training steps only
    where ``batched_on(device, batch_training)``). Returns (list of PipelineModels in member order, EnsembleReport)."""
    from edgeprune.pipeline import PipelineModels, finetune, plan_for, quant_variant

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    report = EnsembleReport()
    batched = batched_on(device, batch_training)
    dense = []
    for m in members:
        torch.manual_seed(m.seed)  # the initial weights, as run_pipeline draws them
        dense.append(make_model())
    data = [(m.x, m.y) for m in members]
    with report.timed("dense training"):
        _batch_or_one_by_one("dense training", dense, data, recipe.train, [m.seed for m in members], None, report,
                             device, batched)
    if dense_only:
        return [PipelineModels(models={"dense": d.eval()}) for d in dense], report
    pruned, masks = [], []
    with report.timed("pruning"):
        for m, d in zip(members, dense, strict=True):
            torch.manual_seed(m.seed)
            p = make_model()
            p.load_state_dict(d.state_dict())
            _, mk = plan_for(p, in_shape, recipe, m.x, m.y, m.seed + 1, reference=m.reference)
            pruned.append(p)
            masks.append(mk)
    shapes = len({shape_signature(p) for p in pruned})
    report.add("pruning", f"{len(members)} models one by one (per-model decisions), {shapes} distinct pruned shape(s)")
    with report.timed("fine-tuning"):
        if recipe.defense.name == "none":
            _batch_or_one_by_one("fine-tuning", pruned, data, recipe.finetune, [m.seed + 1 for m in members], masks,
                                 report, device, batched)
        else:  # defenses hook the loss, the sampler or the optimizer of the one training loop
            report.add("fine-tuning", f"{len(members)} models one by one (defense {recipe.defense.name!r} is not batched)")
            for m, p, d, mk in zip(members, pruned, dense, masks, strict=True):
                finetune(p, m.x, m.y, recipe, m.seed + 1, desc=f"{m.tag} fine-tune", masks=mk, reference=m.reference,
                         teacher=d)
    out = [PipelineModels(models={"dense": d.eval(), "pruned": p.eval()}) for d, p in zip(dense, pruned, strict=True)]
    label = quant_variant(recipe)
    if label:
        with report.timed("quantization"):
            paths = _quantize_all(in_shape, members, pruned, dense, masks, recipe, workdir, report)
        for o, path in zip(out, paths, strict=True):
            o.onnx[label] = path
    return out, report


def _quantize_all(in_shape, members, pruned, dense, masks, recipe, workdir: Path, report: EnsembleReport) -> list[Path]:
    """int8 PTQ of every pruned model. The ONNX export (the slow part) runs once per pruned shape: the graph is
    exported for one member, checked against a direct export of a second, and reused for the others with their
    weights swapped in. Mixed precision and QAT are per model (they train / probe): one by one."""
    from edgeprune.pipeline import calibration_set, int8_settings, quantize_model
    from edgeprune.quant.ptq import quantize_int8

    cfg = recipe.quant
    settings = int8_settings(recipe)  # the target's int8 settings (7-bit weights on saturating CPUs), as quantize_model
    paths: list[Path] = [workdir / f"{m.tag}.q.onnx" for m in members]
    if cfg.mode != "int8" or cfg.qat_epochs > 0:
        report.add("quantization", f"{len(members)} models one by one (mode {cfg.mode}, {cfg.qat_epochs} QAT epochs)")
        for k, m in enumerate(members):
            paths[k], _ = quantize_model(pruned[k], in_shape, calibration_set(m.x.numpy(), cfg.calibration_samples, m.seed),
                                         recipe, paths[k], m.x, m.y, m.reference, dense[k], masks[k], m.seed + 1)
        return paths
    by_shape: dict[tuple, list[int]] = defaultdict(list)
    for k, p in enumerate(pruned):
        by_shape[shape_signature(p)].append(k)
    with tempfile.TemporaryDirectory() as tmp:
        for g, idx in enumerate(by_shape.values()):
            fp32 = _fp32_exports(in_shape, [pruned[k] for k in idx], recipe.export.opset, Path(tmp) / f"g{g}")
            reused = sum(1 for f in fp32 if f.name.startswith("reused"))
            report.add("quantization", f"{len(idx)} models: {len(idx) - reused} ONNX export(s), {reused} reused graph(s)")
            for k, src in zip(idx, fp32, strict=True):
                calib = calibration_set(members[k].x.numpy(), cfg.calibration_samples, members[k].seed)
                quantize_int8(src, paths[k], calib, activations=settings["activations"], method=cfg.calibration,
                              reduce_range=settings["reduce_range"])
    return paths


def _fp32_exports(in_shape, models: list[nn.Module], opset: int, where: Path) -> list[Path]:
    """fp32 ONNX files of ``models`` (equal shapes). Two are exported; if swapping the second model's weights
    into the first graph reproduces the second export exactly, the others reuse that graph."""
    import onnx

    from edgeprune.export.onnx import export_onnx

    where.mkdir(parents=True, exist_ok=True)
    first = export_onnx(copy.deepcopy(models[0]).eval(), in_shape, where / "export0.onnx", opset=opset)
    if len(models) == 1:
        return [first]
    second = export_onnx(copy.deepcopy(models[1]).eval(), in_shape, where / "export1.onnx", opset=opset)
    template = onnx.load(str(first))
    direct = onnx.load(str(second))
    if _with_weights(template, models[1]).SerializeToString() != direct.SerializeToString():
        out = [first, second]  # the graph holds more than the parameters (folded constants): export each
        out += [export_onnx(copy.deepcopy(m).eval(), in_shape, where / f"export{k}.onnx", opset=opset)
                for k, m in enumerate(models[2:], start=2)]
        return out
    out = [first, second]
    for k, m in enumerate(models[2:], start=2):
        p = where / f"reused{k}.onnx"
        onnx.save(_with_weights(template, m), str(p))
        out.append(p)
    return out


def _with_weights(template, model: nn.Module):
    """A copy of ``template`` whose initializers named like ``model``'s state tensors hold its values."""
    from onnx import numpy_helper

    out = copy.deepcopy(template)
    state = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    for init in out.graph.initializer:
        if init.name in state and tuple(init.dims) == state[init.name].shape:
            init.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(state[init.name]).astype(
                numpy_helper.to_array(init).dtype), init.name))
    return out
