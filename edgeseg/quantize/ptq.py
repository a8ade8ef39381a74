"""Post-training quantization of an FP32 ONNX: calibration statistics -> ranges -> INT8 Q/DQ in a layout
(+ bias correction, + accuracy guard, + TensorRT cache). One function per job; the CLI only parses and prints."""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeseg.backends import trt_api
from edgeseg.backends.onnxruntime import OrtRunner
from edgeseg.ort_session import median_latency_ms
from edgeseg.data.preprocess import Preprocessing
from edgeseg.data.spec import open_dataset
from edgeseg.errors import EdgesegError
from edgeseg.quantize.calib_set import CalibrationManifest, current_images_sha256, iter_calibration_inputs
from edgeseg.quantize.calibrators import CALIBRATOR_NAMES, check_calibrator
from edgeseg.quantize.guard import GuardReport, quantize_with_guard
from edgeseg.quantize.histograms import TensorStats, cached_stats, iter_activation_groups
from edgeseg.quantize.known_ranges import apply_known_ranges, known_ranges
from edgeseg.quantize.layouts import TRT, QuantLayout, get_layout
from edgeseg.quantize.qdq import activation_ranges, quantize_qdq
from edgeseg.quantize.sensitivity import LayerSensitivity, rank_layers
from edgeseg.quantize.trt_cache import algorithm_of, write_calibration_cache
from edgeseg.train.evaluate import evaluate

SENSITIVITY_IMAGES = 4


@dataclass(frozen=True)
class Int8Options:
    """How calibration ranges and weights become the INT8 model (defaults chosen on held-out CamVid
    train images, see benchmarks/results/quant_options_cpu.md)."""

    input_range: bool = True  # the network input's range from the preprocessing, not calibrated
    exact_clip: bool = True  # Clip / ReLU6 outputs quantized over their clip interval ([0, 6])
    u8_search: bool = False  # U8 (cpu) layout: entropy / MSE search the asymmetric U8 quantizer (measured: no gain)
    bias_correction: bool = True  # shift quantized Convs' biases to the FP32 output means
    bias_correction_images: int = 32  # calibration images for the bias correction pass


def int8_ranges(onnx_path: str | Path, stats: dict[str, TensorStats], calibrator: str, layout: str | QuantLayout,
                preprocessing: Preprocessing | None, options: Int8Options = Int8Options()
                ) -> dict[str, tuple[float, float]]:
    """The (low, high) each activation is quantized over: calibrated, then known ranges applied."""
    import onnx

    if options.input_range and preprocessing is None:
        raise EdgesegError(f"{onnx_path} records no preprocessing, so the input range is unknown; re-export it with "
                           "edgeseg export or pass --mean/--std")
    layout = get_layout(layout)
    ranges = activation_ranges(stats, calibrator, layout, u8_search=options.u8_search)
    model = onnx.load(str(onnx_path), load_external_data=False)
    known = known_ranges(model, preprocessing if options.input_range else None, exact_clip=options.exact_clip)
    return apply_known_ranges(ranges, known, layout)


def bias_correction_shifts(onnx_path: str | Path, ranges: dict[str, tuple[float, float]], layout: QuantLayout,
                           inputs: Iterable[np.ndarray], images: int) -> dict[str, np.ndarray]:
    """Per-Conv bias shifts for ``layout`` from the first ``images`` of ``inputs`` (one bounded-memory pass)."""
    import onnx

    from edgeseg.quantize.bias_correction import bias_shifts

    model = onnx.load(str(onnx_path))
    conv_inputs = list(dict.fromkeys(n.input[0] for n in model.graph.node if n.op_type == "Conv"
                                     and n.input[0] in ranges))
    subset = (x for _, x in zip(range(images), inputs))
    groups = (g for _, g in iter_activation_groups(onnx_path, subset, names=conv_inputs))
    return bias_shifts(model, groups, ranges, layout)


def default_cache_dir() -> Path:
    return Path(os.environ.get("EDGESEG_CACHE", Path.home() / ".cache" / "edgeseg")) / "activation-stats"


def calibration_stats(onnx_path: str | Path, manifest: CalibrationManifest, preprocessing: Preprocessing,
                      root: str | Path | None = None, allow_changed: bool = False,
                      cache_dir: str | Path | None = None) -> tuple[dict[str, TensorStats], bool]:
    """Activation statistics for (model, calibration set), from the cache when seen before.

    The cache key covers everything that decides the input tensors: the images (the manifest's hashes,
    or with ``allow_changed`` the files as they are now), the preprocessing actually applied (which may
    differ from the manifest's: --mean/--std, input size) and the model."""
    identity = {"manifest": manifest.sha256, "preprocessing": preprocessing.to_dict(),
                "images_now": current_images_sha256(manifest, root) if allow_changed else None}
    inputs = iter_calibration_inputs(manifest, preprocessing, root, allow_changed)
    return cached_stats(onnx_path, identity, inputs, cache_dir or default_cache_dir())


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
    options: Int8Options = field(default_factory=Int8Options)
    bias_corrected: int = 0  # Convs whose bias was shifted
    trt_cache: Path | None = None
    guard: GuardReport | None = None
    ranked_layers: list[tuple[str, float]] = field(default_factory=list)


