import copy
import json

import numpy as np
import pytest
import torch
from torch import nn

from edgeprune.export.onnx import export_onnx, verify_onnx
from edgeprune.models import build_model, count_params
from edgeprune.prune import schedule
from edgeprune.prune import structured as S
from edgeprune.recipe import PruneConfig, TrainConfig

ZOO = ["mlp", "lenet5", "vgg11", "vgg16", "resnet18", "resnet20", "resnet56", "mobilenetv2"]


def _shape(name):
    return (64,) if name == "mlp" else (3, 32, 32)


@pytest.mark.parametrize("name", ZOO)
@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.7])
def test_structured_pruning_of_every_zoo_model(tmp_path, name, sparsity):
    shape = _shape(name)
    torch.manual_seed(0)
    model = build_model(name, shape, 10).eval()
    before = {n: m.out_channels if isinstance(m, nn.Conv2d) else m.out_features
              for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    p0 = count_params(model)
    plan = S.make_plan(model, shape, sparsity)
    model.eval()
    x = torch.randn(3, *shape)
    assert model(x).shape == (3, 10)
    after = {n: m.out_channels if isinstance(m, nn.Conv2d) else m.out_features
             for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    changed = [n for n in before if after[n] != before[n]]
    assert changed, "nothing was pruned"
    classifier = set(S.output_layers(build_model(name, shape, 10), shape))
    for n in set(before) - classifier:  # every layer keeps the asked-for width, rounded to a multiple of 8
        assert after[n] == S.channels_to_keep(before[n], sparsity, 8), (n, before[n], after[n])
    assert count_params(model) < (1 - sparsity + 0.1) * p0
    # plan.json round trip: architecture + plan + weights == the pruned model
    plan = json.loads(json.dumps(plan))
    rebuilt = S.apply_plan(build_model(name, shape, 10), plan).eval()
    rebuilt.load_state_dict(model.state_dict())
    assert torch.equal(rebuilt(x), model(x))
    if sparsity == 0.5:
        path = export_onnx(model, shape, tmp_path / "m.onnx", dynamic_batch=False, batch=3)
        assert verify_onnx(model, path, x.numpy()).passed


@pytest.mark.parametrize("name, shape", [("lenet5", (1, 8, 8)), ("resnet20", (1, 8, 8))])
def test_high_sparsity_rounds_narrow_layers_to_round_to_instead_of_leaving_them_whole(name, shape):
    """At 0.8 a 16- or 32-channel layer keeps 3 / 6 channels, below round_to 8: it keeps 8 (Torch-Pruning's
    own rounding sent it to 0 and then left the layer whole, wider than at sparsity 0.5)."""
    widths = {}
    for sparsity in (0.5, 0.8):
        torch.manual_seed(0)
        model = build_model(name, shape, 10)
        S.make_plan(model, shape, sparsity)
        widths[sparsity] = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    first = "features.0" if name == "lenet5" else "conv1"  # LeNet-5's conv1 has 6 < 8 channels: left whole
    assert widths[0.8][first] == (6 if name == "lenet5" else 8)
    for n, w in widths[0.8].items():
        assert w <= widths[0.5][n], (n, w, widths[0.5][n])
        assert w == (6 if n == "features.0" else 8), (n, w)


def test_residual_channels_are_pruned_together():
    model = build_model("resnet20", (3, 32, 32), 10)
    S.make_plan(model, (3, 32, 32), 0.5)
    # the stem, every block's conv2 and the shortcut share the residual channels: all shrink to 8 / 16 / 32
    assert model.conv1.out_channels == 8 and model.layers[0][0].conv2.out_channels == 8
    assert model.layers[1][0].shortcut[0].out_channels == model.layers[1][0].conv2.out_channels == 16
    assert model.fc.in_features == 32 and model.fc.out_features == 10


class Gate(nn.Module):
    """A custom layer with a per-channel parameter: edgeprune learns to prune it from a plug-in."""

    def __init__(self, c):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(c))

    def forward(self, x):
        return x * self.scale.view(1, -1, 1, 1)


class Odd(nn.Module):
    """Grouped conv, a concat and a custom module in one user model."""

    def __init__(self, in_shape=(3, 16, 16), num_classes=5):
        super().__init__()
        self.a = nn.Conv2d(3, 16, 3, padding=1)
        self.b = nn.Conv2d(3, 16, 3, padding=1)
        self.gate = Gate(32)
        self.grouped = nn.Conv2d(32, 32, 3, padding=1, groups=4)
        self.head = nn.Conv2d(32, 24, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(24, num_classes)

    def forward(self, x):
        y = torch.cat([self.a(x), self.b(x)], 1)
        y = torch.relu(self.grouped(self.gate(y)))
        return self.fc(self.pool(torch.relu(self.head(y))).flatten(1))


def _gate_pruner():
    import torch_pruning as tp

    class GatePruner(tp.pruner.function.BasePruningFunc):
        def prune_out_channels(self, layer, idxs):
            keep = [i for i in range(layer.scale.shape[0]) if i not in set(idxs)]
            layer.scale = nn.Parameter(layer.scale.data[keep].clone())
            return layer

        prune_in_channels = prune_out_channels

        def get_out_channels(self, layer):
            return layer.scale.shape[0]

        get_in_channels = get_out_channels

    return GatePruner()


def test_user_model_with_grouped_conv_concat_and_custom_layer():
    S.register_pruner(Gate, _gate_pruner())
    try:
        torch.manual_seed(0)
        m = Odd().eval()
        x = torch.randn(2, 3, 16, 16)
        p0 = count_params(m)
        plan = S.make_plan(m, (3, 16, 16), 0.5, round_to=4)
        assert m(x).shape == (2, 5) and count_params(m) < 0.6 * p0
        assert m.gate.scale.shape[0] == m.a.out_channels + m.b.out_channels == m.grouped.in_channels
        assert m.grouped.out_channels % m.grouped.groups == 0
        rebuilt = S.apply_plan(Odd(), json.loads(json.dumps(plan))).eval()
        rebuilt.load_state_dict(m.state_dict())
        assert torch.equal(rebuilt(x), m(x))
        groups, unhandled = S.inspect_groups(Odd(), (3, 16, 16))
        assert groups and "fc" in unhandled
    finally:
        S.CUSTOM_PRUNERS.pop(Gate, None)
    # without the plug-in the custom layer is reported as unhandled
    _, unhandled = S.inspect_groups(Odd(), (3, 16, 16))
    assert "register_pruner" in unhandled["gate"]


@pytest.mark.parametrize("criterion", ["l1", "l2", "bn-scale", "taylor", "random"])
def test_criteria(criterion):
    torch.manual_seed(0)
    m = build_model("resnet20", (3, 32, 32), 10)
    batches = [(torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,)))]
    plan = S.make_plan(m, (3, 32, 32), 0.5, criterion=criterion, batches=batches)
    assert plan["criterion"] == criterion and plan["ops"]
    kept = {op["module"]: op["idxs"] for op in plan["ops"] if op["fn"] == "prune_out_channels"}
    if criterion == "random":
        m2 = build_model("resnet20", (3, 32, 32), 10)
        torch.manual_seed(0)
        l1 = S.make_plan(m2, (3, 32, 32), 0.5, criterion="l1")
        assert kept != {op["module"]: op["idxs"] for op in l1["ops"] if op["fn"] == "prune_out_channels"}


