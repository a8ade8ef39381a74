"""INT8 Q/DQ ONNX from our calibration ranges, in any layout (``quantize.layouts``) from the same statistics.

ONNX Runtime's quantizer places the nodes as the layout says; the ranges come from our calibrators,
handed to it through its calibration-cache file, so no ORT calibration pass runs. The layout's
rules then keep some nodes in float and its post-passes rewrite the result.
"""
from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from edgeseg.backends.trt_api import trt_major
from edgeseg.backends.trt_lint import retarget_weight_axes
from edgeseg.errors import EdgesegError
from edgeseg.io_utils import atomic_path
from edgeseg.quantize.calibrators import compute_amax, compute_range_u8
from edgeseg.quantize.histograms import TensorStats
from edgeseg.quantize.layouts import DEFAULT_TRT_TARGET, LAYOUTS, TRT, QuantLayout, get_layout

FP16_SCALE_MIN_OPSET = 19  # QuantizeLinear/DequantizeLinear take float16 scales from opset 19
STRONGLY_TYPED_TARGET = "11"  # what FP16-scale graphs target unless told: strongly typed TensorRT (10.x by choice, 11)


def activation_ranges(stats: dict[str, TensorStats], method: str, layout: str | QuantLayout,
                      u8_search: bool = False) -> dict[str, tuple[float, float]]:
    """(low, high) per tensor: symmetric (-amax, amax) for a layout with symmetric activations; for
    asymmetric U8 the calibrator's U8 range (``u8_search``: entropy and MSE search the U8 quantizer
    itself; otherwise, and for minmax / percentile, the observed range clipped to the symmetric [-amax, amax])."""
    symmetric = get_layout(layout).symmetric_activations
    ranges = {}
    for name, s in stats.items():
        if s.absmax == 0:
            ranges[name] = (0.0, 0.0)  # constant-zero tensor; ORT gives it a unit scale
        elif symmetric:
            amax = compute_amax(method, s.hist, s.bin_width, s.absmax)
            ranges[name] = (-amax, amax)
        elif u8_search:
            ranges[name] = compute_range_u8(method, s)
        else:
            amax = compute_amax(method, s.hist, s.bin_width, s.absmax)
            ranges[name] = (max(s.minimum, -amax), min(s.maximum, amax))
    return ranges


def _write_ort_cache(ranges: dict[str, tuple[float, float]], path: Path) -> None:
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorsData, save_tensors_data

    data = {k: (np.float32(lo), np.float32(hi)) for k, (lo, hi) in ranges.items()}
    save_tensors_data(TensorsData(CalibrationMethod.MinMax, data), path)


def _quantize_options(layout: QuantLayout, op_types: list[str]) -> dict:
    """quantize_static keywords: the shared ones (QDQ, per-channel S8 symmetric weights), the activation
    type and symmetry, then the layout's own."""
    from onnxruntime.quantization import QuantFormat, QuantType

    own = dict(layout.quantizer_options(op_types))
    extra = {"ActivationSymmetric": layout.symmetric_activations, "WeightSymmetric": True,
             **own.pop("extra_options", {})}
    return dict(quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=False,
                activation_type=QuantType.QInt8 if layout.symmetric_activations else QuantType.QUInt8,
                weight_type=QuantType.QInt8, **own, extra_options=extra)


def _opset(model) -> int:
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


def _check_request(model, ranges: dict[str, tuple[float, float]], layout: QuantLayout, fp16_scales: bool) -> None:
    """One-line EdgesegErrors for ranges that are not finite and FP16 scales the layout or opset cannot carry."""
    for name, (lo, hi) in ranges.items():
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise EdgesegError(f"activation range of {name} is not finite ({lo}, {hi}); recalibrate")
    if fp16_scales and (not layout.fp16_scales or _opset(model) < FP16_SCALE_MIN_OPSET):
        able = ", ".join(name for name, each in LAYOUTS.items() if each.fp16_scales)
        raise EdgesegError(f"FP16 scales need --layout {able} and an ONNX at opset >= {FP16_SCALE_MIN_OPSET} (got "
                           f"layout {layout.name}, opset {_opset(model)}); re-export with `edgeseg export --opset 19` "
                           "(for TensorRT 10/11 strongly typed builds; TensorRT 8.6 parses opset <= 17)")


def _apply_post_passes(path: Path, layout: QuantLayout) -> None:
    """Run the layout's rewrites on the quantized model at ``path`` (saved again only when one changed it), then
    put the per-channel weights on the axes of the layout's TensorRT target. ONNX Runtime's quantizer writes
    Conv 0 / ConvTranspose 1 whatever QDQOpTypePerChannelSupportToAxis says (its QDQ Conv handler asks
    is_tensor_per_channel without the op type), so the target's axes are applied here, by the function that
    also retargets a bundle (``trt_lint.retarget_weight_axes``)."""
    if not layout.post_passes and layout.target_weight_axes is None:
        return
    import onnx

    model = onnx.load(str(path))
    changes = sum(rewrite(model) for rewrite in layout.post_passes)
    if layout.target_weight_axes is not None:
        changes += retarget_weight_axes(model, layout.trt_target or DEFAULT_TRT_TARGET)
    if changes:
        onnx.save(model, str(path))