def build_int8(onnx_path: str | Path, out: str | Path, stats: dict[str, TensorStats], *,
               layout: str | QuantLayout = "cpu", calibrator: str = "entropy", stats_cache_hit: bool = False,
               trt_cache: str | Path | None = None, trt_version: str = "8.6.1", max_miou_drop: float | None = None,
               miou_of=None, sensitivity_inputs=None, latency_shape: tuple[int, ...] | None = None,
               fp16_scales: bool = False, preprocessing: Preprocessing | None = None,
               options: Int8Options = Int8Options(),
               calib_inputs: Callable[[], Iterable[np.ndarray]] | None = None) -> Int8Report:
    """Quantize with ``calibrator`` ranges and ``options``; with ``max_miou_drop`` run the guard (needs
    ``miou_of`` and ``sensitivity_inputs``: a few (1,3,H,W) calibration inputs for the per-layer ranking).

    ``preprocessing``: the model's (default: read from its metadata), for the input range.
    ``calib_inputs``: returns a fresh iterator over the calibration inputs (bias correction).
    ``trt_version``: the TensorRT the cache and a layout given by name (its weight axes) target."""
    layout = get_layout(layout, trt_version)
    _refuse_early(calibrator, trt_cache, trt_version)
    if preprocessing is None:
        from edgeseg.export.metadata import read_preprocessing

        preprocessing = read_preprocessing(onnx_path)
    ranges = int8_ranges(onnx_path, stats, calibrator, layout, preprocessing, options)
    report = Int8Report(Path(out), layout.name, calibrator, stats_cache_hit, options)
    if trt_cache is not None:
        trt_ranges = ranges if layout.symmetric_activations else int8_ranges(onnx_path, stats, calibrator, TRT,
                                                                             preprocessing, options)
        report.trt_cache = _write_trt_cache(trt_cache, trt_ranges, trt_version, calibrator)
    shifts = None
    if options.bias_correction:
        if calib_inputs is None:
            raise EdgesegError("bias correction needs the calibration images; pass them, or turn bias correction off")
        shifts = bias_correction_shifts(onnx_path, ranges, layout, calib_inputs(), options.bias_correction_images)
        report.bias_corrected = len(shifts)
    if max_miou_drop is None:
        quantize_qdq(onnx_path, out, ranges, layout, fp16_scales=fp16_scales, bias_shifts=shifts)
        return report
    if miou_of is None or sensitivity_inputs is None:
        raise EdgesegError("--max-miou-drop needs held-out data to measure mIoU; pass --val-data SPEC")
    ranking = _ranking(onnx_path, sensitivity_inputs, ranges, layout)
    report.ranked_layers = [(r.node, round(r.sqnr_db, 2)) for r in ranking]
    latency_of = (lambda p: median_latency_ms(p, latency_shape)) if latency_shape else None
    report.guard = quantize_with_guard(onnx_path, out, ranges, layout, miou_of, max_miou_drop, ranking,
                                       latency_of=latency_of, bias_shifts=shifts)
    return report


def _refuse_early(calibrator: str, trt_cache: str | Path | None, trt_version: str) -> None:
    """One-line EdgesegErrors before any work: an unknown calibrator; for a TensorRT cache, a calibrator
    TensorRT cannot replay (percentile, mse) or a TensorRT without implicit INT8 (11.x)."""
    check_calibrator(calibrator)
    if trt_cache is not None:
        algorithm_of(calibrator)
        trt_api.require_implicit_int8(trt_version)


def _write_trt_cache(path: str | Path, symmetric_ranges: dict[str, tuple[float, float]], trt_version: str,
                     calibrator: str) -> Path:
    """TensorRT's implicit-INT8 cache from symmetric (-amax, amax) ranges (constant tensors left out)."""
    amax = {n: max(abs(lo), abs(hi)) for n, (lo, hi) in symmetric_ranges.items() if hi > lo}
    return write_calibration_cache(path, amax, trt_version, algorithm=calibrator)


def _ranking(onnx_path: str | Path, sensitivity_inputs, ranges: dict[str, tuple[float, float]],
             layout: QuantLayout) -> list[LayerSensitivity]:
    """The Convs from most to least INT8-sensitive on ``sensitivity_inputs``."""
    import onnx

    model = onnx.load(str(onnx_path))
    groups = (g for _, g in iter_activation_groups(onnx_path, sensitivity_inputs))
    return rank_layers(model, groups, ranges, layout)


def compare_calibrators(onnx_path: str | Path, stats: dict[str, TensorStats], layout: str | QuantLayout, miou_of,
                        workdir: str | Path, preprocessing: Preprocessing | None = None,
                        options: Int8Options = Int8Options(),
                        calib_inputs: Callable[[], Iterable[np.ndarray]] | None = None) -> list[dict]:
    """mIoU of the FP32 model and of the INT8 model from each calibrator (same statistics and options)."""
    layout = get_layout(layout)
    rows = [{"calibrator": "fp32", "miou": miou_of(Path(onnx_path))}]
    for name in CALIBRATOR_NAMES:
        path = Path(workdir) / f"int8-{layout.name}-{name}.onnx"
        build_int8(onnx_path, path, stats, layout=layout, calibrator=name, preprocessing=preprocessing,
                   options=options, calib_inputs=calib_inputs)
        rows.append({"calibrator": name, "miou": miou_of(path), "path": str(path)})
    return rows
