"""PyTorch module -> fused module -> ONNX with metadata; reading edgeseg ONNX files; the TensorRT lint."""
