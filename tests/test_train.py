import torch

from edgeprune.models import build_model
from edgeprune.recipe import TrainConfig
from edgeprune.train import accuracy, predict_logits, train


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 10, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    return x, y


def test_training_learns_and_is_deterministic():
    x, y = _data()
    out = []
    for _ in range(2):
        torch.manual_seed(0)
        m = build_model("mlp", (10,), 3)
        hist = train(m, x, y, TrainConfig(epochs=15, batch_size=32, lr=3e-3), seed=5)
        out.append((hist, m.state_dict()))
    assert out[0][0] == out[1][0]
    assert all(torch.equal(out[0][1][k], out[1][1][k]) for k in out[0][1])
    assert out[0][0][-1] < out[0][0][0] / 3
    assert accuracy(predict_logits(m, x), y) > 0.9


def test_sgd_and_extra_loss_terms_are_used():
    x, y = _data()
    torch.manual_seed(0)
    m = build_model("mlp", (10,), 3)
    calls = []

    def term(model, xb, yb, logits):
        calls.append(len(xb))
        return 0.0 * logits.sum()

    train(m, x, y, TrainConfig(epochs=2, batch_size=64, optimizer="sgd", lr=0.01), seed=0, loss_terms=[term])
    assert calls == [64] * 8
