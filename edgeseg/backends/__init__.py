"""Backends behind one Runner interface. Heavy runtimes (onnxruntime, tensorrt, pycuda) are imported
only when a runner is activated."""
from edgeseg.backends.base import InputSpec, Runner

__all__ = ["InputSpec", "Runner"]
