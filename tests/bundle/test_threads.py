"""edgeseg.load shared by several threads: every call returns its own frame's result."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import edgeseg
from edgeseg.backends.onnxruntime import OrtRunner
from edgeseg.bundle.manifest import read_bundle
from edgeseg.bundle.segmenter import Segmenter

THREADS, CALLS = 6, 8


def _frames() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    sizes = [(64, 96), (48, 80), (100, 120), (31, 57)]
    return [rng.integers(0, 256, (*sizes[i % len(sizes)], 3), dtype=np.uint8) for i in range(THREADS * CALLS)]


def _hammer(seg: Segmenter, frames: list[np.ndarray]) -> list[np.ndarray]:
    start = threading.Barrier(THREADS)

    def worker(t: int) -> list[tuple[int, np.ndarray]]:
        start.wait()  # all threads call at once
        return [(i, seg(frames[i])) for i in range(t, len(frames), THREADS)]

    with ThreadPoolExecutor(THREADS) as pool:
        results = dict(pair for part in pool.map(worker, range(THREADS)) for pair in part)
    return [results[i] for i in range(len(frames))]


@pytest.mark.parametrize("backend", ["ort", "torch"])
def test_one_segmenter_shared_by_threads_gives_each_call_its_own_result(backend: str,
                                                                         tiny_dynamic_bundle: Path) -> None:
    seg = edgeseg.load(tiny_dynamic_bundle, backend=backend)
    assert seg.runner.thread_safe
    frames = _frames()
    serial = [seg(f) for f in frames]
    for got, want, frame in zip(_hammer(seg, frames), serial, frames):
        assert got.shape == frame.shape[:2] and (got == want).all()
    seg.close()


class _CountingOrtRunner(OrtRunner):
    """The real ONNX Runtime runner, declared not thread-safe (as TensorRT's is), counting overlapping calls."""

    thread_safe = False

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.inside = self.most_inside = 0
        self._count = threading.Lock()

    def _infer(self, x):
        with self._count:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
        try:
            return super()._infer(x)
        finally:
            with self._count:
                self.inside -= 1


def test_a_runner_that_is_not_thread_safe_is_called_one_thread_at_a_time(tiny_dynamic_bundle: Path) -> None:
    bundle = read_bundle(tiny_dynamic_bundle)
    runner = _CountingOrtRunner(bundle.file("fp32"))
    seg = Segmenter(bundle, runner)
    frames = _frames()
    serial = [seg(f) for f in frames]
    for got, want in zip(_hammer(seg, frames), serial):
        assert (got == want).all()
    assert runner.most_inside == 1
    seg.close()
