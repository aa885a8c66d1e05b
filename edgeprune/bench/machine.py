"""The machine a measurement ran on, named in every bench / benchmark result JSON."""

from __future__ import annotations

import os
from pathlib import Path


def machine() -> dict:
    """CPU model, cores, GPU (when torch sees one), CPU features and int8 kernels, onnxruntime providers and
    the package versions."""
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
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
    return {"cpu": info["model"] or cpu, "cores": os.cpu_count(), "gpu": gpu, "system": platform.system(),
            "arch": info["arch"], "cpu_features": info["features"], "int8_kernels": info["int8_kernels"],
            "onnxruntime_providers": ort.get_available_providers(), "versions": package_versions()}
