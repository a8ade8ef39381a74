"""Batches of frames -> class maps at each frame's size, through a bundle's runner."""
from __future__ import annotations

from typing import Any

import numpy as np

from edgeseg.errors import EdgesegError

AUTO_BATCH = 4  # frames per inference when the bundle's batch dim is dynamic and --batch is not given

def resolve_batch(requested: int | None, spec: Any) -> int:
    """Frames per inference: ``requested`` within the runner's batch bounds, else up to AUTO_BATCH
    when the batch dim is dynamic (a fixed batch above 1 is filled by padding)."""
    lo, hi = int(spec.min_shape[0]), int(spec.max_shape[0])
    if requested is None:
        return min(hi, max(lo, AUTO_BATCH)) if hi > lo else lo
    if not 1 <= requested <= hi:
        bound = f"exactly {lo}" if lo == hi else f"{lo} to {hi}"
        raise EdgesegError(f"--batch {requested} does not fit the bundle (batch {bound}); pass --batch 1..{hi}, "
                           "or rebuild with `edgeseg build --dynamic batch` for larger batches")
    return requested


class BatchPredictor:
    """Frames (RGB uint8, any size) -> class maps at each frame's size, in one runner call per batch:
    the manifest's preprocessing, then edgeseg.postprocess.labels_from_logits (the path Segmenter,
    eval and bench share: bilinear resize to the frame, argmax)."""

    def __init__(self, segmenter: Any) -> None:
        self.runner = segmenter.runner
        self.preprocessing = segmenter.preprocessing
        self.min_batch = int(self.runner.input_spec.min_shape[0])

    def __call__(self, frames: list[np.ndarray]) -> tuple[list[np.ndarray], float]:
        """(labels per frame, model milliseconds spent)."""
        inputs = [self.preprocessing(np.ascontiguousarray(f)) for f in frames]
        labels: list[np.ndarray] = []
        model_ms = 0.0
        start = 0
        while start < len(inputs):  # frames whose inputs differ in size (no fixed model size) go separately
            end = start + 1
            while end < len(inputs) and inputs[end].shape == inputs[start].shape:
                end += 1
            labels += self._run(inputs[start:end], frames[start:end])
            model_ms += self.runner.last_latency_ms or 0.0
            start = end
        return labels, model_ms

    def _run(self, inputs: list[np.ndarray], frames: list[np.ndarray]) -> list[np.ndarray]:
        from edgeseg.postprocess import labels_from_logits

        x = np.stack(inputs)
        if len(x) < self.min_batch:  # a fixed batch larger than what is left: pad, drop the extra outputs
            x = np.concatenate([x, np.zeros((self.min_batch - len(x), *x.shape[1:]), x.dtype)])
        out = np.asarray(self.runner.infer(x))[: len(frames)]
        sizes = {f.shape[:2] for f in frames}
        if len(sizes) == 1:  # the usual stream: one resize + argmax for the whole batch
            return list(labels_from_logits(out, sizes.pop()))
        return [labels_from_logits(out[i: i + 1], f.shape[:2])[0] for i, f in enumerate(frames)]


