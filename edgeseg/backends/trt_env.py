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
import threading
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


def runtime_info(device: int = 0) -> dict[str, Any]:
    """This machine's side of ``trt_api.engine_compatibility``: trt_version, compute_capability, gpu and
    platform (``trt_device.platform_record``: OS, CPU architecture, Jetson or not)."""
    from edgeseg.backends.trt_device import platform_record

    trt, cuda = require("tensorrt"), require("pycuda.driver")
    try:
        cuda.init()
        dev = cuda.Device(device)
        major, minor = dev.compute_capability()
        name = dev.name()
    except cuda.Error as e:
        raise EdgesegError(f"no usable CUDA GPU {device} for TensorRT ({' '.join(str(e).split())}); check the driver "
                           "and CUDA_VISIBLE_DEVICES, or use --backend ort") from None
    return {"trt_version": trt.__version__, "compute_capability": f"{major}.{minor}", "gpu": name,
            "platform": platform_record()}


_LOGGER: tuple[Any, Any] | None = None  # (the tensorrt module, its one logger)
_KEPT_ERRORS = 200  # errors kept for messages; older ones are dropped (marks stay valid)


def logger(trt: Any) -> Any:
    """The process's one ``trt.ILogger``, made on first use: hand it to every Builder, Runtime and
    OnnxParser. TensorRT keeps a single logger pointer per process and ignores later ones ("TensorRT
    maintains only a single logger pointer at any given time", its warning quoted in NVIDIA/TensorRT#1475;
    Polygraphy keeps one global logger, backend/trt/util.py get_trt_logger), so a second logger would
    never hear the errors of the objects made with it. Callers take ``mark()`` before a call and
    ``last_error(mark)`` after it, which reads only the errors logged since, preferring this thread's."""
    global _LOGGER
    if _LOGGER is None or _LOGGER[0] is not trt:  # another module object only in tests (fakes)
        _LOGGER = (trt, _make_logger(trt))
    return _LOGGER[1]


def _make_logger(trt: Any) -> Any:
    """A ``trt.ILogger`` that keeps error messages for our EdgesegErrors and forwards each distinct
    warning once (TensorRT repeats some, e.g. per inference call, which would flood the user's log).
    Thread-safe, as TensorRT requires of a logger (NvInferRuntimeBase.h, class ILogger)."""

    class Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self._lock = threading.Lock()
            self._errors: list[tuple[int, int, str]] = []  # (sequence number, thread id, text)
            self._next = 0
            self.warnings: dict[str, int] = {}  # text -> times seen

        def log(self, severity: Any, msg: str) -> None:
            text = " ".join(str(msg).split())
            if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
                with self._lock:
                    self._errors.append((self._next, threading.get_ident(), text))
                    self._next += 1
                    del self._errors[:-_KEPT_ERRORS]
            elif severity == trt.ILogger.Severity.WARNING:
                with self._lock:
                    seen = self.warnings.get(text, 0)
                    self.warnings[text] = seen + 1
                if not seen:
                    log.warning("TensorRT: %s", text)

        def mark(self) -> int:
            """A position in the error sequence: ``last_error`` / ``forget_since`` read what came after it."""
            with self._lock:
                return self._next

        def errors_since(self, mark: int = 0) -> list[str]:
            """Errors logged since ``mark``: this thread's when it logged any, else every thread's."""
            with self._lock:
                since = [(t, text) for n, t, text in self._errors if n >= mark]
            mine = [text for t, text in since if t == threading.get_ident()]
            return mine or [text for _, text in since]

        def forget_since(self, mark: int) -> list[str]:
            """Drop (and return) the errors logged since ``mark``: an expected failure, already handled."""
            with self._lock:
                dropped = [text for n, _, text in self._errors if n >= mark]
                self._errors = [e for e in self._errors if e[0] < mark]
            return dropped

        def last_error(self, mark: int = 0) -> str:
            errors = self.errors_since(mark)
            return errors[-1][:300] if errors else "no error logged"

    return Logger()


__all__ = ["EXTRA", "logger", "require", "runtime_info", "tensorrt_available"]
