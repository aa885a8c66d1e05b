"""SAMIA (Yuan & Zhang, USENIX Security '22): the self-attention attack built against pruned models.

Each class c becomes a token [softmax_c, sensitivity_c, onehot_c]; a small transformer encoder reads the
tokens and predicts member / non-member. It is trained on shadow models that went through the same
pruning (and quantization) as the target. Written here because no maintained library packages it.
"""

from __future__ import annotations

import numpy as np

from edgeprune.attack.base import AttackInputs, register
from edgeprune.attack.nn import onehot
from edgeprune.attack.signals import Signals

MAX_TOKENS = 16


def tokens(s: Signals, max_tokens: int = MAX_TOKENS) -> np.ndarray:
    """(N, T, 3) tokens [softmax_c, log1p(sensitivity_c), onehot_c].

    With many classes (Purchase-100) only the ``max_tokens`` most probable classes become tokens, the
    true class always among them (it replaces the least probable one). This keeps the encoder's cost
    bounded on CPU; the tokens that are dropped carry almost no probability mass.
    """
    full = np.stack([s.probs, np.log1p(s.sens), onehot(s)], axis=-1).astype(np.float32)
    k = full.shape[1]
    if k <= max_tokens:
        return full
    order = np.argsort(-s.probs, axis=1, kind="stable")[:, :max_tokens].copy()
    n = np.arange(len(s.labels))
    has_true = (order == s.labels[:, None]).any(1)
    order[~has_true, -1] = s.labels[~has_true]
    return full[n[:, None], order]


def _model(dim: int = 32, heads: int = 4, layers: int = 2):
    import torch
    from torch import nn

    class SAMIA(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Linear(3, dim)
            layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=2 * dim, dropout=0.1, batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
            self.head = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, 1))

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            h = self.encoder(self.embed(t))
            return self.head(h.mean(1)).squeeze(-1)

    return SAMIA()


def fit(x_train: np.ndarray, y_train: np.ndarray, seed: int, runtime=None, epochs: int = 12,
        max_train: int = 6000, batch_size: int = 128):
    """The SAMIA classifier trained on ``runtime``'s device (the CPU by default): data moved there once, the
    shuffling drawn on the CPU (the same order on every device), no host sync in the steps."""
    import torch
    import torch.nn.functional as F

    from edgeprune.runtime import Runtime

    rt = runtime or Runtime.cpu()
    dev = rt.torch_device()
    rng = np.random.default_rng(seed)
    if len(x_train) > max_train:  # balanced subsample keeps training time bounded on 2 cores
        keep = rng.choice(len(x_train), max_train, replace=False)
        x_train, y_train = x_train[keep], y_train[keep]
    torch.manual_seed(seed)
    model = _model().to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    xt = torch.from_numpy(x_train).to(dev)
    yt = torch.from_numpy(y_train.astype(np.float32)).to(dev)
    gen = torch.Generator().manual_seed(seed)
    steps = epochs * max(1, (len(xt) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(xt), generator=gen).to(dev)
        for i in range(0, len(xt), batch_size):
            idx = order[i : i + batch_size]
            with rt.autocast():
                logits = model(xt[idx])
            loss = F.binary_cross_entropy_with_logits(logits.float(), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


def score(model, x_test: np.ndarray, runtime=None) -> np.ndarray:
    import torch

    from edgeprune.runtime import Runtime

    rt = runtime or Runtime.cpu()
    with torch.no_grad(), rt.autocast():
        xs = torch.from_numpy(x_test).to(rt.torch_device())
        out = torch.cat([model(xs[i : i + 1024]).float() for i in range(0, len(xs), 1024)])
    return out.cpu().numpy()


def train_and_score(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, seed: int, runtime=None,
                    epochs: int = 12, max_train: int = 6000, batch_size: int = 128) -> np.ndarray:
    return score(fit(x_train, y_train, seed, runtime, epochs, max_train, batch_size), x_test, runtime)


@register("samia", needs=("shadows", "sensitivity"), threshold=0.0)  # scores are logits
def samia(inp: AttackInputs) -> np.ndarray:
    """SAMIA: transformer over per-class [softmax, sensitivity, label] tokens, trained on shadows"""
    xs = np.concatenate([tokens(s.target) for s in inp.shadows])
    ys = np.concatenate([s.is_in for s in inp.shadows])
    return train_and_score(xs, ys, tokens(inp.target), inp.seed, inp.runtime)
