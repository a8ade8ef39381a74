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

For the asymmetric U8 activations of the ``cpu`` layout, ``compute_range_u8`` gives (low, high): the
entropy and MSE searches run on the signed histogram with the deployed quantizer (256 levels over
[low, high], zero point), every bin for non-negative tensors, a grid of both ends otherwise.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edgeseg.errors import EdgesegError

INT8_LEVELS = 128  # positive levels of symmetric INT8: 0..127
UINT8_LEVELS = 256  # levels of asymmetric U8: 0..255


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


def _window_kl(hist: np.ndarray, starts: np.ndarray, stops: np.ndarray, levels: int) -> np.ndarray:
    """KL(P || Q) for each window [start, stop) of ``hist``, all windows at once (TensorRT's
    EntropyCalibration2 generalised to two-sided windows). P: the histogram clipped to the window (mass
    below / above it added to its first / last bin). Q: the window quantized to ``levels`` levels, bin j
    in level (j * levels) // length, each level's mass spread evenly over its non-empty bins.
    inf where Q is zero on a bin P keeps (the clipped mass lands on an empty end bin) or the window is empty."""
    h = hist
    c_h = np.concatenate([[0.0], np.cumsum(h)])
    c_nz = np.concatenate([[0.0], np.cumsum(h > 0)])
    hlogh = np.where(h > 0, h * np.log(np.where(h > 0, h, 1.0)), 0.0)
    c_hl = np.concatenate([[0.0], np.cumsum(hlogh)])
    total = c_h[-1]
    length = stops - starts
    g = np.arange(levels + 1)
    edges = starts[:, None] + (g[None, :] * length[:, None] + levels - 1) // levels  # first bin of each level
    mass = np.diff(c_h[edges], axis=1)
    count = np.diff(c_nz[edges], axis=1)
    safe = mass > 0
    level_q = np.where(safe, mass / np.where(count > 0, count, 1.0), 1.0)  # q of each non-empty bin of a level
    sum_q_logq = np.sum(np.where(safe, mass * np.log(level_q), 0.0), axis=1)  # sum over bins of h_j log q_j
    first, last = h[starts], h[stops - 1]
    left, right = c_h[starts], total - c_h[stops]
    q_first, q_last = level_q[:, 0], level_q[np.arange(len(starts)), -1]

    def xlogx(v):
        return np.where(v > 0, v * np.log(np.where(v > 0, v, 1.0)), 0.0)

    # sum_j p_j log p_j: interior bins from the running sum, the two end bins with their tails
    a = c_hl[stops - 1] - c_hl[starts + 1] + xlogx(first + left) + xlogx(last + right)
    b = sum_q_logq + np.where(left > 0, left * np.log(np.where(first > 0, q_first, 1.0)), 0.0) \
        + np.where(right > 0, right * np.log(np.where(last > 0, q_last, 1.0)), 0.0)
    window = c_h[stops] - c_h[starts]
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = (a - b) / total - np.log(total) + np.log(window)
    bad = (window <= 0) | ((left > 0) & (first == 0)) | ((right > 0) & (last == 0))
    return np.where(bad, np.inf, np.maximum(kl, 0.0))


def _last_minimum(kl: np.ndarray) -> int:
    """Index of the minimum, the last one among ties (up to rounding): the larger threshold, as TensorRT."""
    return int(np.flatnonzero(kl <= kl.min() + 1e-12)[-1])


def entropy_amax(hist: np.ndarray, bin_width: float, absmax: float, start_bin: int = INT8_LEVELS) -> float:
    """TensorRT's EntropyCalibration2 threshold: the bin count ``i`` in [start_bin, len(hist)] whose
    128-level quantization of hist[:i] (outliers clipped into bin i - 1) has the smallest KL divergence,
    evaluated at every bin as TensorRT does; ties go to the larger threshold. The zero bin is set equal
    to bin 1, as TensorRT's reference does."""
    hist = _check(hist, bin_width).copy()
    hist[0] = hist[1]
    stops = np.arange(start_bin, hist.size + 1)
    kl = _window_kl(hist, np.zeros_like(stops), stops, INT8_LEVELS)
    if not np.isfinite(kl).any():
        return float(absmax)
    return float(min(absmax, stops[_last_minimum(kl)] * bin_width))


def _signed(stats) -> tuple[np.ndarray, int]:
    """The signed histogram (2 * bins, zero at index ``bins``) with the zero bin evened out as TensorRT does."""
    h = _check(stats.signed_hist(), stats.bin_width).copy()
    zero = h.size // 2
    if not stats.neg.any():
        h[zero] = h[zero + 1]
    return h, zero


