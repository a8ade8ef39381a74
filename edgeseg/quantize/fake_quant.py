"""The deployed INT8 quantizers in numpy (what ONNX Runtime / TensorRT compute for our Q/DQ layouts).

* activations, ``trt``: symmetric INT8, scale max(|low|, |high|) / 127, levels -127..127;
* activations, ``cpu``: asymmetric U8 over [min(low, 0), max(high, 0)], scale (high - low) / 255,
  zero point round(-low / scale), levels 0..255;
* weights (both layouts): symmetric INT8 per output channel, scale max|w| / 127.
"""
from __future__ import annotations

import numpy as np


def fake_quant_activation(x: np.ndarray, low: float, high: float, layout: str) -> np.ndarray:
    if layout == "trt":
        scale = np.float32(max(abs(low), abs(high)) / 127 or 1.0)
        return np.clip(np.round(x / scale), -127, 127) * scale
    low, high = min(low, 0.0), max(high, 0.0)
    scale = np.float32((high - low) / 255 or 1.0)
    zero = np.float32(round(-low / scale))
    return (np.clip(np.round(x / scale) + zero, 0, 255) - zero) * scale


def fake_quant_weight(w: np.ndarray, axis: int) -> np.ndarray:
    dims = tuple(d for d in range(w.ndim) if d != axis)
    scale = np.maximum(np.abs(w).max(axis=dims, keepdims=True), 1e-12) / np.float32(127)
    return (np.clip(np.round(w / scale), -127, 127) * scale).astype(w.dtype)
