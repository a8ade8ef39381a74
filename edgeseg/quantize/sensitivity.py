"""Per-layer INT8 sensitivity: the output SQNR of each Conv when only its own input (per-tensor,
calibrated range) and weights (per-channel, symmetric) are fake-quantized, on real FP32
activations from a few calibration images. Low SQNR = sensitive; the guard keeps those in
higher precision first. Local, so one FP32 pass ranks every layer (no N re-quantizations)."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from edgeseg.quantize.fake_quant import fake_quant_weight
from edgeseg.quantize.layouts import QuantLayout, get_layout


@dataclass(frozen=True)
class LayerSensitivity:
    node: str
    op_type: str
    sqnr_db: float


def _conv(node, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    from onnx import helper

    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    group = int(attrs.get("group", 1))
    stride = list(attrs.get("strides", [1, 1]))
    dilation = list(attrs.get("dilations", [1, 1]))
    pads = list(attrs.get("pads", [0, 0, 0, 0]))
    if node.op_type == "Conv":
        x = F.pad(x, (pads[1], pads[3], pads[0], pads[2]))
        return F.conv2d(x, w, b, stride, 0, dilation, group)
    out_pad = list(attrs.get("output_padding", [0, 0]))
    y = F.conv_transpose2d(x, w, b, stride, 0, out_pad, group, dilation)
    h, wd = y.shape[-2:]
    return y[..., pads[0]: h - pads[2], pads[1]: wd - pads[3]]


def rank_layers(model, activations: Iterable[dict[str, np.ndarray]], ranges: dict[str, tuple[float, float]],
                layout: str | QuantLayout) -> list[LayerSensitivity]:
    """Conv/ConvTranspose nodes of the FP32 ``model`` from most to least sensitive.

    ``activations``: the FP32 tensors by name (every conv input), per calibration image or in groups."""
    from onnx import numpy_helper

    layout = get_layout(layout)
    fake_quant = layout.fake_quant
    arrays = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    weights = {k: torch.from_numpy(v.copy()) for k, v in arrays.items()}
    convs = [n for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose") and n.input[1] in weights
             and n.input[0] in ranges]
    signal = {n.name: 0.0 for n in convs}
    noise = {n.name: 0.0 for n in convs}
    quantized = {n.name: torch.from_numpy(fake_quant_weight(arrays[n.input[1]], layout.weight_axis(n.op_type)))
                 for n in convs}
    with torch.no_grad():
        for acts in activations:
            for n in convs:
                if n.input[0] not in acts:
                    continue  # activations may come in groups (a part of the graph at a time)
                x = acts[n.input[0]]
                b = weights.get(n.input[2]) if len(n.input) > 2 else None
                y = _conv(n, torch.from_numpy(x), weights[n.input[1]], b)
                yq = _conv(n, torch.from_numpy(fake_quant(x, *ranges[n.input[0]])), quantized[n.name], b)
                signal[n.name] += float((y ** 2).sum())
                noise[n.name] += float(((y - yq) ** 2).sum())
    out = [LayerSensitivity(n.name, n.op_type, 10 * np.log10(max(signal[n.name], 1e-30) / max(noise[n.name], 1e-30)))
           for n in convs]
    return sorted(out, key=lambda s: s.sqnr_db)
