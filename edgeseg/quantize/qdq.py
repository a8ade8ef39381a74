"""INT8 Q/DQ ONNX from our calibration ranges, in two layouts from the same statistics.

* ``trt``: what TensorRT's explicit quantization fuses: symmetric INT8 (zero point 0),
  per-channel weights on the output-channel axis (Conv 0, ConvTranspose 1), per-tensor
  activations, Q/DQ only on the inputs and weights of Conv / ConvTranspose / pooling, float
  biases, no Q/DQ on op outputs, residual Adds fed a Q/DQ on the identity branch only (the Conv
  branch stays float so Conv+Add fuse), and Resize quantized on its data input only where that
  input is a Conv(+BN)+activation output (ModelOpt 0.47's rule: such a Resize "prefers quantized
  input", which lets TensorRT keep the Conv output in INT8); every other Resize stays float.
* ``cpu``: the layout ONNX Runtime's CPU provider turns into QLinearConv & co.: U8 activations
  (asymmetric), S8 per-channel weights, quantized int32 biases, output Q/DQ.

ONNX Runtime's quantizer places the nodes; the ranges come from our calibrators, handed to it
through its calibration-cache file, so no ORT calibration pass runs.
"""
from __future__ import annotations

import contextlib
import json
import logging
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from edgeseg.errors import EdgesegError
from edgeseg.io_utils import atomic_path
from edgeseg.quantize.calibrators import compute_amax, compute_range_u8
from edgeseg.quantize.histograms import TensorStats

LAYOUTS = ("trt", "cpu")
TRT_OP_TYPES = ["Conv", "ConvTranspose", "MaxPool", "AveragePool", "GlobalAveragePool", "Resize"]
ACTIVATIONS = {"Relu", "Clip", "LeakyRelu", "HardSwish", "HardSigmoid", "Sigmoid", "Elu", "Selu", "Softplus", "Tanh"}


def resizes_left_float(model) -> list[str]:
    """Resize nodes the trt layout leaves in high precision: all but those whose data input comes from an
    activation of a Conv / ConvTranspose (through an optional BatchNormalization), ModelOpt's rule."""
    producers = {o: n for n in model.graph.node for o in n.output}

    def conv_activation(tensor: str) -> bool:
        act = producers.get(tensor)
        if act is None or act.op_type not in ACTIVATIONS:
            return False
        src = producers.get(act.input[0])
        if src is not None and src.op_type == "BatchNormalization":
            src = producers.get(src.input[0])
        return src is not None and src.op_type in ("Conv", "ConvTranspose")

    return [n.name for n in model.graph.node if n.op_type == "Resize" and not conv_activation(n.input[0])]


def activation_ranges(stats: dict[str, TensorStats], method: str, layout: str,
                      u8_search: bool = False) -> dict[str, tuple[float, float]]:
    """(low, high) per tensor: symmetric (-amax, amax) for ``trt``; for ``cpu`` (asymmetric U8) the
    calibrator's U8 range (``u8_search``: entropy and MSE search the U8 quantizer itself; otherwise,
    and for minmax / percentile, the observed range clipped to the symmetric [-amax, amax])."""
    ranges = {}
    for name, s in stats.items():
        if s.absmax == 0:
            ranges[name] = (0.0, 0.0)  # constant-zero tensor; ORT gives it a unit scale
        elif layout == "trt":
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


def _quantize_options(layout: str, all_op_types: list[str]) -> dict:
    from onnxruntime.quantization import QuantFormat, QuantType

    if layout == "trt":
        return dict(quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=False,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, op_types_to_quantize=TRT_OP_TYPES,
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "AddQDQPairToWeight": True,
                                   "QuantizeBias": False, "ForceQuantizeNoInputCheck": True, "DedicatedQDQPair": False,
                                   "OpTypesToExcludeOutputQuantization": sorted(all_op_types),
                                   "QDQOpTypePerChannelSupportToAxis": {"Conv": 0, "ConvTranspose": 1}})
    return dict(quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=False,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})


