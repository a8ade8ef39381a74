"""Q/DQ layouts: what differs between the INT8 models edgeseg writes for different runtimes.

Every layout shares the statistics, the calibrators and the weights (S8, symmetric, per output
channel); a ``QuantLayout`` holds the rest. The modules that quantize (``qdq``, ``known_ranges``,
``bias_correction``, ``sensitivity``, ``ptq``) read its fields and never test its name, so a new
layout is one object here (plus the placement code it genuinely needs).

* ``cpu`` (ONNX Runtime's CPU provider, OpenVINO CPU): U8 asymmetric activations, quantized int32
  biases, output Q/DQ: ONNX Runtime turns it into QLinearConv & co.
* ``trt`` (TensorRT explicit quantization): S8 symmetric activations, ModelOpt's placement
  (``trt_placement``), FP16 scales possible for strongly typed builds. Its per-channel weight axes depend on
  the TensorRT version it targets (ConvTranspose: 0 on 8.x, 1 on 10.x / 11.x): ``TRT`` targets
  ``DEFAULT_TRT_TARGET`` (the bundle's default, JetPack 6.0's 8.6), ``TRT.for_target(version)`` another;
  the Q/DQ model records the target and the axes in its metadata.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from edgeseg.errors import EdgesegError
from edgeseg.quantize.fake_quant import fake_quant_s8_symmetric, fake_quant_u8_asymmetric
from edgeseg.quantize.trt_placement import (feed_residual_identity_through_qdq, resizes_left_float,
                                            trt_quantizer_options, trt_weight_axes)

DEFAULT_TRT_TARGET = "8.6.1"  # the TensorRT a trt-layout model is placed for unless told (= build's cache default)
ORT_WEIGHT_AXES = {"Conv": 0, "ConvTranspose": 1}  # ONNX Runtime's quantizer: the output-channel axes


def _no_float_nodes(model: Any) -> list[str]:
    return []


def _ort_defaults(op_types: list[str]) -> dict[str, Any]:
    return {}


@dataclass(frozen=True, eq=False)
class QuantLayout:
    """One Q/DQ layout. Callables take loaded ``onnx.ModelProto``s where they take a model."""

    name: str  # the --layout value
    runtimes: str  # who runs it (help and reports)
    # True: S8 over (-amax, amax), zero point 0 (calibrated ranges stay symmetric); False: U8 over
    # [low, high] with a zero point (ranges may be asymmetric)
    symmetric_activations: bool
    fake_quant: Callable[[np.ndarray, float, float], np.ndarray]  # (x, low, high) -> x as deployed
    # model's op types -> ONNX Runtime quantize_static keywords beyond the shared ones (QDQ format,
    # per-channel S8 symmetric weights, activation type and symmetry from the field above)
    quantizer_options: Callable[[list[str]], dict[str, Any]] = _ort_defaults
    float_nodes: Callable[[Any], list[str]] = _no_float_nodes  # FP32 model -> nodes its rules keep in float
    post_passes: tuple[Callable[[Any], int], ...] = ()  # in-place rewrites of the quantized model (-> changes)
    fp16_scales: bool = False  # may carry FP16 Q/DQ scales and FP16 compute (strongly typed TensorRT)
    # TensorRT version -> per-channel weight axis by op type (None: ONNX Runtime's, ORT_WEIGHT_AXES), and the
    # version this layout object targets
    target_weight_axes: Callable[[str], dict[str, int]] | None = None
    trt_target: str | None = None

    def weight_axes(self) -> dict[str, int]:
        """Per-channel weight axis by op type (Conv, ConvTranspose) of the models this layout writes."""
        if self.target_weight_axes is None:
            return dict(ORT_WEIGHT_AXES)
        return self.target_weight_axes(self.trt_target or DEFAULT_TRT_TARGET)

    def weight_axis(self, op_type: str) -> int:
        return self.weight_axes()[op_type]

    def for_target(self, trt_version: str) -> QuantLayout:
        """This layout placed for TensorRT ``trt_version`` (itself when its placement does not depend on it)."""
        if self.target_weight_axes is None or str(trt_version) == self.trt_target:
            return self
        self.target_weight_axes(str(trt_version))  # an unparsable version fails here, in one line
        return replace(self, trt_target=str(trt_version))


CPU = QuantLayout("cpu", "ONNX Runtime / OpenVINO CPU", symmetric_activations=False,
                  fake_quant=fake_quant_u8_asymmetric)
TRT = QuantLayout("trt", "TensorRT", symmetric_activations=True, fake_quant=fake_quant_s8_symmetric,
                  quantizer_options=trt_quantizer_options, float_nodes=resizes_left_float,
                  post_passes=(feed_residual_identity_through_qdq,), fp16_scales=True,
                  target_weight_axes=trt_weight_axes, trt_target=DEFAULT_TRT_TARGET)

LAYOUTS: dict[str, QuantLayout] = {layout.name: layout for layout in (CPU, TRT)}
LAYOUT_NAMES: tuple[str, ...] = tuple(LAYOUTS)


def get_layout(layout: str | QuantLayout, trt_version: str | None = None) -> QuantLayout:
    """The layout named ``layout``, placed for TensorRT ``trt_version`` when given (a QuantLayout is returned as
    is, its target kept); one-line EdgesegError for another name."""
    if isinstance(layout, QuantLayout):
        return layout
    if layout not in LAYOUTS:
        raise EdgesegError(f"--layout must be one of {', '.join(LAYOUT_NAMES)}, got {layout!r}")
    return LAYOUTS[layout] if trt_version is None else LAYOUTS[layout].for_target(trt_version)
