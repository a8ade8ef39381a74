"""Bias correction (as NNCF's fast bias correction and AIMET's empirical one): shift each quantized
Conv's bias so that its output mean per channel over the calibration images equals the FP32 one.

For a Conv with input x and weights W, quantized as deployed to xq (the layout's activation
quantizer with the tensor's range) and Wq (per-channel symmetric INT8),

    mean(conv(x, W)) - mean(conv(xq, Wq)) = mean(conv(x, W - Wq)) + mean(conv(x - xq, Wq))

and the mean over output positions of a convolution is linear in the mean, over those positions, of
each kernel tap's view of the zero-padded input. So one pass over FP32 activations keeps, per Conv,
the (C_in, kH, kW) tap means of x and of x - xq, and the shift is their contraction with W - Wq and
Wq: exact for the whole calibration set, without running any convolution. The FP32 inputs are used
(each layer corrects its own quantization error, not its predecessors').
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from edgeseg.quantize.fake_quant import fake_quant_weight
from edgeseg.quantize.layouts import QuantLayout, get_layout


def _geometry(node) -> dict | None:
    """Stride, dilation, pads and groups of a 2-D Conv with explicit padding; None otherwise."""
    from onnx import helper

    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        return None
    return {"strides": list(attrs.get("strides", [1, 1])), "dilations": list(attrs.get("dilations", [1, 1])),
            "pads": list(attrs.get("pads", [0, 0, 0, 0])), "group": int(attrs.get("group", 1))}


def tap_means(x: np.ndarray, kernel: tuple[int, int], geo: dict) -> np.ndarray:
    """(C, kH, kW): for each kernel tap, the mean over images and output positions of the padded input
    value that tap multiplies."""
    top, left, bottom, right = geo["pads"]
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    (sh, sw), (dh, dw), (kh, kw) = geo["strides"], geo["dilations"], kernel
    ho = (xp.shape[2] - dh * (kh - 1) - 1) // sh + 1
    wo = (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
    out = np.empty((x.shape[1], kh, kw), np.float64)
    for i in range(kh):
        for j in range(kw):
            view = xp[:, :, i * dh: i * dh + sh * (ho - 1) + 1: sh, j * dw: j * dw + sw * (wo - 1) + 1: sw]
            out[:, i, j] = view.mean(axis=(0, 2, 3), dtype=np.float64)
    return out


def _contract(weights: np.ndarray, taps: np.ndarray, group: int) -> np.ndarray:
    """Per output channel: sum over its input channels and taps of weights * taps (grouped conv aware)."""
    cout, cin_g = weights.shape[:2]
    taps = taps.reshape(group, cin_g, *taps.shape[1:])
    w = weights.reshape(group, cout // group, cin_g, *weights.shape[2:]).astype(np.float64)
    return np.einsum("gocij,gcij->go", w, taps).reshape(cout)


def _correctable_convs(model, weights: dict[str, np.ndarray], ranges: dict[str, tuple[float, float]],
                       exclude: Iterable[str]) -> dict[str, tuple]:
    """Conv name -> (node, geometry) for the Convs bias correction handles: an initializer 4-D weight, a
    calibrated input, explicit padding, not excluded."""
    excluded = set(exclude)
    convs = {}
    for n in model.graph.node:
        geo = _geometry(n) if n.op_type == "Conv" else None
        if geo and n.input[1] in weights and weights[n.input[1]].ndim == 4 and n.input[0] in ranges \
                and n.name not in excluded:
            convs[n.name] = (n, geo)
    return convs


def _tap_sums(convs: dict[str, tuple], weights: dict[str, np.ndarray], activations: Iterable[dict[str, np.ndarray]],
              ranges: dict[str, tuple[float, float]], fake_quant) -> dict[str, list]:
    """Conv name -> [sum of tap means of x, of x - xq, images seen], in one pass over ``activations``."""
    by_input: dict[str, list[str]] = {}
    for name, (n, _) in convs.items():
        by_input.setdefault(n.input[0], []).append(name)
    sums = {name: [0.0, 0.0, 0] for name in convs}
    for acts in activations:
        for tensor, names in by_input.items():
            if tensor not in acts:
                continue
            x = acts[tensor]
            error = x - fake_quant(x, *ranges[tensor])
            for name in names:
                n, geo = convs[name]
                kernel = weights[n.input[1]].shape[2:]
                s = sums[name]
                s[0] = s[0] + tap_means(x, kernel, geo)
                s[1] = s[1] + tap_means(error, kernel, geo)
                s[2] += 1
    return sums


def bias_shifts(model, activations: Iterable[dict[str, np.ndarray]], ranges: dict[str, tuple[float, float]],
                layout: str | QuantLayout, exclude: Iterable[str] = ()) -> dict[str, np.ndarray]:
    """Bias shift per Conv node name (float32, one value per output channel) for ``layout``.

    ``activations``: FP32 tensors by name, per image or in groups (at least every Conv input);
    only Convs with an initializer weight, a calibrated input and explicit padding are corrected."""
    from onnx import numpy_helper

    weights = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    convs = _correctable_convs(model, weights, ranges, exclude)
    sums = _tap_sums(convs, weights, activations, ranges, get_layout(layout).fake_quant)
    shifts = {}
    for name, (n, geo) in convs.items():
        sum_x, sum_err, count = sums[name]
        if not count:
            continue
        w = weights[n.input[1]]
        wq = fake_quant_weight(w, 0)
        shift = _contract(w - wq, sum_x / count, geo["group"]) + _contract(wq, sum_err / count, geo["group"])
        shifts[name] = shift.astype(np.float32)
    return shifts


def apply_bias_shifts(model, shifts: dict[str, np.ndarray]):
    """A copy of ``model`` whose Convs named in ``shifts`` have bias + shift (a bias is added where missing)."""
    import onnx
    from onnx import numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    inits = {i.name: i for i in out.graph.initializer}
    uses = {}
    for n in out.graph.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    for n in out.graph.node:
        if n.name not in shifts:
            continue
        shift = shifts[n.name]
        if len(n.input) > 2 and n.input[2] in inits and uses[n.input[2]] == 1:
            init = inits[n.input[2]]
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) + shift, init.name))
        else:  # no bias, or one shared with another node: give this Conv its own
            old = numpy_helper.to_array(inits[n.input[2]]) if len(n.input) > 2 and n.input[2] in inits else 0.0
            name = f"{n.name}_corrected_bias"
            out.graph.initializer.append(numpy_helper.from_array((old + shift).astype(np.float32), name))
            if len(n.input) > 2:
                n.input[2] = name
            else:
                n.input.append(name)
    return out


def corrected_model_file(fp32_path: str | Path, out_path: str | Path, shifts: dict[str, np.ndarray],
                         exclude: Iterable[str] = ()) -> Path:
    """Write the FP32 model with ``shifts`` applied (except to ``exclude``, which stay in float)."""
    import onnx

    excluded = set(exclude)
    model = apply_bias_shifts(onnx.load(str(fp32_path)), {k: v for k, v in shifts.items() if k not in excluded})
    onnx.save(model, str(out_path))
    return Path(out_path)
