"""The CPU that runs onnxruntime here: its model and the instruction-set features that choose its int8 kernels.

onnxruntime's MLAS picks its U8S8 int8 GEMM / convolution kernels from CPUID (lib/platform.cpp):
AVX2 and AVX-512 without VNNI multiply uint8 x int8 pairs with ``vpmaddubsw``, which saturates the sum of two
adjacent products to int16, so full-range weights (|w| up to 127) with large activations lose precision;
AVX-VNNI / AVX512-VNNI / AMX-INT8 accumulate in int32 (no saturation); on aarch64 the NEON kernels widen
(udot / sdot / i8mm accumulate in int32). onnxruntime's quantization docs recommend 7-bit weights
(``reduce_range``) where the kernels saturate. Read from /proc/cpuinfo (Linux x86-64 and aarch64); other
systems fall back to py-cpuinfo when it is installed, else the features are reported as unknown.
Standard library only, so that ``edgeprune --version --verbose`` stays fast.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

# the flags (as /proc/cpuinfo spells them) that choose onnxruntime's kernels
X86_FEATURES = ("sse4_1", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512dq", "avx512vl",
                "avx512_vnni", "avx_vnni", "avx_vnni_int8", "avx512_bf16", "avx512_fp16", "amx_tile",
                "amx_int8", "amx_bf16")
ARM_FEATURES = ("asimd", "asimddp", "i8mm", "sve", "sve2", "svei8mm", "bf16", "fphp", "asimdhp", "sme")
NON_SATURATING_X86 = ("avx512_vnni", "avx_vnni", "amx_int8")  # int32-accumulating U8S8 kernels


def _proc_cpuinfo() -> tuple[str | None, set[str] | None]:
    try:
        return parse_cpuinfo(Path("/proc/cpuinfo").read_text())
    except OSError:
        return None, None


def parse_cpuinfo(text: str) -> tuple[str | None, set[str] | None]:
    """(model name, flag set) from /proc/cpuinfo text (the first processor's)."""
    model, flags = None, None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and model is None:
            model = value.strip()
        elif key in ("flags", "features") and flags is None:  # x86: flags, aarch64: Features
            flags = set(value.split())
    return model, flags


def _py_cpuinfo() -> tuple[str | None, set[str] | None]:
    try:
        import cpuinfo  # py-cpuinfo, optional
    except ImportError:
        return None, None
    info = cpuinfo.get_cpu_info()
    return info.get("brand_raw"), set(info.get("flags", []))


def cpu_info() -> dict:
    """``{"model", "arch", "features", "features_source", "u8s8_saturates", "int8_kernels"}`` of this machine."""
    return dict(_cpu_info())


@functools.lru_cache(maxsize=1)
def _cpu_info() -> dict:
    model, flags = _proc_cpuinfo()
    source = "/proc/cpuinfo"
    if flags is None:
        model2, flags = _py_cpuinfo()
        model, source = model or model2, "py-cpuinfo"
    return describe(platform.machine().lower(), model, flags, source if flags is not None else None)


def describe(arch: str, model: str | None, flags: set[str] | None, source: str | None = None) -> dict:
    """The record for a CPU: features are the kernel-choosing subset of its flags, sorted (None: unknown)."""
    wanted = ARM_FEATURES if is_arm(arch) else X86_FEATURES
    features = None if flags is None else sorted(f for f in flags if f in wanted)
    sat = u8s8_saturates(arch, features)
    return {"model": model or platform.processor() or arch, "arch": arch, "features": features,
            "features_source": source, "u8s8_saturates": sat, "int8_kernels": int8_kernels(arch, features)}


def is_x86(arch: str) -> bool:
    return arch in ("x86_64", "amd64", "i386", "i686", "x86")


def is_arm(arch: str) -> bool:
    return arch in ("aarch64", "arm64") or arch.startswith("armv")


def u8s8_saturates(arch: str, features: list[str] | None) -> bool | None:
    """True where onnxruntime's U8S8 kernels sum product pairs in int16 (x86 without VNNI / AMX), False
    where they accumulate in int32, None when the CPU's features are unknown."""
    if is_arm(arch):
        return False
    if not is_x86(arch) or features is None:
        return None
    return not any(f in features for f in NON_SATURATING_X86)


def int8_kernels(arch: str, features: list[str] | None) -> str:
    """Which onnxruntime U8S8 kernel family this CPU gets, in words (for manifests and bug reports)."""
    if features is None:
        return "unknown (CPU features not readable here)"
    f = set(features)
    if is_arm(arch):
        if "i8mm" in f:
            return "NEON i8mm (int32 accumulation)"
        return "NEON dot product (int32 accumulation)" if "asimddp" in f else "NEON (widening, int32 accumulation)"
    for flag, name in (("amx_int8", "AMX-INT8"), ("avx512_vnni", "AVX512-VNNI"), ("avx_vnni", "AVX-VNNI")):
        if flag in f:
            return f"{name} (int32 accumulation)"
    if {"avx512f", "avx512bw"} <= f:
        return "AVX-512 without VNNI (vpmaddubsw: int16 pair sums saturate)"
    if "avx2" in f:
        return "AVX2 without VNNI (vpmaddubsw: int16 pair sums saturate)"
    return "SSE (no AVX2)"
