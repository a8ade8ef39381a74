"""Calibrators: activation histogram -> clipping threshold ``amax`` (numpy only).

Every calibrator reads the histogram of |x| for one tensor: ``hist[i]`` counts values in
``[i * bin_width, (i + 1) * bin_width)``, and ``absmax`` is the largest |x| seen. The result is
the amax whose symmetric INT8 scale is ``amax / 127``.

* ``minmax``: the largest |x| (no clipping).
* ``percentile``: the |x| below which ``percentile`` % of the values lie.
* ``entropy``: TensorRT's EntropyCalibration2: the threshold whose 128-level quantized
  distribution has the smallest KL divergence from the clipped reference distribution.
* ``mse``: the threshold with the smallest mean squared quantization error (rounding + clipping),
  evaluated at bin centres.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edgeseg.errors import EdgesegError

INT8_LEVELS = 128  # positive levels of symmetric INT8: 0..127


def _check(hist: np.ndarray, bin_width: float) -> np.ndarray:
    hist = np.asarray(hist, dtype=np.float64)
    if hist.ndim != 1 or hist.size < INT8_LEVELS or not np.isfinite(hist).all() or (hist < 0).any():
        raise EdgesegError(f"expected a 1-D histogram of >= {INT8_LEVELS} finite non-negative counts, got shape "
                           f"{hist.shape}; collect activation statistics again")
    if not np.isfinite(bin_width) or bin_width <= 0 or hist.sum() == 0:
        raise EdgesegError(f"activation range is zero or not finite (bin width {bin_width}, {hist.sum():.0f} values): "
                           "the tensor is constant or NaN on the calibration set; check the calibration images and "
                           "preprocessing, or exclude the layer from quantization")
    return hist


def minmax_amax(hist: np.ndarray, bin_width: float, absmax: float) -> float:
    _check(hist, bin_width)
    return float(absmax)


def percentile_amax(hist: np.ndarray, bin_width: float, absmax: float, percentile: float = 99.99) -> float:
    hist = _check(hist, bin_width)
    if not 0 < percentile <= 100:
        raise EdgesegError(f"percentile must be in (0, 100], got {percentile}")
    cdf = np.cumsum(hist) / hist.sum()
    idx = int(np.searchsorted(cdf, percentile / 100.0 - 1e-12, side="left"))  # tolerate float rounding
    return float(min(absmax, (idx + 1) * bin_width))


def entropy_amax(hist: np.ndarray, bin_width: float, absmax: float, start_bin: int = INT8_LEVELS,
                 stride: int | None = None) -> float:
    """KL-divergence threshold search over bin counts ``i`` in [start_bin, len(hist)] (TensorRT's
    EntropyCalibration2; the zero bin is set equal to bin 1 as TensorRT's reference does).
    ``stride`` defaults to about 256 candidate thresholds."""
    hist = _check(hist, bin_width).copy()
    hist[0] = hist[1]
    n = hist.size
    stride = stride or max(1, (n - start_bin) // 256)
    best_i, best_kl = n, np.inf
    for i in range(start_bin, n + 1, stride):
        reference = hist[:i].copy()
        reference[-1] += hist[i:].sum()  # clipped outliers land in the last bin
        # quantize the first i bins into 128 levels; each level's mass spread over its non-empty bins
        group = (np.arange(i) * INT8_LEVELS) // i
        nonzero = hist[:i] > 0
        level_mass = np.bincount(group, weights=hist[:i], minlength=INT8_LEVELS)
        level_count = np.bincount(group, weights=nonzero.astype(np.float64), minlength=INT8_LEVELS)
        expanded = np.where(nonzero, level_mass[group] / np.maximum(level_count[group], 1), 0.0)
        p_sum, q_sum = reference.sum(), expanded.sum()
        if p_sum == 0 or q_sum == 0:
            continue
        p, q = reference / p_sum, expanded / q_sum
        mask = p > 0
        if (q[mask] == 0).any():
            continue  # infinite divergence: this threshold drops mass that the reference keeps
        kl = float(np.sum(p[mask] * np.log(p[mask] / q[mask])))
        if kl <= best_kl:  # ties: prefer the larger threshold, as TensorRT does
            best_i, best_kl = i, kl
    return float(min(absmax, best_i * bin_width))


def mse_amax(hist: np.ndarray, bin_width: float, absmax: float, candidates: int = 256) -> float:
    """Threshold minimising sum(hist * (x - Q(x))^2) over ``candidates`` thresholds, x at bin centres."""
    hist = _check(hist, bin_width)
    n = hist.size
    centres = (np.arange(n) + 0.5) * bin_width
    best_amax, best_err = absmax, np.inf
    for k in np.unique(np.linspace(INT8_LEVELS // 8, n, candidates).astype(int)):
        amax = k * bin_width
        scale = amax / (INT8_LEVELS - 1)
        q = np.clip(np.round(centres / scale), 0, INT8_LEVELS - 1) * scale
        err = float(np.sum(hist * (centres - q) ** 2))
        if err < best_err:
            best_amax, best_err = amax, err
    return float(min(absmax, best_amax))


CALIBRATORS: dict[str, Callable[..., float]] = {
    "minmax": minmax_amax,
    "percentile": percentile_amax,
    "entropy": entropy_amax,
    "mse": mse_amax,
}


def compute_amax(method: str, hist: np.ndarray, bin_width: float, absmax: float) -> float:
    if method not in CALIBRATORS:
        raise EdgesegError(f"unknown calibrator {method!r}: expected one of {', '.join(CALIBRATORS)}")
    return CALIBRATORS[method](hist, bin_width, absmax)
