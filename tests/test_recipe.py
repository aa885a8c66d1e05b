import pytest

from edgeprune.errors import ConfigError
from edgeprune.recipe import Recipe, dump_recipe, from_dict, load_recipe


def test_recipe_roundtrips_through_yaml(tmp_path):
    r = Recipe(model="resnet20", data="digits", seed=3)
    r.prune.sparsity = 0.7
    r.bench.batches = [1, 8]
    p = tmp_path / "r.yaml"
    p.write_text(dump_recipe(r))
    back = load_recipe(p)
    assert back == r and back.hash() == r.hash()


def test_unknown_keys_are_errors():
    with pytest.raises(ConfigError, match="unknown key.*sparsty"):
        from_dict(Recipe, {"prune": {"sparsty": 0.5}})


def test_wrong_types_and_values_are_errors(tmp_path):
    with pytest.raises(ConfigError, match="must be int"):
        from_dict(Recipe, {"seed": "zero"})
    with pytest.raises(ConfigError, match="sparsity"):
        from_dict(Recipe, {"prune": {"sparsity": 1.5}}).validate()
    p = tmp_path / "r.yaml"
    p.write_text("quant: {mode: int4}\n")
    with pytest.raises(ConfigError, match="int8, mixed or none"):
        load_recipe(p)


@pytest.mark.parametrize("name", ["mlp-purchase.yaml", "resnet20-digits.yaml", "mlp-private.yaml",
                                  "private-purchase.yaml", "private-location.yaml", "private-cifar10.yaml"])
def test_shipped_example_recipes_load(name):
    from pathlib import Path

    r = load_recipe(Path(__file__).resolve().parents[1] / "examples" / name)
    if name == "mlp-private.yaml":
        assert r.defense.name == "kl" and r.quant.mode == "mixed" and r.prune.criterion == "leakage"
    if name.startswith("private-"):  # issue 16's setting: structured 0.5 + int8, verified with 16 references
        assert (r.prune.method, r.prune.sparsity, r.quant.mode) == ("structured", 0.5, "int8")
        assert r.defense.name == "dmp" and r.audit.references >= 16 and r.audit.seeds >= 3
        assert r.finetune.epochs == 2 * r.train.epochs  # the student trains twice as long as its teacher
        # Location and CIFAR-10 (labelled reference data): half distillation, half the labels; purchase: DMP
        assert r.defense.hard_labels == (0.0 if name == "private-purchase.yaml" else 0.5)


def test_quant_reduce_range_is_auto_true_or_false(tmp_path):
    from edgeprune.pipeline import int8_settings

    assert Recipe().quant.reduce_range is None  # auto: from the CPU's features
    p = tmp_path / "r.yaml"
    p.write_text("quant: {reduce_range: true}\n")
    r = load_recipe(p)
    assert r.quant.reduce_range is True and int8_settings(r)["reduce_range"] is True
    assert int8_settings(r)["reduce_range_reason"] == "set in the recipe"
    r.quant.reduce_range = False
    assert int8_settings(r)["reduce_range"] is False
    p.write_text("quant: {reduce_range: sometimes}\n")
    with pytest.raises(ConfigError, match="reduce_range must be bool"):
        load_recipe(p)
