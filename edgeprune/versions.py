"""Resolved versions of the packages that decide edgeprune's numbers, and the bug-report text of
``edgeprune --version --verbose``. Standard library only: nothing here imports torch or onnxruntime."""

from __future__ import annotations

import platform

from edgeprune import __version__

KEY_PACKAGES = ("torch", "numpy", "onnx", "onnxruntime", "onnxruntime-extensions", "onnxscript", "torch-pruning",
                "opacus", "scipy", "scikit-learn", "safetensors", "typer", "rich", "triton", "tensorrt")


def package_versions() -> dict[str, str]:
    """Python, edgeprune and every key package that is installed, as importlib.metadata resolves them."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "edgeprune": __version__}
    for name in KEY_PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def bug_report() -> str:
    """Versions, platform and the CPU features that choose onnxruntime's kernels, one fact per line."""
    from edgeprune.cpu import cpu_info
    from edgeprune.quant.targets import TARGETS

    cpu = cpu_info()
    lines = [f"platform: {platform.platform()} ({platform.python_implementation()})"]
    lines += [f"{name}: {v}" for name, v in package_versions().items() if name != "edgeprune"]
    lines += [f"cpu: {cpu['model']} ({cpu['arch']})",
              f"cpu features: {' '.join(cpu['features']) if cpu['features'] is not None else 'unknown'}"
              f" (from {cpu['features_source'] or 'nowhere'})",
              f"onnxruntime int8 kernels: {cpu['int8_kernels']}"]
    s = TARGETS.get("ort-cpu").settings(cpu=cpu)
    lines.append(f"int8 for onnxruntime here: {s['activations']} activations, "
                 f"{'7-bit' if s['reduce_range'] else '8-bit'} weights ({s['reduce_range_reason']})")
    return "\n".join(lines)
