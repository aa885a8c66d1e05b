"""The one training loop, on the device a ``Runtime`` names, and its strategy for training K models at once.

``fit`` trains one model: model and data moved to the runtime's device once, bf16 autocast where ``amp`` is on,
channels_last for images on CUDA, the running loss kept on the device and read once per epoch (no host sync
per step). Defenses plug in through their hooks (edgeprune.defend.base); pruning masks keep pruned weights at
zero. The batch order and augmentation draw from a CPU generator seeded by ``seed``, so the same seed gives
the same batches on every device.

The pipeline's phases (edgeprune.pipeline) are generators that ``yield FitRequest(...)`` and receive the loss
history back. ``run`` drives one such generator with ``fit``; ``run_many`` drives K of them in lockstep and
hands each round of requests to ``fit_requests``, which trains the requests that declare themselves
batchable (``FitRequest.not_batchable``) as one stacked ensemble (``fit_many``: ``vmap`` over the members'
stacked parameters) and the others one by one, saying which and why in an ``EnsembleReport``. So K attacker
models go through exactly the same phase code as the target; only their training steps may be batched.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections import defaultdict
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edgeprune.progress import progress
from edgeprune.recipe import TrainConfig

# (model, x, y, logits) -> scalar added to the cross-entropy
LossTerm = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _runtime(runtime):
    from edgeprune.runtime import Runtime

    return runtime or Runtime.cpu()


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}")


def make_scheduler(opt, cfg: TrainConfig, total: int):
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(total, 1))
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)


@torch.no_grad()
def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        params[name].mul_(mask)


def crop_flip(xb: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    """The standard image augmentation: a random crop of the zero-padded image and a horizontal flip with
    probability 1/2, per sample, drawn from the (CPU) training generator, so seeded and the same on every
    device. One gather, no per-sample loop and no host sync."""
    n, c, h, w = xb.shape
    padded = F.pad(xb, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen).to(xb.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen).to(xb.device)
    flip = (torch.rand(n, generator=gen) < 0.5).to(xb.device)
    rows = (dy[:, None] + torch.arange(h, device=xb.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=xb.device))[:, None, None, :]
    out = padded[torch.arange(n, device=xb.device)[:, None, None, None], torch.arange(c, device=xb.device)[None, :, None, None],
                 rows, cols]
    return torch.where(flip[:, None, None, None], out.flip(-1), out)


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Logits of ``model`` on ``x`` (on the model's device; returned there)."""
    model.eval()
    device = next((p.device for p in model.parameters()), x.device)
    return torch.cat([model(x[i : i + batch_size].to(device)) for i in range(0, len(x), batch_size)])


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(1) == y.to(logits.device)).float().mean())


class _EarlyStopping:
    """Keep the weights of the epoch with the lowest validation loss; stop after ``patience`` epochs
    without improvement (one host read per epoch)."""

    def __init__(self, patience: int, validation):
        self.patience, self.validation = patience, validation
        self.best, self.best_state, self.bad = math.inf, None, 0
        self.epochs = self.best_epoch = 0

    def stop(self, model: nn.Module) -> bool:
        self.epochs += 1
        xv, yv = self.validation
        logits = predict_logits(model, xv)
        loss = float(F.cross_entropy(logits, yv.to(logits.device)))
        model.train()
        if loss < self.best:
            self.best, self.bad = loss, 0
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            self.best_epoch = self.epochs
            return False
        self.bad += 1
        return self.bad >= self.patience

    def restore(self, model: nn.Module) -> None:
        if self.best_state is not None:
            model.load_state_dict(self.best_state)


def host_read(t: torch.Tensor):
    """The training loops' one read of a device value per epoch (a float, or a list for a vector)."""
    return t.cpu().tolist()


