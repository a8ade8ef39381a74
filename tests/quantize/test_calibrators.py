"""Calibrators against ranges worked out by hand on synthetic histograms, and the TensorRT cache format."""
from __future__ import annotations

import numpy as np
import pytest

from edgeseg.errors import EdgesegError
from edgeseg.quantize.calibrators import entropy_amax, entropy_range_u8, minmax_amax, mse_amax, percentile_amax
from edgeseg.quantize.histograms import NUM_BINS, TensorStats
from edgeseg.quantize.trt_cache import calibration_cache_text, scale_hex

BW = 0.01  # bin width


def test_minmax_is_the_largest_magnitude() -> None:
    assert minmax_amax(np.ones(256), BW, absmax=2.5) == 2.5


def test_percentile_on_a_uniform_histogram() -> None:
    # 1000 bins with one value each: the cumulative share reaches 99.9 % at bin 998 (999/1000),
    # so the threshold is that bin's upper edge, 999 * BW.
    assert percentile_amax(np.ones(1000), BW, absmax=10.0, percentile=99.9) == pytest.approx(999 * BW)
    # 100 %: the whole range
    assert percentile_amax(np.ones(1000), BW, absmax=10.0, percentile=100) == pytest.approx(10.0)


def _reference_kl(hist: np.ndarray, i: int, levels: int = 128) -> float:
    """TensorRT's EntropyCalibration2 divergence for threshold bin count ``i``, written as a plain loop body."""
    reference = hist[:i].copy()
    reference[-1] += hist[i:].sum()
    group = (np.arange(i) * levels) // i
    nonzero = hist[:i] > 0
    level_mass = np.bincount(group, weights=hist[:i], minlength=levels)
    level_count = np.bincount(group, weights=nonzero.astype(float), minlength=levels)
    expanded = np.where(nonzero, level_mass[group] / np.maximum(level_count[group], 1), 0.0)
    p, q = reference / reference.sum(), expanded / expanded.sum()
    mask = p > 0
    if (q[mask] == 0).any():
        return np.inf
    return float(np.sum(p[mask] * np.log(p[mask] / q[mask])))


def test_entropy_keeps_a_uniform_range_and_clips_a_long_tail() -> None:
    # Uniform mass in bins 0..127 and nothing after: every threshold quantizes it without loss
    # (KL = 0), ties go to the largest threshold, so nothing is clipped.
    uniform = np.zeros(NUM_BINS)
    uniform[:128] = 100
    assert entropy_amax(uniform, BW, absmax=128 * BW) == pytest.approx(128 * BW)
    # |x| of a Laplace distribution binned up to its largest sample (~14 scales): the thin tail costs
    # less clipped than spread over levels, so the threshold sits well inside the range.
    x = np.abs(np.random.default_rng(0).laplace(size=1_000_000))
    width = x.max() / NUM_BINS * (1 + 1e-9)
    hist = np.bincount(np.minimum((x / width).astype(int), NUM_BINS - 1), minlength=NUM_BINS)
    amax = entropy_amax(hist, width, absmax=x.max())
    assert 3.0 < amax < 0.8 * x.max()


def test_entropy_searches_every_bin_exactly_like_the_loop() -> None:
    # The vectorised search equals TensorRT's per-threshold loop at every bin (not a stride).
    rng = np.random.default_rng(2)
    x = np.abs(rng.standard_t(3, size=200_000))
    width = x.max() / NUM_BINS * (1 + 1e-9)
    hist = np.bincount(np.minimum((x / width).astype(int), NUM_BINS - 1), minlength=NUM_BINS).astype(float)
    hist[0] = hist[1]
    kls = np.array([_reference_kl(hist, i) for i in range(128, NUM_BINS + 1)])
    best = 128 + int(np.flatnonzero(kls <= kls.min() + 1e-12)[-1])
    assert entropy_amax(hist, width, absmax=x.max()) == pytest.approx(min(x.max(), best * width))
    assert best % 7 != 2, "pick a distribution whose optimum the old stride-7 grid (128 + 7k) would miss"


def test_u8_entropy_of_a_non_negative_tensor_is_the_256_level_search() -> None:
    # A ReLU-like tensor in the cpu layout is quantized to 256 U8 levels over [0, high]: the search
    # must be TensorRT's at 256 levels (every bin), not the 128-level symmetric one.
    x = np.random.default_rng(3).exponential(size=300_000).astype(np.float32)
    stats = TensorStats.empty()
    stats.update(x)
    hist = stats.hist.astype(float)
    hist[0] = hist[1]
    kls = np.array([_reference_kl(hist, i, 256) for i in range(256, NUM_BINS + 1)])
    best = 256 + int(np.flatnonzero(kls <= kls.min() + 1e-12)[-1])
    low, high = entropy_range_u8(stats)
    assert low == stats.minimum and high == pytest.approx(min(stats.maximum, best * stats.bin_width))
    assert high != pytest.approx(entropy_amax(stats.hist, stats.bin_width, stats.absmax))


