"""Activation ranges known by construction, applied over the calibrated ones.

* The network input: the preprocessing maps pixels 0..255 to ``(p * scale - mean) / std`` per
  channel, so the input lies exactly in [min over channels of the low end, max over channels of the
  high end] (one per-tensor range must cover every channel). Calibrating it can only clip real
  pixels (e.g. bright sky), so the input range is always taken from the preprocessing.
* ``Clip(lo, hi)`` outputs (ReLU6: [0, 6]) lie in [lo, hi]; ``Relu`` outputs are >= 0.

``apply_known_ranges`` turns the calibrated (low, high) per tensor into what the deployed
quantizer gets: exact ranges replace the calibrated ones; bounds only narrow them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeseg.data.preprocess import Preprocessing
from edgeseg.quantize.layouts import QuantLayout, get_layout


@dataclass(frozen=True)
class KnownRange:
    low: float
    high: float
    exact: bool  # True: the tensor spans (nearly) all of it, use it as the range; False: a bound only


def input_range(preprocessing: Preprocessing) -> tuple[float, float]:
    """(low, high) of the network input over all channels, from pixels 0 and 255."""
    mean, std = np.asarray(preprocessing.mean, np.float64), np.asarray(preprocessing.std, np.float64)
    ends = (np.array([0.0, 255.0])[:, None] * preprocessing.scale - mean) / std
    return float(ends.min()), float(ends.max())


def _constant_values(model) -> dict[str, float]:
    """Scalar initializers and Constant outputs by name (Clip's min/max inputs)."""
    from onnx import numpy_helper

    values = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            values[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    return {k: float(v.ravel()[0]) for k, v in values.items() if v.size == 1}


def known_ranges(model, preprocessing: Preprocessing | None, exact_clip: bool = True) -> dict[str, KnownRange]:
    """Known ranges of ``model``'s tensors: the graph input (when ``preprocessing`` is given), Clip and
    Relu outputs. ``exact_clip``: a Clip output's range is its clip interval (as ReLU6 = [0, 6] in
    TFLite), else only a bound on the calibrated range."""
    from onnx import helper

    known: dict[str, KnownRange] = {}
    initializers = {i.name for i in model.graph.initializer}
    if preprocessing is not None:
        for graph_input in model.graph.input:
            if graph_input.name not in initializers:
                known[graph_input.name] = KnownRange(*input_range(preprocessing), exact=True)
    constants = _constant_values(model)
    for n in model.graph.node:
        if n.op_type == "Relu":
            known[n.output[0]] = KnownRange(0.0, np.inf, exact=False)
        elif n.op_type == "Clip":
            attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}  # opset < 11 form
            low = constants.get(n.input[1], -np.inf) if len(n.input) > 1 and n.input[1] else attrs.get("min", -np.inf)
            high = constants.get(n.input[2], np.inf) if len(n.input) > 2 and n.input[2] else attrs.get("max", np.inf)
            bounded = np.isfinite(low) and np.isfinite(high)
            known[n.output[0]] = KnownRange(float(low), float(high), exact=exact_clip and bounded)
    return known


def apply_known_ranges(ranges: dict[str, tuple[float, float]], known: dict[str, KnownRange],
                       layout: str | QuantLayout) -> dict[str, tuple[float, float]]:
    """``ranges`` with exact known ranges substituted and bounds applied; a layout with symmetric
    activations keeps its ranges symmetric."""
    symmetric = get_layout(layout).symmetric_activations
    out = dict(ranges)
    for name, k in known.items():
        if name not in out:
            continue
        lo, hi = (k.low, k.high) if k.exact else (max(out[name][0], k.low), min(out[name][1], k.high))
        if symmetric:
            if not k.exact:
                continue  # symmetric (-amax, amax): a lower bound of 0 does not change amax
            amax = max(abs(lo), abs(hi))
            lo, hi = -amax, amax
        out[name] = (float(lo), float(hi))
    return out
