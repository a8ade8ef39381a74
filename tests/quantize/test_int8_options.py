"""INT8 options that must each help on a small model built to need them: the input range from the
preprocessing, Clip ranges known by construction, bias correction, and U8-aware calibrators."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from _helpers import export_small
from edgeseg.ort_session import make_session
from edgeseg.data import Preprocessing
from edgeseg.quantize.histograms import TensorStats, collect_stats
from edgeseg.quantize.known_ranges import input_range
from edgeseg.quantize.layouts import get_layout
from edgeseg.quantize.ptq import Int8Options, build_int8, int8_ranges
from edgeseg.quantize.qdq import activation_ranges

PRE = Preprocessing()
OFF = Int8Options(input_range=False, exact_clip=False, u8_search=False, bias_correction=False)


def fake_quant_activation(x: np.ndarray, low: float, high: float, layout: str) -> np.ndarray:
    return get_layout(layout).fake_quant(x, low, high)


def _images(seed: int, n: int, low: int, high: int, size=(24, 32)) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [PRE(rng.integers(low, high, (*size, 3), dtype=np.uint8))[None] for _ in range(n)]


class _Net(nn.Module):
    def __init__(self, relu6: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.ReLU6() if relu6 else nn.ReLU()
        self.conv2 = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.act(self.conv1(x)))


def _input_q_params(path: Path) -> tuple[float, int]:
    q = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer}
    node = next(n for n in q.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "input")
    return float(inits[node.input[1]]), int(inits[node.input[2]])


def test_input_range_comes_from_the_preprocessing_in_both_layouts(tmp_path: Path) -> None:
    # ImageNet statistics: pixel 0 of the red channel -> (0 - 0.485) / 0.229, pixel 255 of blue -> (1 - 0.406) / 0.225
    low, high = input_range(PRE)
    assert low == pytest.approx(-0.485 / 0.229) and high == pytest.approx(0.594 / 0.225)
    fp32 = export_small(_Net(), tmp_path / "m.onnx", (24, 32), PRE)
    dark = _images(0, 4, 0, 120)  # calibration images without a bright pixel: calibrating would clip the sky
    stats = collect_stats(fp32, dark)
    assert stats["input"].maximum < 0.5 * high
    for layout, expected in (("cpu", (low, high)), ("trt", (-high, high))):
        calibrated = int8_ranges(fp32, stats, "entropy", layout, PRE, OFF)["input"]
        assert calibrated[1] < 0.85 * high  # calibrated: white pixels would saturate
        chosen = int8_ranges(fp32, stats, "entropy", layout, PRE, Int8Options())["input"]
        assert chosen == pytest.approx(expected)
        out = build_int8(fp32, tmp_path / f"{layout}.onnx", stats, layout=layout, preprocessing=PRE,
                         options=Int8Options(bias_correction=False)).out
        scale, zero = _input_q_params(out)
        if layout == "cpu":  # U8 over [low, high]: 255 steps, zero point at -low / scale
            assert scale == pytest.approx((high - low) / 255, rel=1e-5) and zero == round(-low / scale)
        else:  # S8 symmetric over [-high, high]
            assert scale == pytest.approx(high / 127, rel=1e-5) and zero == 0
        # a white pixel (the largest input value) survives quantization within half a step
        white = np.float32(high)
        assert abs(fake_quant_activation(np.array([white]), *chosen, layout)[0] - white) <= scale / 2 + 1e-6


def test_clip_and_relu_outputs_use_their_known_range(tmp_path: Path) -> None:
    fp32 = export_small(_Net(relu6=True), tmp_path / "m6.onnx", (24, 32), PRE)
    stats = collect_stats(fp32, _images(0, 4, 0, 255))
    model = onnx.load(str(fp32))
    clip_out = next(n.output[0] for n in model.graph.node if n.op_type == "Clip")
    assert stats[clip_out].maximum < 6.0  # the calibration data never reaches the clip ceiling
    exact = Int8Options(exact_clip=True)
    assert int8_ranges(fp32, stats, "entropy", "cpu", PRE, exact)[clip_out] == (0.0, 6.0)
    assert int8_ranges(fp32, stats, "entropy", "trt", PRE, exact)[clip_out] == (-6.0, 6.0)
    calibrated = int8_ranges(fp32, stats, "entropy", "cpu", PRE, Int8Options(exact_clip=False))[clip_out]
    assert 0.0 <= calibrated[0] and calibrated[1] <= stats[clip_out].maximum
    relu_model = export_small(_Net(), tmp_path / "m.onnx", (24, 32), PRE)
    relu_stats = collect_stats(relu_model, _images(0, 4, 0, 255))
    relu_out = next(n.output[0] for n in onnx.load(str(relu_model)).graph.node if n.op_type == "Relu")
    assert int8_ranges(relu_model, relu_stats, "mse", "cpu", PRE)[relu_out][0] == 0.0


class _RoundingBias(nn.Module):
    """A Conv whose per-channel INT8 weights all round the same way: each channel has one weight of 1
    (so the channel's scale is 1/127) and 26 of 0.0052, which round up to 1/127 = 0.00787. On bright
    (positive) inputs the INT8 output mean drifts by ~26 * 0.0027 * mean(x) per channel."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.fill_(0.0052)
            self.conv.weight[:, 0, 1, 1] = 1.0
            self.conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


@pytest.mark.parametrize("layout", ["cpu", "trt"])
def test_bias_correction_removes_the_quantized_output_mean_shift(layout: str, tmp_path: Path) -> None:
    fp32 = export_small(_RoundingBias(), tmp_path / "b.onnx", (24, 32), PRE)
    calib = _images(0, 8, 150, 256)
    held_out = _images(1, 4, 150, 256)
    stats = collect_stats(fp32, calib)

    def outputs(path: Path) -> np.ndarray:
        session = make_session(path)
        return np.concatenate([session.run(None, {"input": x})[0] for x in held_out])

    reference = outputs(fp32)
    errors = {}
    for corrected in (False, True):
        # minmax: no clipping of the conv output, so the only systematic error left is the weights' rounding
        out = build_int8(fp32, tmp_path / f"{layout}-{corrected}.onnx", stats, layout=layout, calibrator="minmax",
                         preprocessing=PRE, options=Int8Options(bias_correction=corrected),
                         calib_inputs=lambda: iter(calib)).out
        got = outputs(out)
        errors[corrected] = np.abs((got - reference).mean(axis=(0, 2, 3))).mean()
    assert errors[False] > 0.05, f"the test model should shift visibly without correction ({errors})"
    assert errors[True] < errors[False] / 4, errors


def _stats_of(x: np.ndarray) -> TensorStats:
    s = TensorStats.empty()
    s.update(x.astype(np.float32))
    return s


def _u8_mse(x: np.ndarray, r: tuple[float, float]) -> float:
    return float(np.mean((x - fake_quant_activation(x, *r, "cpu")) ** 2))


@pytest.mark.parametrize("name", ["exponential", "relu_gauss", "skewed", "shifted_laplace"])
def test_u8_mse_search_beats_the_symmetric_assumption(name: str) -> None:
    rng = np.random.default_rng(0)
    x = {"exponential": rng.exponential(1.0, 400_000), "relu_gauss": np.maximum(rng.standard_normal(400_000), 0),
         "skewed": rng.exponential(1.0, 400_000) - 0.3,
         "shifted_laplace": rng.laplace(size=400_000) * 0.5 + 2}[name].astype(np.float32)
    stats = {"t": _stats_of(x)}
    u8 = activation_ranges(stats, "mse", "cpu", u8_search=True)["t"]
    symmetric = activation_ranges(stats, "mse", "cpu", u8_search=False)["t"]
    assert _u8_mse(x, u8) < 0.95 * _u8_mse(x, symmetric), (u8, symmetric)
