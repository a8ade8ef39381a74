"""Q/DQ layouts as objects: the name lookup, and a layout added as one object without edits elsewhere."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from _helpers import export_small
from edgeseg.data import Preprocessing
from edgeseg.errors import EdgesegError
from edgeseg.quantize.calibrators import CALIBRATOR_NAMES, CALIBRATORS
from edgeseg.quantize.fake_quant import fake_quant_s8_symmetric
from edgeseg.quantize.histograms import collect_stats
from edgeseg.quantize.known_ranges import KnownRange, apply_known_ranges
from edgeseg.quantize.layouts import CPU, LAYOUT_NAMES, LAYOUTS, TRT, QuantLayout, get_layout
from edgeseg.quantize.qdq import activation_ranges, quantize_qdq

PRE = Preprocessing()


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(torch.relu(self.conv1(x)))


def _inputs(n: int = 2) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [PRE(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8))[None] for _ in range(n)]


def test_names_resolve_once_to_the_layout_objects() -> None:
    assert LAYOUT_NAMES == ("cpu", "trt") and LAYOUTS["cpu"] is CPU and get_layout("trt") is TRT
    assert get_layout(TRT) is TRT
    assert CALIBRATOR_NAMES == tuple(CALIBRATORS)


def test_an_unknown_layout_is_refused_everywhere_it_is_named(tmp_path: Path) -> None:
    with pytest.raises(EdgesegError, match=r"^--layout must be one of cpu, trt, got 'gpu'$"):
        get_layout("gpu")
    stats = collect_stats(export_small(_Net(), tmp_path / "m.onnx", (24, 32), PRE), _inputs())
    # the range and known-range steps once took any name but "trt" for the cpu layout (U8 ranges for "TRT")
    with pytest.raises(EdgesegError, match="--layout must be one of"):
        activation_ranges(stats, "entropy", "TRT")
    with pytest.raises(EdgesegError, match="--layout must be one of"):
        apply_known_ranges({"x": (-1.0, 2.0)}, {"x": KnownRange(0.0, 6.0, exact=True)}, "Trt")


def test_a_new_layout_is_one_object(tmp_path: Path) -> None:
    # S8 symmetric activations with ONNX Runtime's default placement (output Q/DQ, int32 biases)
    s8 = QuantLayout("s8", "a runtime with S8 activations", symmetric_activations=True,
                     fake_quant=fake_quant_s8_symmetric)
    fp32 = export_small(_Net(), tmp_path / "m.onnx", (24, 32), PRE)
    ranges = activation_ranges(collect_stats(fp32, _inputs()), "minmax", s8)
    assert all(lo == -hi for lo, hi in ranges.values())
    q = onnx.load(str(quantize_qdq(fp32, tmp_path / "s8.onnx", ranges, s8)))
    inits = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer}
    zero_points = [inits[n.input[2]] for n in q.graph.node if n.op_type == "QuantizeLinear"]
    assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points)
    assert any(v.dtype == np.int32 for v in inits.values()), "ORT's default placement quantizes the biases"
    assert {p.key: p.value for p in q.metadata_props}["edgeseg.qdq_layout"] == '"s8"'
    with pytest.raises(EdgesegError, match="FP16 scales need --layout trt"):
        quantize_qdq(fp32, tmp_path / "x.onnx", ranges, s8, fp16_scales=True)
