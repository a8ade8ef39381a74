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
from edgeseg.timing import latency_stats, time_calls


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
        labels = _score(rec, runner, bundle, frames, masks)
        if not timed:
            return rec, labels
        _time(rec, runner, bundle.preprocessing, frames, batch, min_iters, min_seconds)
    rec.peak_rss_mb = peak_rss_mb()
    if torch.cuda.is_available() and torch.cuda.max_memory_allocated() > 0:
        rec.peak_device_mb = torch.cuda.max_memory_allocated() / 2 ** 20
    if macs and peak_gflops:
        rec.gmacs_per_s = macs * batch / (rec.latency_ms_p50 / 1000.0) / 1e9
        rec.roofline_pct = 100.0 * 2 * rec.gmacs_per_s / peak_gflops
    if reference is not None:
        rec.agreement = float(np.mean([label_agreement(a, b) for a, b in zip(labels, reference)]))
    return rec, labels


def _score(rec: Record, runner: Runner, bundle: Bundle, frames: list[np.ndarray],
           masks: list[np.ndarray]) -> list[np.ndarray]:
    """mIoU, pixel accuracy and per-class IoU into ``rec``, one frame at a time; the class maps."""
    cm = ConfusionMatrix(len(bundle.classes))
    labels = []
    for frame, mask in zip(frames, masks):
        pred = _predict(runner, bundle.preprocessing(frame)[None], mask.shape)[0]
        cm.update(pred, mask)
        labels.append(pred)
    summary = cm.summary(bundle.classes)
    rec.miou, rec.pixel_acc, rec.per_class_iou = summary["miou"], summary["pixel_acc"], summary["per_class_iou"]
    return labels


def _time(rec: Record, runner: Runner, pre: Callable[[np.ndarray], np.ndarray], frames: list[np.ndarray], batch: int,
          min_iters: int, min_seconds: float) -> None:
    """Model-only latency (a preprocessed batch) and end-to-end latency (frames in, class maps out) into ``rec``."""
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


def load_split(spec: str, split: str, limit: int | None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    from edgeseg.data import open_dataset

    dataset = open_dataset(spec, split)
    n = len(dataset) if limit is None else min(limit, len(dataset))
    pairs = [dataset[i] for i in range(n)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


@dataclass(frozen=True)
class _Plan:
    """What every bundle of one run_bench is measured with."""

    frames: list[np.ndarray]
    masks: list[np.ndarray]
    backends: list[str]  # the backends reported (the reference runs in any case)
    batches: list[int]
    min_iters: int
    min_seconds: float
    threads: int
    options: RunnerOptions | None
    peak_gflops: float | None
    parity_dir: Path | None  # disagreement PNGs of the first parity_images frames, when set
    parity_images: int


def run_bench(bundle_dirs: list[Path], data: str, split: str, backends: list[str], batches: list[int],
              limit: int | None = None, min_iters: int = 50, min_seconds: float = 5.0, threads: int = 0,
              on_record: Callable[[Record], None] = lambda r: None,
              parity_dir: Path | None = None, parity_images: int = 0,
              options: RunnerOptions | None = None) -> list[Record]:
    """All records; ``on_record`` sees each as it is made, complete (so an interrupted run keeps what it
    measured). The reference backend (PyTorch FP32) runs first for parity, and is reported only when asked for."""
    frames, masks = load_split(data, split, limit)
    plan = _Plan(frames, masks, backends, batches, min_iters, min_seconds, threads, options,
                 measured_peak_gflops(threads=threads), parity_dir if parity_images else None, parity_images)
    records: list[Record] = []
    for bundle_dir in bundle_dirs:
        records += _bench_bundle(plan, Path(bundle_dir), on_record)
    return records


def _bench_bundle(plan: _Plan, bundle_dir: Path, on_record: Callable[[Record], None]) -> list[Record]:
    """One bundle's records: the reference's class maps first (parity), then every reported backend;
    per-class IoU deltas against the reference's record when it is reported."""
    bundle = read_bundle(bundle_dir)
    macs = _model_macs(bundle)
    ref_name = registry.reference_backend().name
    reference: list[np.ndarray] | None = None
    ref_rec: Record | None = None
    records: list[Record] = []
    for backend in [ref_name] + [b for b in plan.backends if b != ref_name]:
        reported = backend in plan.backends
        for precision, runner in runners_for(bundle, backend, plan.threads, plan.options):
            for batch in plan.batches:
                if isinstance(runner, str):
                    rec, labels = Record(str(bundle.root), backend, precision, batch, skipped=runner), []
                else:
                    rec, labels = bench_runner(bundle, backend, precision, runner, batch, plan.frames, plan.masks,
                                               reference, plan.min_iters, plan.min_seconds, plan.threads, macs,
                                               plan.peak_gflops, reported)
                if backend == ref_name and labels and reference is None:
                    reference, rec.agreement = labels, 100.0
                    ref_rec = rec if reported and rec.miou is not None else None
                if ref_rec is not None and rec.per_class_iou:
                    rec.per_class_iou_delta = _iou_deltas(rec.per_class_iou, ref_rec.per_class_iou)
                if reported:
                    records.append(rec)
                    on_record(rec)
                if labels and reference is not None and plan.parity_dir is not None:
                    write_disagreement_pngs(plan.parity_dir / f"{bundle_dir.name}-{backend}-{precision}",
                                            plan.frames[:plan.parity_images], labels, reference)
    return records


def _model_macs(bundle: Bundle) -> int | None:
    """Multiply-adds of one image through the bundle's model (from its checkpoint; None without one)."""
    if bundle.file("checkpoint") is None:
        return None
    from edgeseg.models import build_model, measure_complexity
    from edgeseg.models.checkpoint import load_checkpoint

    ckpt = load_checkpoint(bundle.file("checkpoint"))
    return measure_complexity(build_model(ckpt.config), tuple(bundle.preprocessing.size)).macs


def _iou_deltas(per_class_iou: dict[str, float | None], reference: dict[str, float | None]) -> dict[str, float | None]:
    """Per-class IoU minus the reference's (None where either has no value)."""
    return {k: None if v is None or reference.get(k) is None else v - reference[k] for k, v in per_class_iou.items()}


def write_disagreement_pngs(folder: Path, frames: list[np.ndarray], labels: list[np.ndarray],
                            reference: list[np.ndarray]) -> None:
    """One PNG per image: the frame darkened, pixels where the classes differ from the reference in red."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, (frame, a, b) in enumerate(zip(frames, labels, reference)):
        img = (frame.astype(np.float32) * 0.4).astype(np.uint8)
        img[a != b] = (255, 0, 0)
        Image.fromarray(img).save(folder / f"{i:04d}.png")
