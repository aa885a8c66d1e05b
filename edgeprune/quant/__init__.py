"""Quantization: int8 post-training quantization to explicit QDQ ONNX."""