def _feed_residual_identity_through_qdq(model) -> int:
    """TensorRT residual rule: for ``Add(conv_out, identity)`` feed the identity input from the DQ
    that already quantizes that tensor for its Conv consumer (same scale). Returns Adds changed."""
    producers = {o: n for n in model.graph.node for o in n.output}
    dq_of = {}  # float tensor -> DQ output that reconstructs it
    for n in model.graph.node:
        if n.op_type == "DequantizeLinear":
            q = producers.get(n.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                dq_of.setdefault(q.input[0], n.output[0])
    changed = 0
    for n in model.graph.node:
        if n.op_type != "Add" or len(n.input) != 2:
            continue
        kinds = [producers[i].op_type if i in producers else None for i in n.input]
        for k, name in enumerate(n.input):
            other = kinds[1 - k]
            if other in ("Conv", "ConvTranspose") and kinds[k] not in ("Conv", "ConvTranspose", "DequantizeLinear") \
                    and name in dq_of:
                n.input[k] = dq_of[name]
                changed += 1
                break
    return changed


FP16_SCALE_MIN_OPSET = 19  # QuantizeLinear/DequantizeLinear take float16 scales from opset 19


def _opset(model) -> int:
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


def quantize_qdq(fp32_path: str | Path, out_path: str | Path, ranges: dict[str, tuple[float, float]], layout: str,
                 nodes_to_exclude: Iterable[str] = (), fp16_scales: bool = False,
                 bias_shifts: dict[str, np.ndarray] | None = None) -> Path:
    """Write the INT8 Q/DQ model for ``layout`` ('trt' or 'cpu'), keeping ``nodes_to_exclude`` in float.

    ``bias_shifts`` (from ``bias_correction.bias_shifts`` for this layout): added to the biases of the
    quantized Convs first (not to the excluded ones, which stay in float).

    ``fp16_scales`` (trt layout): FP16 Q/DQ scales and an FP16 graph with FP32 I/O, for strongly typed
    TensorRT 10/11 builds where a DQ's output type follows its scale (INT8 + FP16). Needs an opset >= 19
    export, which TensorRT 8.6 cannot parse."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, quantize_static

    if layout not in LAYOUTS:
        raise EdgesegError(f"--layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    for name, (lo, hi) in ranges.items():
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise EdgesegError(f"activation range of {name} is not finite ({lo}, {hi}); recalibrate")
    model = onnx.load(str(fp32_path))
    if fp16_scales and (layout != "trt" or _opset(model) < FP16_SCALE_MIN_OPSET):
        raise EdgesegError(f"FP16 scales need --layout trt and an ONNX at opset >= {FP16_SCALE_MIN_OPSET} (got layout "
                           f"{layout}, opset {_opset(model)}); re-export with `edgeseg export --opset 19` (for TensorRT "
                           "10/11 strongly typed builds; TensorRT 8.6 parses opset <= 17)")
    op_types = sorted({n.op_type for n in model.graph.node})
    nodes_to_exclude = list(nodes_to_exclude)
    if layout == "trt":
        nodes_to_exclude += resizes_left_float(model)
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
            if layout == "trt":
                q = onnx.load(str(tmp_out))
                if _feed_residual_identity_through_qdq(q):
                    onnx.save(q, str(tmp_out))
            if fp16_scales:
                from edgeseg.quantize.fp16 import convert_fp16

                convert_fp16(tmp_out, tmp_out)
            _copy_metadata(fp32_path, tmp_out, {"edgeseg.precision": json.dumps("int8"),
                                                "edgeseg.qdq_layout": json.dumps(layout),
                                                "edgeseg.qdq_scale_dtype": json.dumps("fp16" if fp16_scales else "fp32")})
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
                   nodes_to_exclude: Iterable[str] = ()) -> Path:
    """The mixed INT8 + FP16 graph for strongly typed TensorRT (11.x, or 10.x by choice): the trt layout
    with FP16 scales and FP16 compute between the Q/DQ pairs (what ModelOpt's high_precision_dtype="fp16"
    produces), from an FP32 export of any opset (upgraded to 19 on the way)."""
    import onnx

    with tempfile.TemporaryDirectory(prefix="edgeseg-o19-") as tmp:
        src = Path(fp32_path)
        if _opset(onnx.load(str(src), load_external_data=False)) < FP16_SCALE_MIN_OPSET:
            src = upgrade_opset(src, Path(tmp) / "model.o19.onnx")
        return quantize_qdq(src, out_path, ranges, "trt", nodes_to_exclude, fp16_scales=True)


@contextlib.contextmanager
def _quiet_root_logger():
    """ORT's quantizer logs advice through the root logger ("consider pre-processing"); silence it."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def _copy_metadata(src: str | Path, dst: str | Path, extra: dict[str, str]) -> None:
    """Carry the source model's metadata_props (preprocessing, classes...) into ``dst``, plus ``extra``."""
    import onnx

    source = onnx.load(str(src), load_external_data=False)
    target = onnx.load(str(dst))
    props = {p.key: p.value for p in source.metadata_props}
    props.update({p.key: p.value for p in target.metadata_props})
    props.update(extra)
    del target.metadata_props[:]
    for k, v in props.items():
        target.metadata_props.add(key=k, value=v)
    onnx.save(target, str(dst))
