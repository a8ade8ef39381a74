"""Benchmarks across backends and precisions: latency statistics, peak memory, mIoU, and parity
with the PyTorch FP32 model. No backend-specific code: every runner goes through one interface.

One record per bundle x backend x precision x batch. Latency is measured after a warm-up for at
least ``min_iters`` iterations and ``min_seconds`` (whichever is longer), model-only (a
preprocessed batch in, logits out; CUDA runners synchronise) and end-to-end (uint8 frames in,
class maps at frame size out). A bundle lacking a backend yields a record with ``skipped`` set.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgeseg.backends import registry
from edgeseg.backends.base import Runner
from edgeseg.backends.registry import RunnerOptions
from edgeseg.bundle.manifest import Bundle, read_bundle
from edgeseg.errors import EdgesegError
from edgeseg.metrics import ConfusionMatrix
from edgeseg.postprocess import labels_from_logits
from edgeseg.timing import LatencyStats, latency_stats, time_calls  # noqa: F401  (re-exported)

BACKENDS = registry.backend_names()


def reset_peak_rss() -> None:
    """Reset the kernel's peak-RSS counter for this process (Linux); no-op elsewhere."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_rss_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def label_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Percent of pixels where two class maps agree."""
    if a.shape != b.shape:
        raise EdgesegError(f"class maps differ in shape {a.shape} vs {b.shape}; compare at the same size")
    return float((a == b).mean() * 100.0)


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of (latency, miou) points not dominated by another (lower latency and higher mIoU)."""
    front = []
    for i, (lat, miou) in enumerate(points):
        dominated = any((l2 <= lat and m2 >= miou) and (l2 < lat or m2 > miou) for j, (l2, m2) in enumerate(points)
                        if j != i)
        if not dominated:
            front.append(i)
    return front


def measured_peak_gflops(size: int = 2048, repeats: int = 5, threads: int = 0) -> float:
    """The best FP32 GEMM rate (GFLOP/s) measured on this CPU: the higher of torch.mm and ONNX
    Runtime's MatMul (MLAS) on ``size``^3, best of ``repeats``. The roofline's ceiling."""
    from onnx import TensorProto, helper

    from edgeseg.ort_session import make_session

    a = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
    ta = torch.from_numpy(a)
    torch.mm(ta, ta)
    best_torch = min(_timed(lambda: torch.mm(ta, ta)) for _ in range(repeats))
    spec = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [size, size]) for n in "abc"]
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm", spec[:2], spec[2:])
    session = make_session(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString(),
                           threads, spinning=False)
    feed = {"a": a, "b": a}
    session.run(None, feed)
    best_ort = min(_timed(lambda: session.run(None, feed)) for _ in range(repeats))
    return 2 * size ** 3 / min(best_torch, best_ort) / 1e9


def _timed(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


@dataclass
class Record:
    bundle: str
    backend: str
    precision: str
    batch: int
    skipped: str | None = None
    miou: float | None = None
    pixel_acc: float | None = None
    per_class_iou: dict[str, float | None] = field(default_factory=dict)
    latency_ms_mean: float | None = None
    latency_ms_p50: float | None = None
    latency_ms_p90: float | None = None
    latency_ms_p99: float | None = None
    fps: float | None = None
    e2e_latency_ms_p50: float | None = None
    e2e_fps: float | None = None
    iterations: int | None = None
    agreement: float | None = None  # % pixels equal to the PyTorch FP32 model's classes
    per_class_iou_delta: dict[str, float | None] = field(default_factory=dict)
    peak_rss_mb: float | None = None
    peak_device_mb: float | None = None  # CUDA memory PyTorch allocated (torch runner; None on CPU)
    threads: int | None = None
    inference_precision: str | None = None  # what the runtime computed float layers in, when it chose (OpenVINO)
    gmacs_per_s: float | None = None
    roofline_pct: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def runners_for(bundle: Bundle, backend: str, threads: int,
                options: RunnerOptions | None = None) -> list[tuple[str, Runner | str]]:
    """(precision, runner) pairs this bundle offers on ``backend`` here, or (precision, reason skipped).
    ONNX Runtime's threads do not spin: the runners of one benchmark share the cores with each other."""
    options = replace(options or RunnerOptions(), threads=threads, spinning=False)
    return registry.runners(bundle, backend, options)