def _window_candidates(zero: int, nbins: int, levels: int, negative: bool, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """(starts, stops) of the windows to try: every stop when the tensor has no negative values (the
    window starts at 0, as the U8 range must include 0), else a ``grid`` x ``grid`` lattice of both ends."""
    if not negative:
        stops = np.arange(zero + levels, zero + nbins + 1)
        return np.full_like(stops, zero), stops
    ends = np.unique(np.linspace(levels // 2, nbins, grid).astype(int))
    lo, hi = np.meshgrid(ends, ends, indexing="ij")
    return (zero - lo).ravel(), (zero + hi).ravel()


def entropy_range_u8(stats, levels: int = UINT8_LEVELS, grid: int = 64) -> tuple[float, float]:
    """(low, high) for asymmetric 8-bit (``levels`` levels over [low, high], 0 included): the window of
    the signed histogram with the smallest KL divergence after quantization to ``levels`` levels."""
    h, zero = _signed(stats)
    starts, stops = _window_candidates(zero, zero, levels, bool(stats.neg.any()), grid)
    kl = _window_kl(h, starts, stops, levels)
    if not np.isfinite(kl).any():
        return float(stats.minimum), float(stats.maximum)
    k = _last_minimum(kl)
    bw = stats.bin_width
    return float(max(stats.minimum, (starts[k] - zero) * bw)), float(min(stats.maximum, (stops[k] - zero) * bw))


def mse_range_u8(stats, levels: int = UINT8_LEVELS, grid: int = 32, chunk: int = 256) -> tuple[float, float]:
    """(low, high) for asymmetric 8-bit minimising sum(count * (x - Q(x))^2) over the signed histogram
    (x at bin centres), Q as deployed: scale (high - low) / (levels - 1), zero point rounded, clipped."""
    h = _check(stats.signed_hist(), stats.bin_width)
    zero = h.size // 2
    keep = h > 0
    centres = ((np.arange(h.size) - zero + 0.5) * stats.bin_width)[keep]
    weights = h[keep]
    if stats.neg.any():
        starts, stops = _window_candidates(zero, zero, levels // 8, True, grid)
    else:
        stops = np.unique(np.linspace(zero + levels // 8, 2 * zero, 256).astype(int))
        starts = np.full_like(stops, zero)
    lows, highs = (starts - zero) * stats.bin_width, (stops - zero) * stats.bin_width
    errors = np.empty(len(lows))
    for i in range(0, len(lows), chunk):
        lo, hi = lows[i:i + chunk, None], highs[i:i + chunk, None]
        scale = (hi - lo) / (levels - 1)
        zp = np.round(-lo / scale)
        q = (np.clip(np.round(centres / scale) + zp, 0, levels - 1) - zp) * scale
        errors[i:i + chunk] = ((centres - q) ** 2 * weights).sum(axis=1)
    k = int(np.argmin(errors))
    return float(max(stats.minimum, lows[k])), float(min(stats.maximum, highs[k]))


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


CALIBRATORS: dict[str, Callable[..., float]] = {  # every calibrator choice (CLI, comparisons) reads this
    "minmax": minmax_amax,
    "percentile": percentile_amax,
    "entropy": entropy_amax,
    "mse": mse_amax,
}
CALIBRATOR_NAMES: tuple[str, ...] = tuple(CALIBRATORS)


# searches that optimise the asymmetric U8 quantizer itself (the others' symmetric amax is clipped to
# the observed range for U8)
U8_CALIBRATORS: dict[str, Callable[..., tuple[float, float]]] = {
    "entropy": entropy_range_u8,
    "mse": mse_range_u8,
}


def check_calibrator(method: str) -> str:
    """``method`` when it names a calibrator; one-line EdgesegError otherwise."""
    if method not in CALIBRATORS:
        raise EdgesegError(f"unknown calibrator {method!r}: expected one of {', '.join(CALIBRATOR_NAMES)}")
    return method


def compute_amax(method: str, hist: np.ndarray, bin_width: float, absmax: float) -> float:
    """Symmetric threshold of one tensor's |x| histogram by calibrator ``method``."""
    return CALIBRATORS[check_calibrator(method)](hist, bin_width, absmax)


def compute_range_u8(method: str, stats) -> tuple[float, float]:
    """(low, high) of one tensor (``TensorStats``) for asymmetric U8 activations."""
    if method in U8_CALIBRATORS:
        return U8_CALIBRATORS[method](stats)
    amax = compute_amax(method, stats.hist, stats.bin_width, stats.absmax)
    return max(stats.minimum, -amax), min(stats.maximum, amax)
