"""``edgeseg.load(DIR)``: a bundle as a frame -> class map function for camera pipelines.

    seg = edgeseg.load("bundle/")            # best runner available, files checked against the manifest
    labels = seg(frame)                       # frame: HxWx3 uint8, RGB unless color="BGR" (OpenCV)
    labels, logits = seg(frame, logits=True)  # labels (H, W) uint8 at frame size, logits (C, H, W) float32

The manifest's preprocessing is applied (resize to the model input, channel order, mean/std) and
the prediction comes back at the frame's size (logits resized bilinearly, then argmax).
Runner choice for backend="auto": the TensorRT engine when TensorRT, a GPU and a compatible
engine are here; otherwise ONNX Runtime with the INT8 (cpu layout) model for int8 bundles and
the FP32 model otherwise (FP16 brings no speed on CPU).

Threads: one Segmenter may be called from several threads at once and every call returns its own
frame's result. Runners that are thread-safe (ONNX Runtime, PyTorch) run the calls concurrently;
others (TensorRT: one execution context and its device buffers) are serialized by a lock. Call
``close()`` once every call has returned; ``runner.last_latency_ms`` is the latest call's, from any thread.
"""
from __future__ import annotations

import contextlib
import threading
from pathlib import Path

import numpy as np

from edgeseg.backends.base import Runner
from edgeseg.bundle.manifest import Bundle, read_bundle, verify_bundle
from edgeseg.errors import EdgesegError
from edgeseg.postprocess import labels_from_logits, resize_logits

BACKENDS = ("auto", "ort", "trt", "torch")


def _engine_problems(bundle: Bundle) -> list[str]:
    from edgeseg.backends.tensorrt import runtime_info
    from edgeseg.backends.trt_api import engine_compatibility

    return engine_compatibility(bundle.manifest["engine"], runtime_info())


def choose_runner(bundle: Bundle, backend: str = "auto", threads: int = 0) -> Runner:
    """The runner for ``backend`` (see the module docstring for "auto")."""
    from edgeseg.backends.tensorrt import tensorrt_available

    if backend not in BACKENDS:
        raise EdgesegError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    engine = bundle.file("engine")
    if backend == "trt" or (backend == "auto" and engine is not None and tensorrt_available()):
        if engine is None:
            raise EdgesegError(f"{bundle.root} has no TensorRT engine; on the device run "
                               f"`edgeseg build --from {bundle.root} --backend trt`")
        problems = _engine_problems(bundle)
        if problems and backend == "trt":
            from edgeseg.backends.trt_api import incompatibility_message

            raise EdgesegError(incompatibility_message(problems, str(engine), str(bundle.root)))
        if not problems:
            from edgeseg.backends.tensorrt import TensorRTRunner

            return TensorRTRunner(engine, engine_info=bundle.manifest["engine"])
    if backend == "torch":
        from edgeseg.backends.torch_runner import TorchRunner
        from edgeseg.models.checkpoint import load_checkpoint

        ckpt = bundle.file("checkpoint")
        if ckpt is None:
            raise EdgesegError(f"{bundle.root} was built from an ONNX file and has no checkpoint for PyTorch; "
                               "build it from --checkpoint to run the torch backend")
        return TorchRunner(load_checkpoint(ckpt).build())
    from edgeseg.backends.onnxruntime import OrtRunner

    variant = bundle.file("int8") if bundle.precision == "int8" else bundle.file("fp32")
    return OrtRunner(variant, threads=threads)


class Segmenter:
    def __init__(self, bundle: Bundle, runner: Runner, color: str = "RGB") -> None:
        if color not in ("RGB", "BGR"):
            raise EdgesegError(f"color must be 'RGB' or 'BGR' (OpenCV frames), got {color!r}")
        self.bundle, self.runner, self.color = bundle, runner.activate(), color
        self._lock = contextlib.nullcontext() if runner.thread_safe else threading.Lock()  # see the module docstring
        self.preprocessing = bundle.preprocessing
        self.classes, self.palette = bundle.classes, bundle.palette

    @property
    def backend(self) -> str:
        return self.runner.name

    def _check(self, frame: np.ndarray) -> np.ndarray:
        if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            got = f"{frame.dtype} {frame.shape}" if isinstance(frame, np.ndarray) else type(frame).__name__
            raise EdgesegError(f"expected an HxWx3 uint8 {self.color} frame, got {got}; convert it first "
                               "(e.g. cv2.cvtColor for grey or BGRA frames, .astype(np.uint8))")
        return frame[:, :, ::-1] if self.color == "BGR" else frame

    def __call__(self, frame: np.ndarray, logits: bool = False):
        rgb = self._check(frame)
        x = self.preprocessing(np.ascontiguousarray(rgb))[None]
        with self._lock:
            out = self.runner.infer(x)
        if logits:
            scores = resize_logits(out, frame.shape[:2])
            return scores[0].argmax(0).astype(np.uint8 if scores.shape[1] <= 256 else np.int32), scores[0]
        return labels_from_logits(out, frame.shape[:2])[0]

    def close(self) -> None:
        with self._lock:
            self.runner.deactivate()


def load(path: str | Path, backend: str = "auto", color: str = "RGB", threads: int = 0,
         verify: bool = True) -> Segmenter:
    """Open a bundle (checking every file's sha256 unless ``verify=False``) and pick its runner."""
    bundle = read_bundle(path, check_hashes=verify)
    if verify:
        verify_bundle(bundle)
    return Segmenter(bundle, choose_runner(bundle, backend, threads), color)
