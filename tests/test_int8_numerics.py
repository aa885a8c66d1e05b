"""int8 numerics that do not depend on the CPU: CPU features pick the artifact, the AVX2 U8S8 kernels'
int16 pair saturation is emulated so that a VNNI machine checks what an AVX2-only machine computes, and
every bound is in units of the model's own output quantization step."""

import numpy as np
import pytest
import torch

from edgeprune.cpu import describe, parse_cpuinfo
from edgeprune.errors import ConfigError
from edgeprune.export.onnx import export_onnx
from edgeprune.models import build_model
from edgeprune.quant.numerics import compare, pair_saturated_matmul
from edgeprune.quant.ptq import quantize_int8
from edgeprune.quant.targets import TARGETS

STEPS = 2.0  # a few output quantization steps: rounding differences between exact int32 engines

EPYC = describe("x86_64", "AMD EPYC 7763 64-Core Processor",
                {"fpu", "sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c", "bmi2"})
XEON = describe("x86_64", "Intel(R) Xeon(R) Platinum 8480+",
                {"avx", "avx2", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "amx_int8", "amx_tile"})
SKYLAKE = describe("x86_64", "Intel(R) Xeon(R) Gold 6148", {"avx", "avx2", "avx512f", "avx512bw", "avx512vl"})
ORIN = describe("aarch64", None, {"fp", "asimd", "asimddp", "atomics", "asimdhp"})


def test_cpu_features_choose_the_kernels_and_the_artifact():
    model, flags = parse_cpuinfo("processor\t: 0\nmodel name\t: AMD EPYC 7763\nflags\t\t: fpu avx avx2 fma\n\n"
                                 "processor\t: 1\nmodel name\t: other\nflags\t\t: avx512_vnni\n")
    assert model == "AMD EPYC 7763" and flags == {"fpu", "avx", "avx2", "fma"}
    assert parse_cpuinfo("processor\t: 0\nFeatures\t: fp asimd asimddp i8mm\n")[1] == {"fp", "asimd", "asimddp", "i8mm"}
    ort = TARGETS.get("ort-cpu")
    assert EPYC["u8s8_saturates"] and "saturate" in EPYC["int8_kernels"] and "avx512_vnni" not in EPYC["features"]
    assert SKYLAKE["u8s8_saturates"]  # AVX-512 without VNNI still pairs in int16
    assert XEON["u8s8_saturates"] is False and ORIN["u8s8_saturates"] is False
    assert ort.settings(cpu=EPYC)["reduce_range"] and ort.settings(cpu=SKYLAKE)["reduce_range"]
    assert not ort.settings(cpu=XEON)["reduce_range"] and not ort.settings(cpu=ORIN)["reduce_range"]
    unknown = describe("x86_64", None, None)
    assert unknown["features"] is None and ort.settings(cpu=unknown)["reduce_range"]  # the safe choice
    assert ort.settings(reduce_range=False, cpu=EPYC)["reduce_range"] is False  # the recipe overrides
    trt = TARGETS.get("tensorrt").settings(cpu=EPYC)
    assert trt["activations"] == "int8" and trt["reduce_range"] is False  # TensorRT keeps the full 8-bit range
    with pytest.raises(ConfigError, match="full 8-bit"):
        TARGETS.get("tensorrt").settings(reduce_range=True)


def test_pair_saturated_matmul_is_vpmaddubsw_arithmetic():
    u = np.array([[255, 255, 255, 0, 10, 20]])
    w = np.array([[127, 127, 127, 127, -3, 5], [-128, -128, 1, 1, 0, 0]])
    # pairs: (255*127 + 255*127 -> 32767) + (255*127 + 0) + (-30 + 100);  (-65280 -> -32768) + 255 + 0
    assert pair_saturated_matmul(u, w).tolist() == [[32767 + 32385 + 70, -32768 + 255]]
    exact = u @ w.T
    assert exact.tolist() == [[64770 + 32385 + 70, -65280 + 255]]
    rng = np.random.default_rng(0)  # 7-bit weights never saturate: 255 * 64 * 2 < 32767
    u, w = rng.integers(0, 256, (5, 33)), rng.integers(-64, 65, (4, 33))
    assert np.array_equal(pair_saturated_matmul(u, w), u @ w.T)


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    """quantized(name, activations, reduce_range) -> (QDQ path, inputs); each model exported once."""
    tmp = tmp_path_factory.mktemp("int8")
    shapes = {"lenet5": (1, 8, 8), "mlp": (64,)}
    made = {}

    def get(name, activations, reduce_range):
        if name not in made:
            torch.manual_seed(0)
            model = build_model(name, shapes[name], 10).eval()
            x = np.random.default_rng(0).normal(size=(32, *shapes[name])).astype(np.float32)
            made[name] = (export_onnx(model, shapes[name], tmp / f"{name}.onnx"), x)
        src, x = made[name]
        key = (name, activations, reduce_range)
        if key not in made:
            made[key] = quantize_int8(src, tmp / f"{name}-{activations}-{reduce_range}.onnx", x,
                                      activations=activations, reduce_range=reduce_range)
        return made[key], x

    return get


@pytest.mark.parametrize("name", ["lenet5", "mlp"])
@pytest.mark.parametrize("activations", ["uint8", "int8"])
def test_on_an_avx2_cpu_the_shipped_choice_stays_within_bounds_and_full_range_would_not(quantized, name, activations):
    shipped = TARGETS.get("ort-cpu").settings(activations, None, cpu=EPYC)
    assert shipped["reduce_range"]
    q, x = quantized(name, activations, shipped["reduce_range"])
    ok = compare(q, x, "emulated-avx2", "reference")
    assert ok["max_abs_diff_steps"] <= STEPS, ok
    full, _ = quantized(name, activations, False)
    bad = compare(full, x, "emulated-avx2", "reference")
    assert bad["max_abs_diff_steps"] > 3 * STEPS, bad  # saturated pair sums: what the AMD EPYC computed
    # and the emulation is faithful where nothing saturates: no difference but rounding
    assert compare(q, x, "emulated-avx2", "cpu")["max_abs_diff_steps"] <= STEPS


@pytest.mark.parametrize("activations", ["uint8", "int8"])
def test_this_cpus_kernels_compute_the_reference_for_the_artifact_made_for_it(quantized, activations):
    shipped = TARGETS.get("ort-cpu").settings(activations)  # auto: from this machine's CPU features
    q, x = quantized("lenet5", activations, shipped["reduce_range"])
    r = compare(q, x, "cpu", "reference")
    assert r["max_abs_diff_steps"] <= STEPS, r


def test_kernels_that_disagree_with_the_reference_are_reported_in_one_line(quantized):
    from edgeprune.quant.targets import kernels_check

    full, x = quantized("mlp", "int8", False)  # full range S8S8: the emulated AVX2 kernels saturate
    bad = kernels_check(full, x, numerics="emulated-avx2")
    assert bad["top1_agreement_with_reference"] < 0.99 and bad["max_abs_diff_steps"] > 3 * STEPS
    assert "disagree with reference QDQ on top-1" in bad["warning"] and "\n" not in bad["warning"]
    ok = kernels_check(quantized("mlp", "int8", True)[0], x, numerics="emulated-avx2")
    assert ok["warning"] is None and ok["top1_agreement_with_reference"] == 1.0