def test_global_ranking_prunes_layers_unevenly():
    torch.manual_seed(0)
    per_layer, glob = build_model("vgg11", (3, 32, 32), 10), build_model("vgg11", (3, 32, 32), 10)
    glob.load_state_dict(per_layer.state_dict())
    with torch.no_grad():
        for m in (per_layer, glob):
            m.features[0].weight.mul_(100.0)  # the first layer's channels all look important
    S.make_plan(per_layer, (3, 32, 32), 0.5)
    S.make_plan(glob, (3, 32, 32), 0.5, global_ranking=True)
    convs = lambda m: [c.out_channels for c in m.features if isinstance(c, nn.Conv2d)]  # noqa: E731
    assert convs(per_layer) == [S.channels_to_keep(c, 0.5, 8) for c in (64, 128, 256, 256, 512, 512, 512, 512)]
    assert convs(glob) != convs(per_layer)


@pytest.mark.parametrize("method", schedule.METHODS)
@pytest.mark.parametrize("sched", schedule.SCHEDULES)
def test_every_method_and_schedule_replays(method, sched):
    torch.manual_seed(0)
    x, y = torch.randn(256, 64), torch.randint(0, 10, (256,))
    m = build_model("mlp", (64,), 10)
    cfg = PruneConfig(method=method, sparsity=0.5, schedule=sched, steps=2, block=16)
    plan, masks = schedule.run(m, (64,), x, y, cfg, TrainConfig(epochs=2, batch_size=64), 0)
    plan = json.loads(json.dumps(plan))
    assert plan["schedule"] == sched and plan["method"] == method
    r = S.apply_plan(build_model("mlp", (64,), 10), plan)
    r.load_state_dict(m.state_dict())
    assert torch.equal(r(x), m(x))
    if method == "structured":
        assert count_params(m) < 0.5 * count_params(build_model("mlp", (64,), 10)) and not masks
    else:
        params = dict(m.named_parameters())
        assert "net.5.weight" not in masks  # the classifier is never masked
        zero = sum(int((params[k] == 0).sum()) for k in masks) / sum(v.numel() for v in masks.values())
        assert abs(zero - 0.5) < 0.02


