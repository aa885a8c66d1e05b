"""Attack classifiers, inversion and torch signals run on the Runtime they are handed. Without a GPU the
placement is checked on the ``meta`` device: one training step there raises on any CPU tensor mixed in
("Tensor on device meta is not on the expected device cpu"); nothing in the steps reads a value back."""

import numpy as np
import pytest
import torch
from torch import nn

from edgeprune.runtime import Runtime

META = Runtime("meta")


def _params_on(model, device: str) -> bool:
    return all(p.device.type == device for p in model.parameters())


def test_samia_training_step_runs_on_the_runtime_device():
    from edgeprune.attack.samia import fit

    rng = np.random.default_rng(0)
    x, y = rng.random((24, 10, 3), dtype=np.float32), rng.integers(0, 2, 24)
    model = fit(x, y, seed=0, runtime=META, epochs=1, batch_size=16)  # two steps, on meta
    assert _params_on(model, "meta")


def test_samia_on_the_cpu_is_unchanged_by_the_runtime():
    from edgeprune.attack.samia import train_and_score

    rng = np.random.default_rng(0)
    x, y = rng.random((64, 10, 3), dtype=np.float32), rng.integers(0, 2, 64)
    a = train_and_score(x, y, x[:8], seed=1, epochs=1)
    b = train_and_score(x, y, x[:8], seed=1, runtime=Runtime.cpu(), epochs=1)
    assert a.dtype == np.float32 and a.shape == (8,) and np.array_equal(a, b)


@pytest.mark.parametrize("feat,out", [((8, 4, 4), (3, 8, 8)), ((16,), (12,))])  # conv and MLP decoders
def test_inversion_decoder_training_step_runs_on_the_runtime_device(feat, out):
    from edgeprune.attack.inversion import InversionPlan, train_decoder

    rng = np.random.default_rng(0)
    x, f = rng.random((70, *out), dtype=np.float32), rng.random((70, *feat), dtype=np.float32)
    dec = train_decoder(x, f, InversionPlan(epochs=1, width=16), runtime=META)  # two steps (64 + 6)
    assert _params_on(dec, "meta")


def test_whitebox_inversion_runs_on_the_runtime_device():
    from edgeprune.attack.inversion import InversionPlan, whitebox_optimise

    torch.manual_seed(0)
    head = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
    for p in head.parameters():
        p.requires_grad_(False)
    f = np.random.default_rng(0).random((2, 4, 8, 8), dtype=np.float32)
    box = (np.full((3, 1, 1), -2.0, np.float32), np.full((3, 1, 1), 2.0, np.float32))
    x = whitebox_optimise(f, head, (3, 8, 8), box, InversionPlan(wb_steps=1), runtime=META)
    assert x.device.type == "meta" and tuple(x.shape) == (2, 3, 8, 8)
    assert _params_on(head, "cpu")  # the caller's head is copied, not moved


def test_whitebox_and_decoder_on_the_cpu_match_the_registered_attacks():
    from edgeprune.attack.base import ATTACKS
    from edgeprune.attack.inversion import InversionInputs, InversionPlan

    torch.manual_seed(0)
    head = nn.Sequential(nn.Flatten(), nn.Linear(12, 6))
    rng = np.random.default_rng(0)
    x = rng.random((40, 12), dtype=np.float32)
    with torch.no_grad():
        f = head(torch.from_numpy(x)).numpy()
    plan = InversionPlan(epochs=2, wb_steps=3, width=8)
    for name in ("inversion", "inversion-wb"):
        fn = ATTACKS.get(name).fn
        a = fn(InversionInputs(x, f, f[:5], (12,), None, plan, head))
        b = fn(InversionInputs(x, f, f[:5], (12,), None, plan, head, Runtime.cpu()))
        assert a.shape == (5, 12) and np.array_equal(a, b)


def test_torch_predictor_forward_runs_on_the_runtime_device():
    from edgeprune.attack.signals import forward_batches, torch_predictor

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    x = np.random.default_rng(0).random((9, 6), dtype=np.float32)
    out = forward_batches(model.to("meta"), x, 4, META)
    assert [tuple(t.shape) for t in out] == [(4, 3), (4, 3), (1, 3)] and all(t.device.type == "meta" for t in out)
    model = model.to_empty(device="cpu")
    torch.manual_seed(0)
    for m in model:
        if isinstance(m, nn.Linear):
            m.reset_parameters()
    pred = torch_predictor(model, "k", batch_size=4)
    with torch.no_grad():
        assert np.array_equal(pred.predict(x), model(torch.from_numpy(x)).numpy()) and pred.key == "k"


@pytest.mark.gpu
def test_on_cuda_the_attack_models_train_there_and_agree_with_the_cpu():
    from edgeprune.attack.inversion import InversionPlan, train_decoder
    from edgeprune.attack.samia import train_and_score
    from edgeprune.attack.signals import torch_predictor
    from edgeprune.runtime import resolve

    gpu = resolve("cuda")
    rng = np.random.default_rng(0)
    x, y = rng.random((256, 10, 3), dtype=np.float32), rng.integers(0, 2, 256)
    s = train_and_score(x, y, x[:32], seed=0, runtime=gpu, epochs=2)
    assert s.shape == (32,) and np.isfinite(s).all()
    dec = train_decoder(rng.random((70, 12), dtype=np.float32), rng.random((70, 16), dtype=np.float32),
                        InversionPlan(epochs=1, width=16), runtime=gpu)
    assert _params_on(dec, "cuda")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    xs = rng.random((9, 6), dtype=np.float32)
    pred = torch_predictor(model, "k", runtime=gpu)
    assert pred.key == "k-cuda" and _params_on(model, "cpu")
    np.testing.assert_allclose(pred.predict(xs), torch_predictor(model, "k").predict(xs), rtol=1e-4, atol=1e-5)
