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


@dataclass(frozen=True)
class LayerSensitivity:
    node: str
    op_type: str
    sqnr_db: float


def _fake_quant_activation(x: torch.Tensor, lo: float, hi: float, layout: str) -> torch.Tensor:
    if layout == "trt":  # symmetric int8
        scale = max(abs(lo), abs(hi)) / 127 or 1.0
        return torch.clamp(torch.round(x / scale), -127, 127) * scale
    lo, hi = min(lo, 0.0), max(hi, 0.0)  # asymmetric uint8 with 0 representable
    scale = (hi - lo) / 255 or 1.0
    zero = round(-lo / scale)
    return (torch.clamp(torch.round(x / scale) + zero, 0, 255) - zero) * scale


def _fake_quant_weight(w: torch.Tensor, axis: int) -> torch.Tensor:
    dims = [d for d in range(w.dim()) if d != axis]
    amax = w.abs().amax(dim=dims, keepdim=True).clamp_min(1e-12)
    scale = amax / 127
    return torch.clamp(torch.round(w / scale), -127, 127) * scale


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
                layout: str) -> list[LayerSensitivity]:
    """Conv/ConvTranspose nodes of the FP32 ``model`` from most to least sensitive.

    ``activations``: per calibration image, the FP32 tensors by name (at least every conv input)."""
    from onnx import numpy_helper

    weights = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose") and n.input[1] in weights
             and n.input[0] in ranges]
    signal = {n.name: 0.0 for n in convs}
    noise = {n.name: 0.0 for n in convs}
    with torch.no_grad():
        for acts in activations:
            for n in convs:
                x = torch.from_numpy(acts[n.input[0]])
                w = weights[n.input[1]]
                b = weights.get(n.input[2]) if len(n.input) > 2 else None
                y = _conv(n, x, w, b)
                yq = _conv(n, _fake_quant_activation(x, *ranges[n.input[0]], layout),
                           _fake_quant_weight(w, 0 if n.op_type == "Conv" else 1), b)
                signal[n.name] += float((y ** 2).sum())
                noise[n.name] += float(((y - yq) ** 2).sum())
    out = [LayerSensitivity(n.name, n.op_type, 10 * np.log10(max(signal[n.name], 1e-30) / max(noise[n.name], 1e-30)))
           for n in convs]
    return sorted(out, key=lambda s: s.sqnr_db)
