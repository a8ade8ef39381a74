"""The deployed INT8 quantizers in numpy (what ONNX Runtime / TensorRT compute for our Q/DQ layouts).

* activations, S8 symmetric (``trt``): scale max(|low|, |high|) / 127, levels -127..127;
* activations, U8 asymmetric (``cpu``): over [min(low, 0), max(high, 0)], scale (high - low) / 255,
  zero point round(-low / scale), levels 0..255;
* weights (every layout): symmetric INT8 per output channel, scale max|w| / 127.

A layout (``quantize.layouts``) names its activation quantizer; nothing here knows layouts.
"""
from __future__ import annotations

import numpy as np


def fake_quant_s8_symmetric(x: np.ndarray, low: float, high: float) -> np.ndarray:
    """``x`` through symmetric INT8 over (-amax, amax), amax = max(|low|, |high|)."""
    scale = np.float32(max(abs(low), abs(high)) / 127 or 1.0)
    return np.clip(np.round(x / scale), -127, 127) * scale


def fake_quant_u8_asymmetric(x: np.ndarray, low: float, high: float) -> np.ndarray:
    """``x`` through asymmetric U8 over [min(low, 0), max(high, 0)] with a rounded zero point."""
    low, high = min(low, 0.0), max(high, 0.0)
    scale = np.float32((high - low) / 255 or 1.0)
    zero = np.float32(round(-low / scale))
    return (np.clip(np.round(x / scale) + zero, 0, 255) - zero) * scale


def fake_quant_weight(w: np.ndarray, axis: int) -> np.ndarray:
    """``w`` through symmetric INT8 per channel along ``axis`` (Conv 0, ConvTranspose 1)."""
    dims = tuple(d for d in range(w.ndim) if d != axis)
    scale = np.maximum(np.abs(w).max(axis=dims, keepdims=True), 1e-12) / np.float32(127)
    return (np.clip(np.round(w / scale), -127, 127) * scale).astype(w.dtype)
