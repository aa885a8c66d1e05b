"""Model inversion from intermediate features: who sees the features at a split point, sees the input?

Two attacks, registered in the attack registry with ``kind="inversion"`` (they consume features, not logits):
- ``inversion``: black-box decoder. The attacker sends its own pool of inputs through the deployed head (or
  watches the link), trains a decoder features -> input on those pairs, and reconstructs the candidates'
  inputs from their features (the setting of Huang et al., "Privacy-preserving learning via deep net
  pruning", and of split-inference inversion work).
- ``inversion-wb``: white-box. The attacker holds the head's weights (a stolen device) and optimises an input
  by gradient descent so that its features match the observed ones, with a total-variation prior.

Figures: MSE, PSNR and SSIM from scikit-image on pixels in [0, 1] (the data set's normalisation undone), and
the accuracy of a fixed judge classifier (the run's dense model) on the reconstructions: how much class
information the features leak. Each with a percentile bootstrap CI (scipy.stats.bootstrap).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from edgeprune.attack.base import register


@dataclass
class InversionPlan:
    attacks: list[str] = field(default_factory=lambda: ["inversion"])
    layers: list[str] = field(default_factory=list)  # empty: every block boundary
    samples: int = 250  # candidates reconstructed per side (members / non-members)
    pool: int = 2000  # attacker's own inputs for training the decoder
    epochs: int = 40  # decoder training
    width: int = 64  # decoder channels / hidden units
    lr: float = 2e-3
    wb_steps: int = 300  # white-box optimisation steps
    wb_lr: float = 0.05
    tv: float = 0.02  # weight of the total-variation prior (white-box)
    bootstrap: int = 200
    grid: int = 8  # samples shown per row of the picture grid
    seed: int = 0

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class InversionInputs:
    """What an inversion attack gets: the attacker's (input, feature) pairs and the observed features."""

    x_pool: np.ndarray  # (P, *in_shape) attacker's own inputs
    f_pool: np.ndarray  # (P, *feat_shape) their features through the deployed head
    f_target: np.ndarray  # (N, *feat_shape) the observed features of the candidates
    in_shape: tuple[int, ...]
    box: tuple[np.ndarray, np.ndarray] | None  # per-channel (low, high) of valid inputs, broadcastable
    plan: InversionPlan
    head: Callable | None = None  # differentiable torch head (white-box only)
    runtime: object = None  # edgeprune.runtime.Runtime the decoder / the white-box optimisation runs on (None: CPU)


# --- the decoder ---------------------------------------------------------------------------------