def test_cubic_schedule():
    assert schedule.cubic(0, 10, 0.8) == 0.0 and schedule.cubic(10, 10, 0.8) == pytest.approx(0.8)
    assert schedule.cubic(5, 10, 0.8) == pytest.approx(0.8 * (1 - 0.5**3))


def test_admm_pulls_weights_towards_the_sparse_set():
    torch.manual_seed(0)
    x, y = torch.randn(256, 64), torch.randint(0, 10, (256,))
    base = build_model("mlp", (64,), 10)
    one = copy.deepcopy(base)
    adm = copy.deepcopy(base)
    # before hard pruning, ADMM has moved the weights that will be cut towards zero: less is lost by the cut
    from edgeprune.prune.masks import unstructured

    schedule._admm(adm, x, y, TrainConfig(epochs=6, batch_size=64), 0,
                   lambda: unstructured(adm, 0.7, exclude=["net.5"]), rho=5e-2)
    for model in (one, adm):
        masks = unstructured(model, 0.7, exclude=["net.5"])
        params = dict(model.named_parameters())
        cut = sum(float(params[k].detach()[~m].pow(2).sum()) for k, m in masks.items())
        total = sum(float(params[k].detach().pow(2).sum()) for k in masks)
        model.cut_share = cut / total
    assert adm.cut_share < one.cut_share


def test_prune_command_and_plan_replay(tmp_path):
    from typer.testing import CliRunner

    from edgeprune.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["prune", "lenet5", "--data", "digits", "--method", "structured", "--sparsity", "0.5",
                              "--epochs", "2", "--finetune-epochs", "1", "-o", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    assert "ONNX verified: True" in res.output
    plan = tmp_path / "a" / "plan.json"
    res = runner.invoke(app, ["prune", "lenet5", "--data", "digits", "--plan", str(plan), "--epochs", "2",
                              "--finetune-epochs", "1", "-o", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    a = json.loads(plan.read_text())
    b = json.loads((tmp_path / "b" / "plan.json").read_text())
    assert a["ops"] == b["ops"]
    for args, match in ((["--method", "magic"], "unknown pruning method"), (["--schedule", "weekly"], "unknown schedule"),
                        (["--criterion", "vibes"], "unknown importance criterion"),
                        (["--plan", str(tmp_path / "none.json")], "plan file not found")):
        res = runner.invoke(app, ["prune", "lenet5", "--data", "digits", *args, "-o", str(tmp_path / "c")])
        assert res.exit_code == 2 and match in res.output and "Traceback" not in res.output, res.output


def test_block_and_two_four_through_compress(tmp_path):
    import yaml
    from typer.testing import CliRunner

    from edgeprune.cli import app

    (tmp_path / "r.yaml").write_text(yaml.safe_dump({
        "train": {"epochs": 2}, "finetune": {"epochs": 2}, "quant": {"mode": "none"},
        "bench": {"batches": [1], "warmup_s": 0.0, "duration_s": 0.05, "min_runs": 3}}))
    for method in ("block", "2:4"):
        out = tmp_path / method.replace(":", "_")
        res = CliRunner().invoke(app, ["compress", "mlp", "--data", "purchase-synth:2000", "--method", method,
                                       "--recipe", str(tmp_path / "r.yaml"), "-o", str(out)])
        assert res.exit_code == 0, res.output
        from safetensors.torch import load_file

        # after fine-tuning (net.3 is 256 x 512: it tiles into 32 x 32 blocks and groups of 4)
        w = load_file(str(out / "model.safetensors"))["net.3.weight"].numpy()
        if method == "2:4":
            assert ((w.reshape(w.shape[0], -1, 4) != 0).sum(-1) <= 2).all()
        else:
            tiles = w.reshape(w.shape[0] // 32, 32, w.shape[1] // 32, 32)
            nz = np.abs(tiles).sum((1, 3)) != 0
            assert abs(1 - nz.mean() - 0.5) < 0.02
