"""edgeseg: DeepLab v3+ and FCN semantic segmentation from training to edge deployment.

``import edgeseg`` stays light: it imports no onnx, onnxruntime or tensorrt.
"""
from edgeseg.errors import CheckpointError, DatasetError, EdgesegError, ModelError

__version__ = "0.1.0"
__all__ = ["EdgesegError", "DatasetError", "ModelError", "CheckpointError", "__version__"]