def _device_of(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def _to_device(t, device, channels_last: bool):
    if t is None:
        return None
    t = t.to(device)
    return t.contiguous(memory_format=torch.channels_last) if channels_last and t.dim() == 4 else t


class TrainStep:
    """One optimisation step of ``fit``: forward (under the runtime's autocast), the loss with the defense's
    and the extra terms, backward, optimizer and schedule, masks. Returns the loss as a device tensor: nothing
    here reads a value back to the host (tests run it on the ``meta`` device)."""

    def __init__(self, net, opt, sched, cfg: TrainConfig, defense, loss_terms, masks, model, runtime):
        self.net, self.opt, self.sched, self.cfg = net, opt, sched, cfg
        self.defense, self.loss_terms, self.masks, self.model = defense, loss_terms, masks, model
        self.runtime = runtime
        self.step = 0

    def __call__(self, xb: torch.Tensor, yb: torch.Tensor, epoch: int) -> torch.Tensor:
        from edgeprune.defend.base import Step

        with self.runtime.autocast():
            logits = self.net(xb)
            ce = F.cross_entropy(logits.float(), yb, label_smoothing=self.cfg.label_smoothing)
            loss = self.defense.loss(self.net, xb, yb, logits, ce, Step(epoch, self.step))
            for term in self.loss_terms:
                loss = loss + term(self.net, xb, yb, logits)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.sched.step()
        self.step += 1
        if self.masks:
            apply_masks(self.model, self.masks)
        return loss.detach()


def fit(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: TrainConfig,
    seed: int,
    loss_terms: Sequence[LossTerm] = (),
    masks: dict[str, torch.Tensor] | None = None,
    description: str = "train",
    defense=None,
    validation: tuple[torch.Tensor, torch.Tensor] | None = None,
    on_epoch: Callable[[int, nn.Module], None] | None = None,
    runtime=None,
) -> list[float]:
    """Train in place on ``runtime``'s device (the CPU by default); returns the mean loss per epoch. Same seed,
    same data -> same weights. The model ends on the device it came on.

    ``defense`` (edgeprune.defend) may replace the objective, the training set (DMP), the batch sampler,
    and wrap model and optimizer (DP-SGD); its ``info()`` afterwards says what it did.
    ``validation``: held-out (x, y) for early stopping (``cfg.early_stopping`` epochs of patience; the
    weights of the best epoch are kept). ``on_epoch(k, model)`` runs after each epoch k = 1, 2, ..."""
    from edgeprune.defend.base import NoDefense
    from edgeprune.errors import ConfigError

    runtime = _runtime(runtime)
    defense = defense or NoDefense(None, None)
    if cfg.early_stopping and validation is None:
        raise ConfigError("early_stopping needs the defender's reference data (defense.reference_samples > 0)")
    home = _device_of(model)
    device = runtime.torch_device()
    channels_last = runtime.is_cuda and x.dim() == 4
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    x, y = _to_device(x, device, channels_last), y.to(device)
    validation = None if validation is None else (_to_device(validation[0], device, channels_last),
                                                  validation[1].to(device))
    masks = {k: v.to(device) for k, v in masks.items()} if masks else None
    defense.to(device)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x, y = defense.training_set(x, y)
    opt = make_optimizer(model.parameters(), cfg)
    steps_per_epoch = max(1, math.ceil(len(x) / cfg.batch_size))
    total = cfg.epochs * steps_per_epoch
    sched = make_scheduler(opt, cfg, total)
    history: list[float] = []
    model.train()
    net, opt = defense.prepare(model, opt, len(x), cfg.batch_size, total)
    if masks:  # after prepare: a defense may re-initialise the weights (DMP trains from scratch)
        apply_masks(model, masks)
    step = TrainStep(net, opt, sched, cfg, defense, loss_terms, masks, model, runtime)
    stopper = _EarlyStopping(cfg.early_stopping, validation) if cfg.early_stopping else None
    try:
        with progress() as bar:
            task = bar.add_task(description, total=total)
            for epoch in range(cfg.epochs):
                running = torch.zeros((), dtype=torch.float64, device=device)
                seen = 0
                for idx in defense.epoch_batches(len(x), cfg.batch_size, gen):
                    bar.advance(task)
                    if idx.numel() < 2 and len(x) >= 2:  # BatchNorm needs two samples
                        continue
                    didx = idx.to(device)
                    xb, yb = x[didx], y[didx]
                    if cfg.augment == "crop-flip" and xb.dim() == 4:
                        xb = crop_flip(xb, gen)
                    running += step(xb, yb, epoch).double() * len(idx)
                    seen += len(idx)
                history.append(host_read(running) / max(seen, 1))  # the one host read of the epoch
                if on_epoch is not None:
                    on_epoch(epoch + 1, model)
                if stopper is not None and stopper.stop(model):
                    break
        defense.finish(net)
        if stopper is not None:
            stopper.restore(model)
    finally:
        if channels_last:
            model.to(memory_format=torch.contiguous_format)
        model.to(home)
        defense.to(home)
    model.eval()
    return history


# --- phases as generators, and the strategies that drive them --------------------------------------

@dataclass
class FitRequest:
    """One call of ``fit`` a phase asks for (yielded by a phase generator; the history is sent back)."""

    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    cfg: TrainConfig
    seed: int
    phase: str = "training"  # what the report calls it: dense training, fine-tuning, QAT, ...
    description: str = "train"
    loss_terms: Sequence[LossTerm] = ()
    masks: dict[str, torch.Tensor] | None = None
    defense: Any = None
    validation: tuple[torch.Tensor, torch.Tensor] | None = None
    on_epoch: Callable[[int, nn.Module], None] | None = None

    def fit(self, runtime=None) -> list[float]:
        return fit(self.model, self.x, self.y, self.cfg, self.seed, loss_terms=self.loss_terms, masks=self.masks,
                   description=self.description, defense=self.defense, validation=self.validation,
                   on_epoch=self.on_epoch, runtime=runtime)

    def not_batchable(self) -> str | None:
        """Why this request cannot join a stacked ensemble exactly (None: it can). Batched exactly: label
        smoothing, masks, crop-flip (each member its own generator), early stopping and epoch callbacks (per
        member); not: defenses (they hook sampler, optimizer and loss per model), extra loss terms, dropout
        (vmap draws its masks differently from a model trained alone), other augmentations."""
        if self.defense is not None and self.defense.name != "none":
            return f"defense {self.defense.name!r} is not batched"
        if self.loss_terms:
            return "extra loss terms are not batched"
        if self.cfg.augment not in ("none", "crop-flip"):
            return f"augment {self.cfg.augment!r} is not batched"
        if any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in self.model.modules()):
            return "dropout draws differ from a model trained alone"
        return None


