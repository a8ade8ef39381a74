"""edgeseg: DeepLab v3+ and FCN semantic segmentation from training to edge deployment.

``import edgeseg`` stays light: it imports no onnx, onnxruntime or tensorrt.
"""
from edgeseg.errors import CheckpointError, DatasetError, EdgesegError, ModelError
from edgeseg.version import __version__

__all__ = ["EdgesegError", "DatasetError", "ModelError", "CheckpointError", "load", "__version__"]


def load(path, backend: str = "auto", color: str = "RGB", threads: int = 0, verify: bool = True, options=None):
    """Open a bundle built by `edgeseg build` as a frame -> class map function (see edgeseg.bundle.segmenter).
    ``options``: an ``edgeseg.backends.registry.RunnerOptions`` (OpenVINO device, precision, cache folder)."""
    from edgeseg.bundle.segmenter import load as _load

    return _load(path, backend=backend, color=color, threads=threads, verify=verify, options=options)
