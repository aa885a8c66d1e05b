"""edgeprune: compress PyTorch models for edge GPUs and measure membership leakage next to latency."""

import os as _os

__version__ = "0.1.0"

# onnxruntime (1.32 on Linux) writes a device id and a telemetry database under
# ~/.cache/Microsoft/DeveloperTools/.onnxruntime/ when it is imported, unless this is set before the import
# (onnxruntime.disable_telemetry_events() does not stop it). Set ORT_DISABLE_TELEMETRY=0 to allow it.
_os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
