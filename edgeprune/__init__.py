"""edgeprune: compress PyTorch models for edge GPUs and measure membership leakage next to latency."""

__version__ = "0.1.0"