def test_mse_clips_rare_outliers_but_not_dense_mass() -> None:
    dense = np.zeros(NUM_BINS)
    dense[:1024] = 1000
    assert mse_amax(dense, BW, absmax=1024 * BW) >= 0.95 * 1024 * BW
    sparse = dense.copy()
    sparse[1024:] = 0
    sparse[-1] = 1  # one value at 20x the bulk: clipping it is cheaper than coarse steps for everything else
    assert mse_amax(sparse, BW, absmax=NUM_BINS * BW) < 0.6 * NUM_BINS * BW


@pytest.mark.parametrize("fn", [minmax_amax, percentile_amax, entropy_amax, mse_amax])
def test_zero_or_nan_ranges_are_refused(fn) -> None:
    with pytest.raises(EdgesegError, match="zero or not finite"):
        fn(np.zeros(256), BW, 0.0)
    with pytest.raises(EdgesegError, match="zero or not finite"):
        fn(np.ones(256), float("nan"), 1.0)


def test_histogram_grows_its_range_by_merging_bins() -> None:
    s = TensorStats.empty()
    s.update(np.linspace(-1, 1, 1001, dtype=np.float32))
    s.update(np.array([8.0], dtype=np.float32))  # 8x the range: bins merge, counts are kept
    assert s.hist.sum() == 1002
    assert s.bin_width * NUM_BINS > 8.0
    assert s.minimum == -1.0 and s.maximum == 8.0 and s.absmax == 8.0
    with pytest.raises(EdgesegError, match="NaN"):
        s.update(np.array([np.nan], dtype=np.float32))


def test_trt_cache_byte_for_byte() -> None:
    # scale = amax / 127: 127 -> 1.0 = 0x3f800000; 12.7 -> 0.1 = 0x3dcccccd (float32 bit patterns)
    assert scale_hex(127.0) == "3f800000"
    assert scale_hex(12.7) == "3dcccccd"
    text = calibration_cache_text({"input": 127.0, "/backbone/Relu_output_0": 12.7}, "8.6.1")
    assert text == "TRT-8601-EntropyCalibration2\ninput: 3f800000\n/backbone/Relu_output_0: 3dcccccd\n"
    # 10.x encodes its version as MAJOR*10000+MINOR*100+PATCH (release/10.3 NvInferRuntimeBase.h; NGC's
    # TrafficCamNet cache reads TRT-100300-EntropyCalibration2); the old code wrote TRT-10300
    assert calibration_cache_text({"x": 127.0}, "10.3.0", "minmax").startswith("TRT-100300-MinMaxCalibration\n")
    with pytest.raises(EdgesegError, match="no implicit INT8.*Q/DQ model"):
        calibration_cache_text({"x": 1.0}, "11.0.0")


@pytest.mark.parametrize("release", ["8.6.1", "10.3.0", "10.16.1", "11.4.0"])
def test_version_code_follows_each_releases_header(release) -> None:
    """The formula recorded from each release's include/NvInferRuntimeBase.h (tools/trt_surface)."""
    from _trt_fakes import load_surface

    from edgeseg.backends.trt_api import version_code

    a, b = load_surface(release).version_formula
    major, minor, patch = (int(p) for p in release.split("."))
    assert version_code(release) == major * a + minor * b + patch
    if major < 11:
        assert calibration_cache_text({"x": 1.0}, release).startswith(f"TRT-{major * a + minor * b + patch}-")


@pytest.mark.parametrize("calibrator,algorithm", [("entropy", "EntropyCalibration2"), ("minmax", "MinMaxCalibration")])
def test_cache_names_the_calibrator_that_made_it(calibrator, algorithm) -> None:
    assert calibration_cache_text({"x": 1.0}, "10.3.0", calibrator).split("\n")[0] == f"TRT-100300-{algorithm}"


@pytest.mark.parametrize("calibrator", ["percentile", "mse"])
def test_calibrators_tensorrt_cannot_replay_get_no_cache(calibrator) -> None:
    """The old code labelled percentile / MSE tables EntropyCalibration2; TensorRT has no such calibrator."""
    with pytest.raises(EdgesegError, match="entropy or minmax"):
        calibration_cache_text({"x": 1.0}, "10.3.0", calibrator)


def test_retarget_rewrites_only_the_first_line(tmp_path) -> None:
    from edgeseg.backends.trt_engine import retarget_cache_file

    src = tmp_path / "c.cache"
    src.write_text(calibration_cache_text({"input": 127.0, "a": 12.7}, "8.6.1", "minmax"))
    header = retarget_cache_file(src, tmp_path / "d.cache", "10.3.0")
    assert header == "TRT-100300-MinMaxCalibration"
    assert (tmp_path / "d.cache").read_text() == "TRT-100300-MinMaxCalibration\ninput: 3f800000\na: 3dcccccd\n"
    with pytest.raises(EdgesegError, match="11.4.0 has no implicit INT8"):
        retarget_cache_file(src, tmp_path / "e.cache", "11.4.0")
