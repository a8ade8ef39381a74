"""The edgeseg version: in bundles, ONNX metadata and checkpoints."""
__version__ = "0.1.0"
