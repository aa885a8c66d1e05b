"""The machine a measurement ran on, named in every bench / benchmark result JSON."""

from __future__ import annotations

import os


def machine() -> dict:
    """CPU model, cores, GPU (when torch sees one), CPU features and int8 kernels, onnxruntime providers and
    the package versions."""
    import platform

    from edgeprune.runtime import gpu_names
    from edgeprune.versions import package_versions

    gpus = gpu_names()
    import onnxruntime as ort

    from edgeprune.cpu import cpu_info

    info = cpu_info()
    return {"cpu": info["model"], "cores": os.cpu_count(), "gpu": gpus[0] if gpus else None, "gpus": gpus,
            "system": platform.system(),
            "arch": info["arch"], "cpu_features": info["features"], "int8_kernels": info["int8_kernels"],
            "onnxruntime_providers": ort.get_available_providers(), "versions": package_versions()}