Phase = Generator[FitRequest, list[float], Any]


def run(phase: Phase, runtime=None):
    """Drive one phase generator, each of its requests trained by ``fit``; returns what the phase returns."""
    try:
        request = next(phase)
        while True:
            request = phase.send(request.fit(runtime))
    except StopIteration as stop:
        return stop.value


@dataclass
class EnsembleReport:
    """What was batched and what ran one by one (and why), per phase."""

    phases: dict[str, list[str]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, phase: str, line: str) -> None:
        if line not in self.phases.setdefault(phase, []):
            self.phases[phase].append(line)

    @contextlib.contextmanager
    def timed(self, phase: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - t0

    def lines(self) -> list[str]:
        return [f"{phase}: {'; '.join(v)}" for phase, v in self.phases.items()]


def batched_on(device, batch_training: str) -> bool:
    """Whether an ensemble's training steps run batched: ``batch_training`` "batched" / "one-by-one", or "auto":
    batched on a GPU only. On a CPU the MLP's matmuls are already compute-bound one by one (a training step of 8
    stacked members: a baddbmm step as long as 8 separate steps, the vmap step 1.2-1.4x longer; benchmarks/README.md,
    audit_scale.py --mlp-steps), so batching saves nothing there."""
    if batch_training == "auto":
        return torch.device(device).type == "cuda"
    return batch_training == "batched"


def run_many(phases: list[Phase], runtime=None, batched: bool = False, report: EnsembleReport | None = None) -> list:
    """Drive K phase generators in lockstep: each round, every live generator's request is trained (the
    batchable ones together where ``batched``), then each generator resumes in turn. Returns what each returns."""
    report = report if report is not None else EnsembleReport()
    out: list = [None] * len(phases)
    live: dict[int, FitRequest] = {}

    def advance(k: int, value) -> None:
        try:
            live[k] = next(phases[k]) if value is None else phases[k].send(value)
        except StopIteration as stop:
            out[k] = stop.value

    for k in range(len(phases)):
        advance(k, None)
    while live:
        requests, live = live, {}
        histories = fit_requests(requests, runtime, batched, report)
        for k in sorted(requests):
            advance(k, histories[k])
    return out


def shape_signature(model: nn.Module) -> tuple:
    """Models with equal signatures can be stacked: same parameter / buffer names, shapes and dtypes."""
    return tuple((k, tuple(v.shape), str(v.dtype)) for k, v in model.state_dict().items())


def fit_requests(requests: dict[int, FitRequest], runtime=None, batched: bool = False,
                 report: EnsembleReport | None = None) -> dict[int, list[float]]:
    """Train every request: batchable ones with equal shapes and settings as one stacked ensemble where
    ``batched``, the others one by one; the report says which and why."""
    runtime = _runtime(runtime)
    report = report if report is not None else EnsembleReport()
    out: dict[int, list[float]] = {}
    by_phase: dict[str, list[int]] = defaultdict(list)
    for k, r in requests.items():
        by_phase[r.phase].append(k)
    for phase, ks in by_phase.items():
        with report.timed(phase):
            if not batched:
                report.add(phase, f"{len(ks)} models one by one (batched training off on {runtime.torch_device().type})")
                out.update({k: requests[k].fit(runtime) for k in ks})
                continue
            groups: dict[tuple, list[int]] = defaultdict(list)
            for k in ks:
                r = requests[k]
                why = r.not_batchable()
                if why:
                    report.add(phase, f"one by one ({why})")
                    out[k] = r.fit(runtime)
                else:
                    groups[(shape_signature(r.model), repr(r.cfg))].append(k)
            for idx in groups.values():
                if len(idx) == 1:
                    report.add(phase, "1 model alone (no other member has its shapes and settings): one by one")
                    out[idx[0]] = requests[idx[0]].fit(runtime)
                    continue
                rs = [requests[k] for k in idx]
                snapshot = [copy.deepcopy(r.model.state_dict()) for r in rs]
                try:
                    hist = fit_many([r.model for r in rs], [(r.x, r.y) for r in rs], rs[0].cfg, [r.seed for r in rs],
                                    [r.masks for r in rs], description=f"{phase} ({len(rs)} models)", runtime=runtime,
                                    validations=[r.validation for r in rs], on_epochs=[r.on_epoch for r in rs])
                    report.add(phase, f"{len(idx)} models batched")
                    out.update(dict(zip(idx, hist, strict=True)))
                except (RuntimeError, NotImplementedError) as e:  # an op vmap cannot batch: one by one
                    why = str(e).splitlines()[0][:120]
                    report.add(phase, f"{len(idx)} models one by one (vmap failed: {why})")
                    for k, r, state in zip(idx, rs, snapshot, strict=True):
                        r.model.load_state_dict(state)
                        out[k] = r.fit(runtime)
    return out


def _has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def _step_signature(n: int, batch_size: int, exact: bool):
    """Members whose training loops step in lockstep: same steps per epoch and the same skipped steps
    (``fit`` skips a batch of one sample); with BatchNorm the same sample count (no padding)."""
    if exact:
        return ("n", n)
    return ("steps", max(1, math.ceil(n / batch_size)), n % batch_size == 1 and n >= 2)


def fit_many(models: list[nn.Module], data: list[tuple[torch.Tensor, torch.Tensor]], cfg: TrainConfig,
             seeds: list[int], masks: list[dict[str, torch.Tensor] | None] | None = None,
             description: str = "ensemble", runtime=None, validations=None, on_epochs=None) -> list[list[float]]:
    """Train every model in place as ``fit(models[k], *data[k], cfg, seeds[k], masks=masks[k],
    validation=validations[k], on_epoch=on_epochs[k])`` would (no defense, no extra loss terms), all at once:
    the members' parameters stacked along a new leading dimension, one ``vmap``-ed forward over
    ``functional_call``. Adam and SGD act elementwise, so one optimizer over the stacked tensors is K
    independent optimizers while the members step together (same steps per epoch and schedule: members are
    grouped so). Label smoothing, masks, crop-flip (each member's own generator, drawn as ``fit`` draws), early
    stopping (per member: a stopped member's best weights are kept, its later steps discarded) and epoch
    callbacks are exact. The models must share ``shape_signature``. Returns each member's mean loss per epoch."""
    if not models:
        return []
    if len({shape_signature(m) for m in models}) != 1:
        raise ValueError("ensemble members must have the same architecture (parameter shapes)")
    from edgeprune.errors import ConfigError

    validations = validations or [None] * len(models)
    on_epochs = on_epochs or [None] * len(models)
    masks = masks or [None] * len(models)
    if cfg.early_stopping and any(v is None for v in validations):
        raise ConfigError("early_stopping needs the defender's reference data (defense.reference_samples > 0)")
    exact = _has_batchnorm(models[0])
    groups: dict[tuple, list[int]] = defaultdict(list)
    for k, (x, _) in enumerate(data):
        groups[_step_signature(len(x), cfg.batch_size, exact)].append(k)
    history: list[list[float]] = [[] for _ in models]
    for members in groups.values():
        hist = _fit_group([models[k] for k in members], [data[k] for k in members], cfg, [seeds[k] for k in members],
                          [masks[k] for k in members], description, _runtime(runtime),
                          [validations[k] for k in members], [on_epochs[k] for k in members])
        for k, h in zip(members, hist, strict=True):
            history[k] = h
    return history


def _pad(t: torch.Tensor, width: int) -> torch.Tensor:
    """``t`` with copies of its first row appended up to ``width`` rows (zero-weight padding)."""
    return torch.cat([t, t[:1].expand(width - len(t), *t.shape[1:])]) if len(t) < width else t


def _fit_group(models, data, cfg, seeds, masks, description, runtime, validations, on_epochs) -> list[list[float]]:
    from torch.func import functional_call, stack_module_state, vmap

    from edgeprune.defend.base import NoDefense

    device = runtime.torch_device()
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
    if any(masks):
        names = sorted(set().union(*[set(m) for m in masks if m]))
        stacked_masks = {n: torch.stack([(m or {})[n].to(device) if n in (m or {}) else torch.ones_like(params[n][0])
                                         for m in masks]).to(dtype=params[n].dtype) for n in names}

    def apply_stacked_masks():
        if stacked_masks:
            with torch.no_grad():
                for n, mk in stacked_masks.items():
                    params[n].mul_(mk)

    def write_back(k: int) -> None:
        with torch.no_grad():
            m = models[k]
            for name, p in m.named_parameters():
                p.copy_(params[name][k].detach().to(p.device))
            for name, b in m.named_buffers():
                if name in buffers:
                    b.copy_(buffers[name][k].to(b.device))

    torch.manual_seed(seeds[0])
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    sampler = NoDefense(None, None)
    ns = [len(x) for x, _ in data]
    opt = make_optimizer(list(params.values()), cfg)
    steps_per_epoch = max(1, math.ceil(max(ns) / cfg.batch_size))
    total = cfg.epochs * steps_per_epoch
    sched = make_scheduler(opt, cfg, total)
    apply_stacked_masks()
    xs = [x.to(device) for x, _ in data]
    ys = [y.to(device) for _, y in data]
    stoppers = [_EarlyStopping(cfg.early_stopping, v) if cfg.early_stopping else None for v in validations]
    active = [True] * K
    history: list[list[float]] = [[] for _ in range(K)]
    crop = cfg.augment == "crop-flip" and xs[0].dim() == 4
    with progress() as bar:
        task = bar.add_task(description, total=total)
        for epoch in range(cfg.epochs):
            running = torch.zeros(K, dtype=torch.float64, device=device)
            seen = torch.zeros(K, dtype=torch.float64)
            orders = [sampler.epoch_batches(n, cfg.batch_size, g) for n, g in zip(ns, gens, strict=True)]
            for step in range(len(orders[0])):
                bar.advance(task)
                idx = [o[step] for o in orders]
                sizes = [len(i) for i in idx]
                if sizes[0] < 2 and ns[0] >= 2:  # fit() skips a one-sample batch (BatchNorm); all members agree
                    continue
                width = max(sizes)
                xbs, ybs = [], []
                for x, y, i, g in zip(xs, ys, idx, gens, strict=True):
                    di = i.to(device)
                    xb = crop_flip(x[di], g) if crop else x[di]  # each member's draws, in fit's order
                    xbs.append(_pad(xb, width))
                    ybs.append(_pad(y[di], width))
                xb, yb = torch.stack(xbs), torch.stack(ybs)
                weight = torch.zeros(K, width)
                for k, s in enumerate(sizes):
                    weight[k, :s] = 1.0
                weight = weight.to(device)
                with runtime.autocast():
                    logits = forward(params, buffers, xb)
                ce = F.cross_entropy(logits.float().flatten(0, 1), yb.flatten(), reduction="none",
                                     label_smoothing=cfg.label_smoothing).view(K, width)
                per_member = (ce * weight).sum(1) / weight.sum(1)
                opt.zero_grad(set_to_none=True)
                per_member.sum().backward()  # member k's gradient is that of its own mean loss
                opt.step()
                sched.step()
                apply_stacked_masks()
                sz = torch.tensor(sizes, dtype=torch.float64)
                running += per_member.detach().double() * sz.to(device)
                seen += sz
            means = [r / max(s, 1.0) for r, s in zip(host_read(running), seen.tolist(), strict=True)]  # one read
            for k in range(K):
                if not active[k]:
                    continue
                history[k].append(means[k])
                if on_epochs[k] is not None or stoppers[k] is not None:
                    write_back(k)
                if on_epochs[k] is not None:
                    on_epochs[k](epoch + 1, models[k])
                if stoppers[k] is not None and stoppers[k].stop(models[k]):
                    active[k] = False
            if not any(active):
                break
    for k, m in enumerate(models):
        if active[k] or stoppers[k] is None:
            write_back(k)
        if stoppers[k] is not None:
            stoppers[k].restore(m)
        m.eval()
    return history
