"""edgeseg: DeepLab v3+ and FCN semantic segmentation from training to edge deployment.

``import edgeseg`` stays light: it imports no onnx, onnxruntime or tensorrt.

ONNX Runtime's telemetry is off unless the environment already says otherwise: on import it writes
a session file into $TMPDIR and a device id and database under ~/.cache/Microsoft, files outside
any edgeseg output (set ORT_DISABLE_TELEMETRY=0 before importing edgeseg to keep it on).
"""
import os

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")  # read by onnxruntime when it is first imported

from edgeseg.errors import CheckpointError, DatasetError, EdgesegError, ModelError
from edgeseg.version import __version__

__all__ = ["EdgesegError", "DatasetError", "ModelError", "CheckpointError", "load", "__version__"]


def load(path, backend: str = "auto", color: str = "RGB", threads: int = 0, verify: bool = True, options=None):
    """Open a bundle built by `edgeseg build` as a frame -> class map function (see edgeseg.bundle.segmenter).
    ``options``: an ``edgeseg.backends.registry.RunnerOptions`` (OpenVINO device, precision, cache folder).
    One Segmenter may be called from several threads at once; each call returns its own frame's result."""
    from edgeseg.bundle.segmenter import load as _load

    return _load(path, backend=backend, color=color, threads=threads, verify=verify, options=options)
