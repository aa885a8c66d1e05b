"""Privacy-aware mixed precision: per-layer weight bits (8 or 4) chosen to lower a leakage signal at a
size target, under an accuracy limit (in the spirit of Famili & Lao '23, quantization designed against
membership inference).

Everything is measured by the defender without the audit's non-members: accuracy on the defender's
reference data (held out from training), leakage as the loss attack's AUC between members and those
reference samples. Each layer is first probed alone at 4 bits; layers then go to 4 bits in order of how
much they lower leakage (then of accuracy cost), each kept only if accuracy stays within the limit, until
the average weight bits reach the target.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from edgeprune.progress import progress
from edgeprune.quant.qat import quant_layers, snap


@dataclass
class Probe:
    layer: str
    params: int
    accuracy: float
    leakage_auc: float


def _measure(model, bits, xm, ym, xr, yr) -> tuple[float, float]:
    import copy

    from sklearn.metrics import roc_auc_score

    from edgeprune.train import predict_logits

    m = copy.deepcopy(model)
    snap(m, bits)
    lm = F.cross_entropy(predict_logits(m, xm), ym, reduction="none")
    lr_logits = predict_logits(m, xr)
    lr = F.cross_entropy(lr_logits, yr, reduction="none")
    auc = roc_auc_score(np.r_[np.ones(len(lm)), np.zeros(len(lr))], -torch.cat([lm, lr]).numpy())
    return float((lr_logits.argmax(1) == yr).float().mean()), float(auc)


def average_bits(bits: dict[str, int], sizes: dict[str, int]) -> float:
    return sum(bits[k] * sizes[k] for k in bits) / max(sum(sizes.values()), 1)


def choose_bits(model, members, reference, target_bits: float, max_acc_drop: float, limit: int = 2000) -> dict:
    """Returns {"bits": {layer: 4|8}, "average_bits", "accuracy", "leakage_auc", baseline and probes}."""
    xm, ym = members[0][:limit], members[1][:limit]
    xr, yr = reference[0][:limit], reference[1][:limit]
    layers = quant_layers(model)
    sizes = {n: int(m.weight.numel()) for n, m in layers.items()}
    bits = {n: 8 for n in layers}
    acc0, leak0 = _measure(model, bits, xm, ym, xr, yr)
    probes = []
    acc, leak = acc0, leak0
    with progress() as bar:
        task = bar.add_task("mixed precision: probe layers", total=2 * len(layers))
        for name in layers:
            a, lk = _measure(model, {**bits, name: 4}, xm, ym, xr, yr)
            probes.append(Probe(name, sizes[name], a, lk))
            bar.advance(task)
        order = sorted(probes, key=lambda p: (p.leakage_auc - leak0, acc0 - p.accuracy, -p.params))
        for p in order:
            bar.advance(task)
            if average_bits(bits, sizes) <= target_bits:
                continue
            trial = {**bits, p.layer: 4}
            a, lk = _measure(model, trial, xm, ym, xr, yr)
            if acc0 - a <= max_acc_drop:
                bits, acc, leak = trial, a, lk
    avg = average_bits(bits, sizes)
    return {"bits": bits, "average_bits": avg, "target_bits": target_bits, "target_met": avg <= target_bits + 1e-9,
            "accuracy": acc, "leakage_auc": leak, "baseline_int8": {"accuracy": acc0, "leakage_auc": leak0},
            "max_acc_drop": max_acc_drop, "measured_on": "defender reference data (not the audit's non-members)",
            "probes": [asdict(p) for p in probes]}