def _predict(runner: Runner, x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return labels_from_logits(runner.infer(x), size)


def bench_runner(bundle: Bundle, backend: str, precision: str, runner: Runner, batch: int, frames: list[np.ndarray],
                 masks: list[np.ndarray], reference: list[np.ndarray] | None, min_iters: int, min_seconds: float,
                 threads: int, macs: int | None, peak_gflops: float | None,
                 timed: bool = True) -> tuple[Record, list[np.ndarray]]:
    """Accuracy on (frames, masks), latency at ``batch`` (unless not ``timed``: the parity reference only
    gives its class maps when it is not reported), parity with ``reference`` class maps."""
    rec = Record(str(bundle.root), backend, precision, batch, threads=threads or os.cpu_count())
    pre = bundle.preprocessing
    reset_peak_rss()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    with runner:
        rec.inference_precision = runner.inference_precision
        rec.precision = registry.precision_label(precision, runner.inference_precision)
        spec = runner.input_spec
        if not spec.min_shape[0] <= batch <= spec.max_shape[0]:
            rec.skipped = f"batch {batch} outside the model's batch bounds {spec.min_shape[0]}..{spec.max_shape[0]}"
            return rec, []
        cm = ConfusionMatrix(len(bundle.classes))
        labels = []
        for frame, mask in zip(frames, masks):
            pred = _predict(runner, pre(frame)[None], mask.shape)[0]
            cm.update(pred, mask)
            labels.append(pred)
        summary = cm.summary(bundle.classes)
        rec.miou, rec.pixel_acc, rec.per_class_iou = summary["miou"], summary["pixel_acc"], summary["per_class_iou"]
        if not timed:
            return rec, labels
        x = np.stack([pre(frames[i % len(frames)]) for i in range(batch)])
        stats = latency_stats(time_calls(lambda: runner.infer(x), min_iters, min_seconds), batch)
        rec.latency_ms_mean, rec.latency_ms_p50, rec.latency_ms_p90, rec.latency_ms_p99 = (
            stats.mean_ms, stats.p50_ms, stats.p90_ms, stats.p99_ms)
        rec.fps, rec.iterations = stats.fps, stats.iterations
        frame_batch = [frames[i % len(frames)] for i in range(batch)]
        e2e = latency_stats(time_calls(lambda: _predict(runner, np.stack([pre(f) for f in frame_batch]),
                                                        frame_batch[0].shape[:2]),
                                       max(10, min_iters // 5), min_seconds / 5), batch)
        rec.e2e_latency_ms_p50, rec.e2e_fps = e2e.p50_ms, e2e.fps
    rec.peak_rss_mb = peak_rss_mb()
    if torch.cuda.is_available() and torch.cuda.max_memory_allocated() > 0:
        rec.peak_device_mb = torch.cuda.max_memory_allocated() / 2 ** 20
    if macs and peak_gflops:
        rec.gmacs_per_s = macs * batch / (rec.latency_ms_p50 / 1000.0) / 1e9
        rec.roofline_pct = 100.0 * 2 * rec.gmacs_per_s / peak_gflops
    if reference is not None:
        rec.agreement = float(np.mean([label_agreement(a, b) for a, b in zip(labels, reference)]))
    return rec, labels


def load_split(spec: str, split: str, limit: int | None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    from edgeseg.data import open_dataset

    dataset = open_dataset(spec, split)
    n = len(dataset) if limit is None else min(limit, len(dataset))
    pairs = [dataset[i] for i in range(n)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def run_bench(bundle_dirs: list[Path], data: str, split: str, backends: list[str], batches: list[int],
              limit: int | None = None, min_iters: int = 50, min_seconds: float = 5.0, threads: int = 0,
              on_record: Callable[[Record], None] = lambda r: None,
              parity_dir: Path | None = None, parity_images: int = 0,
              options: RunnerOptions | None = None) -> list[Record]:
    """All records; ``on_record`` sees each as it is made (so an interrupted run keeps what it measured).
    The reference backend (PyTorch FP32) runs first for parity, and is reported only when asked for."""
    from edgeseg.models import build_model, measure_complexity

    frames, masks = load_split(data, split, limit)
    peak = measured_peak_gflops(threads=threads)
    records: list[Record] = []
    for bundle_dir in bundle_dirs:
        bundle = read_bundle(bundle_dir)
        macs = None
        if bundle.file("checkpoint") is not None:
            from edgeseg.models.checkpoint import load_checkpoint

            ckpt = load_checkpoint(bundle.file("checkpoint"))
            macs = measure_complexity(build_model(ckpt.config), tuple(bundle.preprocessing.size)).macs
        reference = None
        ref_name = registry.reference_backend().name
        order = [ref_name] + [b for b in backends if b != ref_name]  # the PyTorch FP32 reference first
        for backend in order:
            for precision, runner in runners_for(bundle, backend, threads, options):
                for batch in batches:
                    if isinstance(runner, str):
                        rec = Record(str(bundle.root), backend, precision, batch, skipped=runner)
                        labels = []
                    else:
                        rec, labels = bench_runner(bundle, backend, precision, runner, batch, frames, masks, reference,
                                                   min_iters, min_seconds, threads, macs, peak, backend in backends)
                    if backend == ref_name and labels and reference is None:
                        reference = labels
                        rec.agreement = 100.0
                    if backend in backends:
                        records.append(rec)
                        on_record(rec)
                    if labels and reference is not None and parity_dir is not None and parity_images:
                        write_disagreement_pngs(parity_dir / f"{Path(bundle_dir).name}-{backend}-{precision}",
                                                frames[:parity_images], labels, reference)
        ref_rec = next((r for r in records if r.backend == ref_name and r.miou is not None), None)
        for r in records:
            if ref_rec is not None and r.per_class_iou and r.bundle == ref_rec.bundle:
                r.per_class_iou_delta = {k: (None if v is None or ref_rec.per_class_iou.get(k) is None
                                             else v - ref_rec.per_class_iou[k]) for k, v in r.per_class_iou.items()}
    return records


def write_disagreement_pngs(folder: Path, frames: list[np.ndarray], labels: list[np.ndarray],
                            reference: list[np.ndarray]) -> None:
    """One PNG per image: the frame darkened, pixels where the classes differ from the reference in red."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, (frame, a, b) in enumerate(zip(frames, labels, reference)):
        img = (frame.astype(np.float32) * 0.4).astype(np.uint8)
        img[a != b] = (255, 0, 0)
        Image.fromarray(img).save(folder / f"{i:04d}.png")
