"""Export to ONNX and verify the exported graph against torch."""
