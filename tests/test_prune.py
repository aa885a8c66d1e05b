import pytest
import torch
from torch import nn

from edgeprune.models import build_model, count_params
from edgeprune.models.zoo import MLP
from edgeprune.prune.graph import find_groups
from edgeprune.prune.structured import apply_plan, channels_to_keep, make_plan
from edgeprune.train import apply_masks

ZOO = ["mlp", "lenet5", "vgg11", "vgg16", "resnet18", "resnet20", "resnet56", "mobilenetv2"]


def _shape(name):
    return (600,) if name == "mlp" else (3, 32, 32)


@pytest.mark.parametrize("name", ZOO)
def test_pruning_shrinks_every_zoo_model_and_replays(name):
    shape = _shape(name)
    torch.manual_seed(0)
    model = build_model(name, shape, 10).eval()
    before = count_params(model)
    plan = make_plan(model, shape, 0.5)
    pruned = apply_plan(model, plan).eval()
    x = torch.randn(3, *shape)
    assert pruned(x).shape == (3, 10)
    assert count_params(pruned) < 0.75 * before
    for g in plan["groups"]:
        assert len(g["kept"]) == channels_to_keep(g["channels"], 0.5, 8)
    # rebuild from architecture + plan + weights: identical outputs
    rebuilt = apply_plan(build_model(name, shape, 10), plan).eval()
    rebuilt.load_state_dict(pruned.state_dict())
    assert torch.equal(rebuilt(x), pruned(x))


def test_l1_keeps_the_largest_channels():
    model = MLP((10,), 3, hidden=(16,))
    with torch.no_grad():
        w = model.net[1].weight
        w.zero_()
        for i in range(16):
            w[i].fill_(float(i))  # channel i has L1 norm 10*i
    plan = make_plan(model, (10,), 0.5, round_to=1)
    assert plan["groups"][0]["kept"] == list(range(8, 16))


def test_removed_channels_do_not_change_the_output():
    """Channels whose outgoing weights are zero can be cut without changing the function."""
    torch.manual_seed(0)
    model = MLP((10,), 3, hidden=(16,)).eval()
    with torch.no_grad():
        model.net[1].weight[:8].mul_(1e-3)  # small L1 -> pruned
        model.net[3].weight[:, :8].zero_()  # and they contribute nothing downstream
    x = torch.randn(5, 10)
    ref = model(x)
    apply_plan(model, make_plan(model, (10,), 0.5, round_to=1))
    assert torch.allclose(model(x), ref, atol=1e-6)


def test_coupled_channels_are_reported():
    report = find_groups(build_model("resnet20", (3, 32, 32), 10), (3, 32, 32))
    assert "fc" in report.skipped and "logits" in report.skipped["fc"]
    assert any("coupled" in why for why in report.skipped.values())
    assert {g.producer for g in report.groups} == {f"layers.{s}.{b}.conv1" for s in range(3) for b in range(3)}


def test_depthwise_and_flatten_paths():
    groups = {g.producer: g for g in find_groups(build_model("mobilenetv2", (3, 32, 32), 10), (3, 32, 32)).groups}
    g = groups["blocks.1.conv1"]
    assert g.depthwise == ["blocks.1.conv2"] and g.norms == ["blocks.1.bn1", "blocks.1.bn2"]
    assert g.consumer == "blocks.1.conv3"
    lenet = {g.producer: g for g in find_groups(build_model("lenet5", (1, 8, 8), 10), (1, 8, 8)).groups}
    assert lenet["features.3"].flatten_factor == 4 and lenet["features.3"].consumer == "classifier.1"


def test_round_to():
    assert channels_to_keep(64, 0.5, 8) == 32
    assert channels_to_keep(100, 0.5, 8) == 56
    assert channels_to_keep(6, 0.5, 8) == 3  # layers narrower than round_to are not rounded
    assert channels_to_keep(64, 0.99, 8) == 8


def test_masks_keep_pruned_weights_zero_during_training():
    from edgeprune.recipe import TrainConfig
    from edgeprune.train import train

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    mask = (torch.rand(16, 8) > 0.5).float()
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    train(model, x, y, TrainConfig(epochs=3, batch_size=16), seed=0, masks={"0.weight": mask})
    assert torch.all(model[0].weight[mask == 0] == 0)
    assert torch.any(model[0].weight[mask == 1] != 0)
    apply_masks(model, {"0.weight": mask})
