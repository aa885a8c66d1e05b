import pytest
import torch
from torch import nn

from edgeprune.errors import ConfigError
from edgeprune.models import build_model
from edgeprune.prune import masks as M
from edgeprune.train import apply_masks


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(8, 32, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(32 * 4 * 4, 64),
                         nn.ReLU(), nn.Linear(64, 10))


def test_unstructured_global_and_layer():
    m = _model()
    g = M.unstructured(m, 0.6)
    total = sum(x.numel() for x in g.values())
    assert abs((total - sum(int(x.sum()) for x in g.values())) / total - 0.6) < 1e-3
    for x in M.unstructured(m, 0.6, scope="layer").values():
        assert abs(1 - x.float().mean().item() - 0.6) < 0.01
    # the kept weights are the largest: every pruned |w| <= every kept |w| (global)
    ws = dict(m.named_parameters())
    pruned = torch.cat([ws[n].detach().abs()[~x] for n, x in g.items()])
    kept = torch.cat([ws[n].detach().abs()[x] for n, x in g.items()])
    assert pruned.max() <= kept.min()


def test_two_four_has_the_exact_pattern():
    m = _model()
    masks, skipped = M.n_m(m, 2, 4)
    assert not skipped
    conv = masks["0.weight"]  # [32, 8, 3, 3]: groups of 4 input channels at each (out, kh, kw)
    groups = conv.permute(0, 2, 3, 1).reshape(-1, 4)
    assert torch.all(groups.sum(1) == 2)
    lin = masks["3.weight"].reshape(-1, 4)
    assert torch.all(lin.sum(1) == 2)
    # the 2 kept of each group are the 2 largest
    w = dict(m.named_parameters())["3.weight"].detach().abs().reshape(-1, 4)
    kept_min = torch.where(lin, w, torch.inf).min(1).values
    dropped_max = torch.where(~lin, w, -torch.inf).max(1).values
    assert torch.all(kept_min >= dropped_max)
    odd = nn.Sequential(nn.Linear(6, 4))
    assert "not a multiple of 4" in M.n_m(odd)[1]["0.weight"]


@pytest.mark.parametrize("size", [4, 8, 16])
def test_block_masks_zero_whole_blocks(size):
    m = _model()
    masks, skipped = M.block(m, 0.75, size=size)
    for mask in masks.values():
        v = mask.reshape(mask.shape[0], -1)
        r, c = v.shape[0] // size, v.shape[1] // size
        tiles = v.reshape(r, size, c, size).permute(0, 2, 1, 3).reshape(r, c, -1)
        per_block = tiles.float().mean(-1)
        assert torch.all((per_block == 0) | (per_block == 1))  # no partial blocks
        assert abs(1 - per_block.mean().item() - 0.75) <= 1 / (r * c) + 1e-9
    if size == 16:
        assert "5.weight" in skipped  # the 10-way classifier does not tile


def test_masks_roundtrip_and_stay_zero_in_training():
    from edgeprune.recipe import TrainConfig
    from edgeprune.train import train

    m = build_model("mlp", (32,), 4)
    masks, _ = M.block(m, 0.5, size=16, exclude=["net.5"])
    for mask in masks.values():
        assert torch.equal(M.decode(M.encode(mask)), mask)
    masks = {k: v.float() for k, v in masks.items()}
    x, y = torch.randn(128, 32), torch.randint(0, 4, (128,))
    train(m, x, y, TrainConfig(epochs=2, batch_size=32), seed=0, masks=masks)
    params = dict(m.named_parameters())
    for name, mask in masks.items():
        assert torch.all(params[name][mask == 0] == 0)
    apply_masks(m, masks)
    assert 0.45 < M.density({k: v.bool() for k, v in masks.items()}) < 0.55


def test_bad_arguments():
    m = _model()
    with pytest.raises(ConfigError):
        M.unstructured(m, 1.0)
    with pytest.raises(ConfigError):
        M.block(m, 0.5, size=24)
    with pytest.raises(ConfigError):
        M.n_m(m, 4, 4)


def test_inspect_command_lists_groups_and_reasons():
    from typer.testing import CliRunner

    from edgeprune.cli import app

    res = CliRunner().invoke(app, ["inspect", "mobilenetv2", "--data", "cifar-synth:200"])
    assert res.exit_code == 0, res.output
    assert "blocks.1.conv1" in res.output and "blocks.1.conv2" in res.output  # expand -> depthwise group
    assert "model's outputs" in res.output and "prunable channel groups" in res.output
    res = CliRunner().invoke(app, ["inspect", "resnet20", "--data", "purchase-synth:2000"])
    assert res.exit_code == 2 and "image inputs" in res.output
