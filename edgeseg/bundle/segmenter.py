"""``edgeseg.load(DIR)``: a bundle as a frame -> class map function for camera pipelines.

    seg = edgeseg.load("bundle/")            # best runner available, files checked against the manifest
    labels = seg(frame)                       # frame: HxWx3 uint8, RGB unless color="BGR" (OpenCV), <= 64 MP
    labels, logits = seg(frame, logits=True)  # labels (H, W) uint8 at frame size, logits (C, H, W) float32

The manifest's preprocessing is applied (resize to the model input, channel order, mean/std) and
the prediction comes back at the frame's size (logits resized bilinearly, then argmax).
Runner choice for backend="auto": ``edgeseg.bundle.runtimes`` (a TensorRT engine that runs here, else
the fastest CPU path the build measured within the bundle's mIoU budget, measured again on another
machine type); ``seg.choice`` says which runner it took and why.

Threads: one Segmenter may be called from several threads at once and every call returns its own
frame's result. Runners that are thread-safe (ONNX Runtime, PyTorch) run the calls concurrently;
others (TensorRT: one execution context and its device buffers) are serialized by a lock. Call
``close()`` once every call has returned; ``runner.last_latency_ms`` is the latest call's, from any thread.
"""
from __future__ import annotations

import contextlib
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np

from edgeseg.backends.base import Runner
from edgeseg.backends.registry import RunnerOptions
from edgeseg.bundle.manifest import Bundle, read_bundle, verify_bundle
from edgeseg.bundle.runtimes import BACKEND_CHOICES, Choice, select_runner
from edgeseg.data.images import check_frame
from edgeseg.errors import EdgesegError
from edgeseg.postprocess import labels_from_logits, resize_logits


def _choose(bundle: Bundle, backend: str, threads: int, options: RunnerOptions | None) -> Choice:
    """The runner for ``backend`` (see the module docstring for "auto"), inactive, with the reason."""
    if backend not in BACKEND_CHOICES:
        raise EdgesegError(f"backend must be one of {', '.join(BACKEND_CHOICES)}, got {backend!r}")
    return select_runner(bundle, backend, replace(options or RunnerOptions(), threads=threads))


class Segmenter:
    def __init__(self, bundle: Bundle, runner: Runner, color: str = "RGB", choice: str = "") -> None:
        if color not in ("RGB", "BGR"):
            raise EdgesegError(f"color must be 'RGB' or 'BGR' (OpenCV frames), got {color!r}")
        self.bundle, self.runner, self.color = bundle, runner.activate(), color
        self._lock = contextlib.nullcontext() if runner.thread_safe else threading.Lock()  # see the module docstring
        self.choice = choice or runner.name  # which runner and why (backend "auto" explains its pick)
        self.preprocessing = bundle.preprocessing
        self.classes, self.palette = bundle.classes, bundle.palette

    @property
    def backend(self) -> str:
        return self.runner.name

    def _check(self, frame: np.ndarray) -> np.ndarray:
        """The frame as RGB; a one-line error for anything but a non-empty HxWx3 uint8 array within the frame limit."""
        frame = check_frame(frame, self.color)
        return frame[:, :, ::-1] if self.color == "BGR" else frame

    def __call__(self, frame: np.ndarray, logits: bool = False):
        rgb = self._check(frame)
        x = self.preprocessing(np.ascontiguousarray(rgb))[None]
        with self._lock:
            out = self.runner.infer(x)
        if out.ndim != 4 or out.shape[1] != len(self.classes):
            raise EdgesegError(f"the model of {self.bundle.root} returned scores of shape {tuple(out.shape)} for "
                               f"{len(self.classes)} classes, expected (1, {len(self.classes)}, h, w); rebuild the "
                               "bundle (edgeseg build) from a model with one output channel per class")
        if logits:
            scores = resize_logits(out, frame.shape[:2])
            return scores[0].argmax(0).astype(np.uint8 if scores.shape[1] <= 256 else np.int32), scores[0]
        return labels_from_logits(out, frame.shape[:2])[0]

    def close(self) -> None:
        with self._lock:
            self.runner.deactivate()


def load(path: str | Path, backend: str = "auto", color: str = "RGB", threads: int = 0,
         verify: bool = True, options: RunnerOptions | None = None) -> Segmenter:
    """Open a bundle (checking every file's sha256 unless ``verify=False``) and pick its runner;
    ``options``: OpenVINO device, inference precision, compiled-model cache (see RunnerOptions)."""
    bundle = read_bundle(path, check_hashes=verify)
    if verify:
        verify_bundle(bundle)
    choice = _choose(bundle, backend, threads, options)
    return Segmenter(bundle, choice.runner, color, choice.reason)
