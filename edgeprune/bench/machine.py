"""The machine a measurement ran on, named in every bench / benchmark result JSON."""

from __future__ import annotations

import os


def machine() -> dict:
    """CPU model, cores, GPU (when torch sees one), CPU features and int8 kernels, onnxruntime providers and
    the package versions."""
    import platform

    from edgeprune.versions import package_versions

    gpu = None
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name()
    except Exception:  # no torch / broken CUDA: no GPU to name
        gpu = None
    import onnxruntime as ort

    from edgeprune.cpu import cpu_info

    info = cpu_info()
    return {"cpu": info["model"], "cores": os.cpu_count(), "gpu": gpu, "system": platform.system(),
            "arch": info["arch"], "cpu_features": info["features"], "int8_kernels": info["int8_kernels"],
            "onnxruntime_providers": ort.get_available_providers(), "versions": package_versions()}
