"""Precision builds from an FP32 ONNX: calibration statistics -> INT8 Q/DQ (+ guard, + TensorRT
cache) or FP16. One function per job; the CLI only parses and prints."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from edgeseg.backends.onnxruntime import OrtRunner
from edgeseg.backends.ort_session import median_latency_ms
from edgeseg.data.preprocess import Preprocessing
from edgeseg.data.spec import open_dataset
from edgeseg.errors import EdgesegError
from edgeseg.quantize.calib_set import CalibrationManifest, iter_calibration_inputs
from edgeseg.quantize.calibrators import CALIBRATORS, compute_amax
from edgeseg.quantize.guard import GuardReport, quantize_with_guard
from edgeseg.quantize.histograms import TensorStats, cached_stats, iter_activations
from edgeseg.quantize.qdq import activation_ranges, quantize_qdq
from edgeseg.quantize.sensitivity import rank_layers
from edgeseg.quantize.trt_cache import algorithm_of, trt_version_code, write_calibration_cache
from edgeseg.train.evaluate import evaluate

SENSITIVITY_IMAGES = 4


def default_cache_dir() -> Path:
    return Path(os.environ.get("EDGESEG_CACHE", Path.home() / ".cache" / "edgeseg")) / "activation-stats"


def calibration_stats(onnx_path: str | Path, manifest: CalibrationManifest, preprocessing: Preprocessing,
                      root: str | Path | None = None, allow_changed: bool = False,
                      cache_dir: str | Path | None = None) -> tuple[dict[str, TensorStats], bool]:
    """Activation statistics for (model, calibration set), from the cache when seen before."""
    inputs = iter_calibration_inputs(manifest, preprocessing, root, allow_changed)
    return cached_stats(onnx_path, manifest.sha256, inputs, cache_dir or default_cache_dir())


def miou_evaluator(spec: str, split: str, preprocessing: Preprocessing, limit: int | None = None):
    """A function ONNX path -> mIoU (0-100) on ``spec``/``split`` with ONNX Runtime CPU."""
    dataset = open_dataset(spec, split)

    def miou_of(path: Path) -> float:
        with OrtRunner(path) as runner:
            return evaluate(runner, dataset, preprocessing, batch_size=1, limit=limit).miou()

    return miou_of


@dataclass
class Int8Report:
    out: Path
    layout: str
    calibrator: str
    stats_cache_hit: bool
    trt_cache: Path | None = None
    guard: GuardReport | None = None
    ranked_layers: list[tuple[str, float]] = field(default_factory=list)


def build_int8(onnx_path: str | Path, out: str | Path, stats: dict[str, TensorStats], *, layout: str = "cpu",
               calibrator: str = "entropy", stats_cache_hit: bool = False, trt_cache: str | Path | None = None,
               trt_version: str = "8.6.1", max_miou_drop: float | None = None, miou_of=None,
               sensitivity_inputs=None, latency_shape: tuple[int, ...] | None = None,
               fp16_scales: bool = False) -> Int8Report:
    """Quantize with ``calibrator`` ranges; with ``max_miou_drop`` run the guard (needs ``miou_of`` and
    ``sensitivity_inputs``: a few (1,3,H,W) calibration inputs for the per-layer ranking)."""
    if calibrator not in CALIBRATORS:
        raise EdgesegError(f"unknown calibrator {calibrator!r}: expected one of {', '.join(CALIBRATORS)}")
    if trt_cache is not None:
        algorithm_of(calibrator)  # refuse percentile / mse before any work: TensorRT cannot replay them
        trt_version_code(trt_version)  # refuse 11.x: no implicit INT8
    ranges = activation_ranges(stats, calibrator, layout)
    report = Int8Report(Path(out), layout, calibrator, stats_cache_hit)
    if trt_cache is not None:
        amax = {n: compute_amax(calibrator, s.hist, s.bin_width, s.absmax) for n, s in stats.items() if s.absmax > 0}
        report.trt_cache = write_calibration_cache(trt_cache, amax, trt_version, algorithm=calibrator)
    if max_miou_drop is None:
        quantize_qdq(onnx_path, out, ranges, layout, fp16_scales=fp16_scales)
        return report
    if miou_of is None or sensitivity_inputs is None:
        raise EdgesegError("--max-miou-drop needs held-out data to measure mIoU; pass --val-data SPEC")
    import onnx

    model = onnx.load(str(onnx_path))
    ranking = rank_layers(model, iter_activations(onnx_path, sensitivity_inputs), ranges, layout)
    report.ranked_layers = [(r.node, round(r.sqnr_db, 2)) for r in ranking]
    latency_of = (lambda p: median_latency_ms(p, latency_shape)) if latency_shape else None
    report.guard = quantize_with_guard(onnx_path, out, ranges, layout, miou_of, max_miou_drop, ranking,
                                       latency_of=latency_of)
    return report


def compare_calibrators(onnx_path: str | Path, stats: dict[str, TensorStats], layout: str, miou_of,
                        workdir: str | Path) -> list[dict]:
    """mIoU of the FP32 model and of the INT8 model from each calibrator (same statistics)."""
    rows = [{"calibrator": "fp32", "miou": miou_of(Path(onnx_path))}]
    for name in CALIBRATORS:
        path = Path(workdir) / f"int8-{layout}-{name}.onnx"
        quantize_qdq(onnx_path, path, activation_ranges(stats, name, layout), layout)
        rows.append({"calibrator": name, "miou": miou_of(path), "path": str(path)})
    return rows
