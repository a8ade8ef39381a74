"""TensorRT in this process, shared by the engine builder (``trt_engine``) and the runner (``trt_runner``):
importing ``tensorrt`` / ``pycuda`` with the extra to install named, whether TensorRT can run here, this
machine's TensorRT and GPU facts, and the logger both hand to TensorRT.

``tensorrt`` and ``pycuda`` are imported inside the functions that need them, so importing this module
never needs them. Both users call ``trt_env.require`` / ``trt_env.runtime_info`` through the module, so
tests replace them in one place.
"""
from __future__ import annotations

import importlib
import importlib.util
import logging
from typing import Any

from edgeseg.errors import EdgesegError

log = logging.getLogger(__name__)
EXTRA = "pip install 'edgeseg[trt]'"
_PACKAGES = {"tensorrt": "TensorRT (the tensorrt package)", "pycuda.driver": "pycuda"}


def tensorrt_available() -> bool:
    """TensorRT importable and a CUDA GPU visible."""
    if importlib.util.find_spec("tensorrt") is None:
        return False
    import torch

    return torch.cuda.is_available()


def require(module: str) -> Any:
    """Import ``module`` (tensorrt or pycuda.driver); EdgesegError naming the extra when it is missing."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        what = _PACKAGES.get(module, module)
        raise EdgesegError(f"{what} is needed for the TensorRT backend but cannot be imported ({e}); install it on "
                           f"the GPU machine with {EXTRA} (JetPack ships TensorRT) or use --backend ort") from None


def runtime_info(device: int = 0) -> dict[str, str]:
    """This machine's side of ``trt_api.engine_compatibility``: trt_version, compute_capability, gpu."""
    trt, cuda = require("tensorrt"), require("pycuda.driver")
    try:
        cuda.init()
        dev = cuda.Device(device)
        major, minor = dev.compute_capability()
        name = dev.name()
    except cuda.Error as e:
        raise EdgesegError(f"no usable CUDA GPU {device} for TensorRT ({' '.join(str(e).split())}); check the driver "
                           "and CUDA_VISIBLE_DEVICES, or use --backend ort") from None
    return {"trt_version": trt.__version__, "compute_capability": f"{major}.{minor}", "gpu": name}


def make_logger(trt: Any) -> Any:
    """A ``trt.ILogger`` that keeps error messages for our EdgesegErrors and forwards each distinct
    warning once (TensorRT repeats some, e.g. per inference call, which would flood the user's log)."""

    class Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []
            self.warnings: dict[str, int] = {}  # text -> times seen

        def log(self, severity: Any, msg: str) -> None:
            text = " ".join(str(msg).split())
            if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
                self.errors.append(text)
            elif severity == trt.ILogger.Severity.WARNING:
                seen = self.warnings.get(text, 0)
                self.warnings[text] = seen + 1
                if not seen:
                    log.warning("TensorRT: %s", text)

        def mark(self) -> int:
            """A position in the error list, for ``forget_since`` (errors that are expected)."""
            return len(self.errors)

        def forget_since(self, mark: int) -> list[str]:
            """Drop (and return) the errors logged since ``mark``: an expected failure, already handled."""
            dropped, self.errors[mark:] = self.errors[mark:], []
            return dropped

        def last_error(self) -> str:
            return self.errors[-1][:300] if self.errors else "no error logged"

    return Logger()


__all__ = ["EXTRA", "make_logger", "require", "runtime_info", "tensorrt_available"]