def quantize_qdq(fp32_path: str | Path, out_path: str | Path, ranges: dict[str, tuple[float, float]],
                 layout: str | QuantLayout, nodes_to_exclude: Iterable[str] = (), fp16_scales: bool = False,
                 bias_shifts: dict[str, np.ndarray] | None = None) -> Path:
    """Write the INT8 Q/DQ model for ``layout`` (a name of ``LAYOUTS``), keeping ``nodes_to_exclude`` and the
    nodes the layout's rules leave in float.

    ``bias_shifts`` (from ``bias_correction.bias_shifts`` for this layout): added to the biases of the
    quantized Convs first (not to the excluded ones, which stay in float).

    ``fp16_scales`` (layouts with ``fp16_scales``: trt): FP16 Q/DQ scales and an FP16 graph with FP32 I/O,
    for strongly typed TensorRT 10/11 builds where a DQ's output type follows its scale (INT8 + FP16).
    Needs an opset >= 19 export, which TensorRT 8.6 cannot parse; a trt layout targeting 8.x is placed for
    ``STRONGLY_TYPED_TARGET`` then (the weight axes of 10.x / 11.x).

    The metadata records the layout, the scale dtype, the per-channel weight axes and the TensorRT target."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, quantize_static

    layout = get_layout(layout)
    model = onnx.load(str(fp32_path))
    _check_request(model, ranges, layout, fp16_scales)
    if fp16_scales and layout.trt_target is not None and trt_major(layout.trt_target) < 10:
        layout = layout.for_target(STRONGLY_TYPED_TARGET)
    op_types = sorted({n.op_type for n in model.graph.node})
    nodes_to_exclude = list(nodes_to_exclude) + layout.float_nodes(model)
    out_path = Path(out_path)
    with tempfile.TemporaryDirectory(prefix="edgeseg-q-") as tmp:
        cache = Path(tmp) / "ranges.json"
        _write_ort_cache(ranges, cache)
        source = fp32_path
        if bias_shifts:
            from edgeseg.quantize.bias_correction import corrected_model_file

            source = corrected_model_file(fp32_path, Path(tmp) / "corrected.onnx", bias_shifts, nodes_to_exclude)
        with atomic_path(out_path) as tmp_out, _quiet_root_logger():
            quantize_static(str(source), str(tmp_out), calibration_data_reader=None,
                            calibrate_method=CalibrationMethod.MinMax, calibration_cache_path=str(cache),
                            nodes_to_exclude=nodes_to_exclude, **_quantize_options(layout, op_types))
            _apply_post_passes(tmp_out, layout)
            if fp16_scales:
                from edgeseg.quantize.fp16 import convert_fp16

                convert_fp16(tmp_out, tmp_out)
            fields = {"precision": "int8", "qdq_layout": layout.name, "qdq_scale_dtype": "fp16" if fp16_scales else
                      "fp32", "qdq_weight_axes": layout.weight_axes()}
            if layout.trt_target is not None:
                fields["qdq_trt_target"] = layout.trt_target
            _carry_metadata(fp32_path, tmp_out, fields)
    return out_path


def upgrade_opset(src: str | Path, dst: str | Path, opset: int = FP16_SCALE_MIN_OPSET) -> Path:
    """``src`` converted to ``opset`` (onnx.version_converter; tensor names and metadata kept)."""
    import onnx
    from onnx import version_converter

    model = version_converter.convert_version(onnx.load(str(src)), opset)
    onnx.checker.check_model(model)
    with atomic_path(dst) as tmp:
        onnx.save(model, str(tmp))
    return Path(dst)


def fp16_qdq_graph(fp32_path: str | Path, out_path: str | Path, ranges: dict[str, tuple[float, float]],
                   nodes_to_exclude: Iterable[str] = (), trt_version: str = STRONGLY_TYPED_TARGET) -> Path:
    """The mixed INT8 + FP16 graph for strongly typed TensorRT (11.x, or 10.x by choice): the trt layout
    placed for ``trt_version`` with FP16 scales and FP16 compute between the Q/DQ pairs (what ModelOpt's
    high_precision_dtype="fp16" produces), from an FP32 export of any opset (upgraded to 19 on the way)."""
    import onnx

    with tempfile.TemporaryDirectory(prefix="edgeseg-o19-") as tmp:
        src = Path(fp32_path)
        if _opset(onnx.load(str(src), load_external_data=False)) < FP16_SCALE_MIN_OPSET:
            src = upgrade_opset(src, Path(tmp) / "model.o19.onnx")
        return quantize_qdq(src, out_path, ranges, TRT.for_target(trt_version), nodes_to_exclude, fp16_scales=True)


@contextlib.contextmanager
def _quiet_root_logger():
    """ORT's quantizer logs advice through the root logger ("consider pre-processing"); silence it."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def _carry_metadata(src: str | Path, dst: str | Path, fields: dict) -> None:
    """Carry the source model's metadata (preprocessing, classes...) into the file ``dst``, plus ``fields``."""
    import onnx

    from edgeseg.export.metadata import copy_metadata, set_metadata

    target = onnx.load(str(dst))
    copy_metadata(onnx.load(str(src), load_external_data=False), target)
    set_metadata(target, fields)
    onnx.save(target, str(dst))
