import datetime

import pytest
import torch
from safetensors.torch import save_file

from edgeprune.errors import ShapeError, UnknownNameError, WeightsError
from edgeprune.models import MODELS, build_model, check_fits, count_macs, count_params, load_weights

ZOO = ["mlp", "lenet5", "vgg11", "vgg16", "resnet18", "resnet20", "resnet56", "mobilenetv2"]


def test_zoo_has_the_promised_models():
    assert set(ZOO) <= set(MODELS.names())


@pytest.mark.parametrize("name", ZOO)
@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 8, 8)])
def test_zoo_models_fit_cifar_and_digits(name, shape):
    torch.manual_seed(0)
    m = build_model(name, shape, 10)
    check_fits(m, shape, 10)
    assert count_params(m) > 0 and count_macs(m, shape) > 0


def test_resnet18_cifar_size_matches_the_reference_architecture():
    # CIFAR ResNet-18 (3x3 stem, no max-pool) has 11.17M parameters with 10 classes
    assert count_params(build_model("resnet18", (3, 32, 32), 10)) == 11_173_962
    assert count_params(build_model("resnet20", (3, 32, 32), 10)) == 272_474


def test_image_models_reject_tabular_inputs():
    with pytest.raises(ShapeError, match="image inputs"):
        build_model("resnet20", (600,), 100)


def test_check_fits_catches_wrong_class_count():
    m = build_model("mlp", (20,), 5)
    with pytest.raises(ShapeError, match="10 classes"):
        check_fits(m, (20,), 10)


def test_user_model_factory():
    m = build_model("torch.nn:Identity", (4,), 4)
    assert isinstance(m, torch.nn.Identity)
    with pytest.raises(UnknownNameError):
        build_model("no_such_module_xyz:f", (4,), 4)
    with pytest.raises(UnknownNameError):
        build_model("resnet1000", (3, 32, 32), 10)


def test_weights_roundtrip_safetensors_and_state_dict(tmp_path):
    a = build_model("mlp", (20,), 5)
    b = build_model("mlp", (20,), 5)
    save_file(a.state_dict(), str(tmp_path / "w.safetensors"))
    torch.save(a.state_dict(), tmp_path / "w.pt")
    x = torch.randn(3, 20)
    for f in ("w.safetensors", "w.pt"):
        load_weights(b, tmp_path / f)
        assert torch.equal(a(x), b(x))


def test_weights_errors(tmp_path):
    m = build_model("mlp", (20,), 5)
    with pytest.raises(WeightsError, match="not found"):
        load_weights(m, tmp_path / "missing.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(WeightsError, match="cannot read"):
        load_weights(m, tmp_path / "bad.safetensors")
    other = build_model("mlp", (30,), 5)
    save_file(other.state_dict(), str(tmp_path / "other.safetensors"))
    with pytest.raises(WeightsError, match="shape"):
        load_weights(m, tmp_path / "other.safetensors")


def test_pickled_objects_are_refused(tmp_path):
    torch.save({"net.1.weight": torch.zeros(1), "evil": datetime.date(2020, 1, 1)}, tmp_path / "evil.pt")
    with pytest.raises(WeightsError):
        load_weights(build_model("mlp", (20,), 5), tmp_path / "evil.pt")