def make_decoder(feat_shape: tuple[int, ...], out_shape: tuple[int, ...], width: int = 64):
    """A small decoder sized from the shapes: transposed convolutions from a feature map of at least 4x4 to
    an image, else an MLP (flat features, tiny maps, tabular inputs)."""
    from torch import nn

    class ConvDecoder(nn.Module):
        def __init__(self):
            super().__init__()
            c, h, w = feat_shape
            oc, oh, ow = out_shape
            ups = max(0, math.ceil(math.log2(max(oh / h, ow / w, 1.0))))
            layers: list[nn.Module] = [nn.Conv2d(c, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
            ch = width
            for _ in range(ups):
                nxt = max(16, ch // 2)
                layers += [nn.ConvTranspose2d(ch, nxt, 4, stride=2, padding=1), nn.BatchNorm2d(nxt), nn.ReLU()]
                ch = nxt
            layers += [nn.Conv2d(ch, ch, 3, padding=1), nn.ReLU(), nn.Conv2d(ch, oc, 3, padding=1)]
            self.net = nn.Sequential(*layers)
            self.size = (oh, ow)

        def forward(self, f):
            out = self.net(f)
            if out.shape[-2:] != self.size:
                out = nn.functional.interpolate(out, size=self.size, mode="bilinear", align_corners=False)
            return out

    class MLPDecoder(nn.Module):
        def __init__(self):
            super().__init__()
            n_in, n_out = math.prod(feat_shape), math.prod(out_shape)
            hidden = max(4 * width, 128)
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                                     nn.ReLU(), nn.Linear(hidden, n_out))

        def forward(self, f):
            return self.net(f).reshape(len(f), *out_shape)

    if len(feat_shape) == 3 and len(out_shape) == 3 and min(feat_shape[1:]) >= 4:
        return ConvDecoder()
    return MLPDecoder()


def train_decoder(x: np.ndarray, f: np.ndarray, plan: InversionPlan, runtime=None):
    """The decoder features -> input, trained on ``runtime``'s device (the CPU by default): data moved there
    once, the shuffling drawn on the CPU (the same order on every device), no host sync in the steps."""
    import torch

    from edgeprune.runtime import Runtime

    rt = runtime or Runtime.cpu()
    dev = rt.torch_device()
    torch.manual_seed(plan.seed)
    dec = make_decoder(tuple(f.shape[1:]), tuple(x.shape[1:]), plan.width).to(dev)
    xt = torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(dev)
    ft = torch.from_numpy(np.ascontiguousarray(f, np.float32)).to(dev)
    opt = torch.optim.Adam(dec.parameters(), lr=plan.lr)
    steps_per_epoch = max(1, math.ceil(len(x) / 64))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, plan.epochs * steps_per_epoch))
    g = torch.Generator().manual_seed(plan.seed)
    dec.train()
    for _ in range(plan.epochs):
        perm = torch.randperm(len(x), generator=g)
        perm_dev = perm.to(dev)
        for i in range(0, len(x), 64):
            if len(perm[i : i + 64]) < 2:  # sizes known on the host: no sync
                continue
            b = perm_dev[i : i + 64]
            with rt.autocast():
                rec = dec(ft[b])
            loss = torch.nn.functional.mse_loss(rec.float(), xt[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return dec.eval()


@register("inversion", needs=("features",), kind="inversion")
def decoder_inversion(inp: InversionInputs) -> np.ndarray:
    """Black-box inversion: a decoder trained on the attacker's (input, feature) pairs."""
    import torch

    from edgeprune.runtime import Runtime

    rt = inp.runtime or Runtime.cpu()
    dec = train_decoder(inp.x_pool, inp.f_pool, inp.plan, rt)
    with torch.no_grad(), rt.autocast():
        out = dec(torch.from_numpy(np.ascontiguousarray(inp.f_target, np.float32)).to(rt.torch_device()))
    return _clip(out.float().cpu().numpy(), inp.box)


def total_variation(x):
    """Anisotropic (L1) total variation per sample, averaged over pixels."""
    if x.dim() < 4:
        return x.new_zeros(len(x))
    dh = (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).mean(1)
    dw = (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).mean(1)
    return dh + dw


@register("inversion-wb", needs=("features", "head"), kind="inversion")
def whitebox_inversion(inp: InversionInputs) -> np.ndarray:
    """White-box inversion: gradient descent on the input to match the features, total-variation prior."""
    if inp.head is None:
        raise ValueError("the white-box inversion needs the head")
    return whitebox_optimise(inp.f_target, inp.head, inp.in_shape, inp.box, inp.plan, inp.runtime).cpu().numpy()


def whitebox_optimise(f_target: np.ndarray, head, in_shape, box, plan: InversionPlan, runtime=None):
    """The white-box optimisation on ``runtime``'s device (a torch module head is copied there); returns the
    reconstructed inputs as a tensor on that device."""
    import copy

    import torch

    from edgeprune.runtime import Runtime

    rt = runtime or Runtime.cpu()
    dev = rt.torch_device()
    if isinstance(head, torch.nn.Module) and dev.type != "cpu":
        head = copy.deepcopy(head).to(dev)
    torch.manual_seed(plan.seed)
    f = torch.from_numpy(np.ascontiguousarray(f_target, np.float32)).to(dev)
    x = torch.zeros(len(f), *in_shape, device=dev, requires_grad=True)  # the data mean (inputs are standardised)
    lo, hi = (torch.from_numpy(np.asarray(b, np.float32)).to(dev) for b in box) if box else (None, None)
    opt = torch.optim.Adam([x], lr=plan.wb_lr)
    norm = f.flatten(1).pow(2).sum(1).clamp_min(1e-8)
    for _ in range(plan.wb_steps):
        match = (head(x) - f).flatten(1).pow(2).sum(1) / norm
        loss = (match + plan.tv * total_variation(x)).sum()
        (grad,) = torch.autograd.grad(loss, x)
        opt.zero_grad()
        x.grad = grad
        opt.step()
        if lo is not None:
            with torch.no_grad():
                x.copy_(torch.maximum(torch.minimum(x, hi), lo))
    return x.detach()


def _clip(x: np.ndarray, box) -> np.ndarray:
    return x if box is None else np.clip(x, box[0], box[1]).astype(np.float32)


# --- figures -------------------------------------------------------------------------------------

def to_pixels(x: np.ndarray, preprocessing: dict) -> tuple[np.ndarray, float]:
    """Undo the data set's image standardisation: pixels in [0, 1] and data range 1; other data keeps its
    values with the range of the originals."""
    if "mean" in preprocessing and "std" in preprocessing and x.ndim == 4:
        mean = np.asarray(preprocessing["mean"], np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(preprocessing["std"], np.float32).reshape(1, -1, 1, 1)
        return np.clip(x * std + mean, 0.0, 1.0), 1.0
    return x, float(np.ptp(x)) or 1.0


def input_box(preprocessing: dict, in_shape) -> tuple[np.ndarray, np.ndarray] | None:
    """Valid standardised inputs: pixels in [0, 1]."""
    if "mean" in preprocessing and "std" in preprocessing and len(in_shape) == 3:
        mean = np.asarray(preprocessing["mean"], np.float32).reshape(-1, 1, 1)
        std = np.asarray(preprocessing["std"], np.float32).reshape(-1, 1, 1)
        return (0.0 - mean) / std, (1.0 - mean) / std
    return None


PSNR_CAP = 100.0  # dB, for reconstructions identical to the original (PSNR is infinite there)


def per_sample_figures(orig: np.ndarray, rec: np.ndarray, data_range: float) -> dict[str, np.ndarray]:
    from skimage.metrics import structural_similarity

    diff = (orig - rec).reshape(len(orig), -1).astype(np.float64)
    mse = (diff**2).mean(1)
    with np.errstate(divide="ignore"):
        psnr = np.minimum(10 * np.log10(data_range**2 / mse), PSNR_CAP)  # skimage's formula, per sample
    out = {"mse": mse, "psnr": psnr}
    if orig.ndim == 4 and min(orig.shape[2:]) >= 3:
        win = min(7, min(orig.shape[2:]) - (1 - min(orig.shape[2:]) % 2))
        out["ssim"] = np.array([structural_similarity(o, r, data_range=data_range, win_size=win, channel_axis=0)
                                for o, r in zip(orig, rec, strict=True)])
    return out


def mean_ci(values: np.ndarray, n: int, seed: int) -> dict:
    from scipy.stats import bootstrap

    values = np.asarray(values, np.float64)
    m = float(values.mean())
    if n <= 0 or len(values) < 2 or np.ptp(values) == 0:
        return {"mean": m, "ci95": [m, m]}
    res = bootstrap((values,), np.mean, n_resamples=n, method="percentile", confidence_level=0.95,
                    random_state=np.random.default_rng(seed))
    return {"mean": m, "ci95": [float(res.confidence_interval.low), float(res.confidence_interval.high)]}


def summarise(orig_px: np.ndarray, rec_px: np.ndarray, data_range: float, judge_correct: np.ndarray,
              is_member: np.ndarray, plan: InversionPlan) -> dict:
    figs = per_sample_figures(orig_px, rec_px, data_range)
    figs["judge_accuracy"] = judge_correct.astype(np.float64)
    out = {k: mean_ci(v, plan.bootstrap, plan.seed) for k, v in figs.items()}
    for side, mask in (("members", is_member), ("nonmembers", ~is_member)):
        out[side] = {k: float(v[mask].mean()) for k, v in figs.items() if mask.any()}
    return out


# --- the grid picture ----------------------------------------------------------------------------

def grid_plot(rows: list[tuple[str, np.ndarray]], path, title: str = "") -> None:
    """One row per (label, images (n, C, H, W) in [0, 1]); originals first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(len(imgs) for _, imgs in rows)
    fig, axes = plt.subplots(len(rows), n, figsize=(1.1 * n + 1.6, 1.15 * len(rows) + 0.4), squeeze=False)
    for r, (label, imgs) in enumerate(rows):
        for c in range(n):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            if c < len(imgs):
                im = np.transpose(imgs[c], (1, 2, 0))
                ax.imshow(im[..., 0] if im.shape[-1] == 1 else im, cmap="gray", vmin=0, vmax=1)
        axes[r][0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- the runner ----------------------------------------------------------------------------------

@dataclass
class FeatureSource:
    """One audited variant at one split point: inputs -> features as deployed, and (white-box) its head."""

    features: Callable[[np.ndarray], np.ndarray]
    head: Callable | None = None
    numerics: str = "torch fp32"


def run_inversion(x_pool: np.ndarray, x_cand: np.ndarray, y_cand: np.ndarray, is_member: np.ndarray,
                  sources: dict[str, dict[str, FeatureSource]], points: list, judge: Callable[[np.ndarray], np.ndarray],
                  preprocessing: dict, plan: InversionPlan, log=lambda m: None, runtime=None) -> tuple[dict, dict]:
    """``sources[variant][point name]``; returns (result JSON, picture rows per point for the grid). The
    decoders and the white-box optimisation run on ``runtime`` (None: the CPU)."""
    from edgeprune.attack.base import ATTACKS

    in_shape = tuple(x_cand.shape[1:])
    box = input_box(preprocessing, in_shape)
    orig_px, data_range = to_pixels(x_cand, preprocessing)
    show = np.concatenate([np.flatnonzero(is_member)[: plan.grid // 2], np.flatnonzero(~is_member)[: plan.grid - plan.grid // 2]])
    pictures: dict[str, list] = {p.name: [("original", orig_px[show])] for p in points}
    result: dict = {"layers": {p.name: p.to_json() for p in points}, "variants": {}}
    for variant, by_point in sources.items():
        result["variants"][variant] = {}
        for p in points:
            src = by_point[p.name]
            f_pool, f_cand = src.features(x_pool), src.features(x_cand)
            entry = {"numerics": src.numerics, "feature_shape": list(f_cand.shape[1:]),
                     "bytes_per_sample_fp32": int(f_cand[0].size) * 4, "attacks": {}}
            for name in plan.attacks:
                atk = ATTACKS.get(name)
                if "head" in atk.needs and src.head is None:
                    entry.setdefault("skipped", {})[name] = "needs a differentiable head"
                    continue
                inp = InversionInputs(x_pool, f_pool, f_cand, in_shape, box, plan, src.head, runtime)
                rec = np.asarray(atk.fn(inp), np.float32)
                rec_px, _ = to_pixels(rec, preprocessing)
                correct = judge(rec).argmax(1) == y_cand
                entry["attacks"][name] = summarise(orig_px, rec_px, data_range, correct, is_member, plan)
                pictures[p.name].append((f"{variant} {name}", rec_px[show]))
                a = entry["attacks"][name]
                log(f"{variant} @ {p.name} {name}: PSNR {a['psnr']['mean']:.2f} dB"
                    + (f", SSIM {a['ssim']['mean']:.3f}" if "ssim" in a else ""))
            result["variants"][variant][p.name] = entry
    result["judge_accuracy_on_originals"] = float((judge(x_cand).argmax(1) == y_cand).mean())
    result["candidates"] = {"members": int(is_member.sum()), "nonmembers": int((~is_member).sum())}
    result["attacker_pool"] = int(len(x_pool))
    result["plan"] = plan.to_json()
    return result, pictures
