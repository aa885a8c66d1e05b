"""Device placement without a GPU: every trainer and every defense takes its training steps on the ``meta``
device, where any tensor left on the CPU raises ("... is not on the expected device") and any host read in a
step (``.item()``, ``float()``, a Python branch on a tensor) raises too. The loops' one read per epoch
(``engine.host_read``) is stubbed. Tests marked ``gpu`` run the same steps on CUDA where it exists."""

import dataclasses

import pytest
import torch
from torch import nn

from edgeprune.recipe import DefenseConfig, TrainConfig
from edgeprune.runtime import Runtime, cuda_available

META = Runtime("meta")
DEFENSES = ["none", "kl", "advreg", "relaxloss", "dpsgd", "dmp", "distill-reg"]


@pytest.fixture
def reads(monkeypatch):
    """Count the engine's host reads (one per epoch) and answer them without touching the device."""
    from edgeprune import engine

    calls = []

    def fake(t):
        calls.append(tuple(t.shape))
        return [0.0] * t.shape[0] if t.dim() else 0.0

    monkeypatch.setattr(engine, "host_read", fake)
    return calls


def _mlp(classes=4):
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, classes))


def _conv(classes=4):
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, classes))


def _data(shape, n=24, device="meta"):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, *shape, generator=g).to(device), torch.randint(0, 4, (n,), generator=g).to(device)


CFG = TrainConfig(epochs=2, batch_size=8, label_smoothing=0.1)


@pytest.mark.parametrize("name", DEFENSES)
def test_every_defense_steps_on_the_device(name, reads):
    from edgeprune.defend import build
    from edgeprune.engine import fit

    model = _mlp().to("meta")
    teacher = _mlp().to("meta")
    x, y = _data((12,))
    reference = _data((12,), n=16)
    defense = build(DefenseConfig(name=name), reference=reference, teacher=teacher, seed=1)
    history = fit(model, x, y, CFG, seed=0, defense=defense, runtime=META)
    assert len(history) == CFG.epochs and len(reads) == CFG.epochs  # one host read per epoch, none per step
    assert all(p.device.type == "meta" for p in model.parameters())
    if name == "advreg":
        assert all(p.device.type == "meta" for p in defense.h.parameters())


def test_masks_crop_flip_and_loss_terms_step_on_the_device(reads):
    from edgeprune.engine import fit

    model = _conv().to("meta")
    x, y = _data((1, 8, 8))
    masks = {"0.weight": torch.ones(4, 1, 3, 3, device="meta")}
    cfg = dataclasses.replace(CFG, augment="crop-flip")

    def penalty(m, xb, yb, logits):
        return 1e-3 * m[0].weight.pow(2).sum()

    fit(model, x, y, cfg, seed=0, masks=masks, loss_terms=[penalty], runtime=META)
    assert len(reads) == cfg.epochs


def test_qat_steps_on_the_device(reads):
    from edgeprune.quant.qat import qat, quant_layers

    model = _mlp().to("meta")
    x, y = _data((12,))
    qat(model, x, y, CFG, {n: 8 for n in quant_layers(model)}, seed=0, runtime=META)
    assert len(reads) == CFG.epochs


def test_batched_strategy_steps_on_the_device(reads):
    from edgeprune.engine import fit_many

    models = [_conv().to("meta") for _ in range(2)]
    data = [_data((1, 8, 8)), _data((1, 8, 8))]  # BatchNorm: members of equal size step together
    fit_many(models, data, dataclasses.replace(CFG, augment="crop-flip"), [0, 1], runtime=META)
    assert reads == [(2,)] * CFG.epochs  # one read of both members' losses per epoch


def test_a_cpu_tensor_in_a_step_is_caught(reads):
    """The check itself: a loss term that mixes in a CPU tensor, or reads a value back, fails on meta."""
    from edgeprune.engine import fit

    x, y = _data((12,))
    with pytest.raises(RuntimeError, match="device"):
        fit(_mlp().to("meta"), x, y, CFG, seed=0, loss_terms=[lambda m, xb, yb, lg: (lg * torch.ones(4)).sum()],
            runtime=META)
    with pytest.raises(RuntimeError, match="meta"):
        fit(_mlp().to("meta"), x, y, CFG, seed=0, loss_terms=[lambda m, xb, yb, lg: lg.sum() * float(lg.sum())],
            runtime=META)


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_available(), reason="needs a CUDA device (none here)")
@pytest.mark.parametrize("name", DEFENSES)
def test_every_defense_trains_on_cuda_and_returns_to_the_cpu(name):
    from edgeprune.defend import build
    from edgeprune.engine import fit, predict_logits
    from edgeprune.runtime import resolve

    torch.manual_seed(0)
    model, teacher = _mlp(), _mlp()
    x, y = _data((12,), n=64, device="cpu")
    reference = _data((12,), n=32, device="cpu")
    defense = build(DefenseConfig(name=name), reference=reference, teacher=teacher, seed=1)
    history = fit(model, x, y, CFG, seed=0, defense=defense, runtime=resolve("cuda"))
    assert len(history) == CFG.epochs and all(h == h for h in history)
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert predict_logits(model, x).shape == (64, 4)
