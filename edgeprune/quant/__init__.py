"""Quantization to explicit QDQ ONNX: int8 PTQ (ptq.py), fake-quant QAT (qat.py) and privacy-aware 8/4-bit
mixed precision (mixed.py)."""
