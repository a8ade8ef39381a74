"""Issue 25 point 3: the per-channel axis of ConvTranspose weights follows the TensorRT version the trt layout
targets (8.x: input channels, axis 0; 10.x / 11.x: output channels, axis 1), the lint agrees, and a Q/DQ model
retargets to another version bit-identically to quantizing for it directly."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from _helpers import export_small
from edgeseg.backends.trt_lint import check_onnx, retarget_weight_axes, retarget_weight_axes_file
from edgeseg.data import Preprocessing
from edgeseg.errors import EdgesegError
from edgeseg.ort_session import make_session
from edgeseg.quantize.histograms import collect_stats
from edgeseg.quantize.layouts import CPU, DEFAULT_TRT_TARGET, TRT, get_layout
from edgeseg.quantize.qdq import activation_ranges, fp16_qdq_graph, quantize_qdq
from edgeseg.quantize.sensitivity import rank_layers

PRE = Preprocessing()


class _UpNet(nn.Module):
    """Conv (stride 2) -> ReLU -> ConvTranspose (x2): U-Net's and FCN's upsampling, 8 in, 4 out channels."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.down = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(8, 4, 2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(torch.relu(self.down(x)))


@pytest.fixture(scope="module")
def up(tmp_path_factory) -> tuple[Path, dict, np.ndarray]:
    folder = tmp_path_factory.mktemp("up")
    fp32 = export_small(_UpNet(), folder / "up.onnx", (24, 32), PRE)
    rng = np.random.default_rng(0)
    inputs = [PRE(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8))[None] for _ in range(2)]
    return fp32, activation_ranges(collect_stats(fp32, inputs), "minmax", "trt"), inputs[0]


def _weight_dq(path_or_model) -> tuple[int, tuple[int, ...], dict]:
    """(axis, scale shape) of the ConvTranspose weight's DequantizeLinear, and the edgeseg metadata."""
    m = path_or_model if isinstance(path_or_model, onnx.ModelProto) else onnx.load(str(path_or_model))
    inits = {i.name: i for i in m.graph.initializer}
    producer = {o: n for n in m.graph.node for o in n.output}
    (ct,) = [n for n in m.graph.node if n.op_type == "ConvTranspose"]
    dq = producer[ct.input[1]]
    axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
    meta = {p.key.removeprefix("edgeseg."): json.loads(p.value) for p in m.metadata_props
            if p.key.startswith("edgeseg.")}
    return axis, tuple(inits[dq.input[1]].dims), meta


@pytest.mark.parametrize("version, axis, shape", [("8.6.1", 0, (8,)), ("8.5.2", 0, (8,)), ("10.3", 1, (4,)),
                                                  ("11.4", 1, (4,))])
def test_the_trt_layout_puts_convtranspose_scales_on_the_target_axis(up, tmp_path: Path, version: str, axis: int,
                                                                      shape: tuple) -> None:
    """Before: axis 1 (output channels) for every version, which TensorRT 8.x kernels do not take."""
    fp32, ranges, x = up
    out = quantize_qdq(fp32, tmp_path / "q.onnx", ranges, get_layout("trt", version))
    got_axis, got_shape, meta = _weight_dq(out)
    assert (got_axis, got_shape) == (axis, shape)
    assert meta["qdq_trt_target"] == version and meta["qdq_weight_axes"] == {"Conv": 0, "ConvTranspose": axis}
    lint_as = "8.6" if version.startswith("8.") else version  # the lint's 8.x line
    assert not [f for f in check_onnx(out, lint_as) if f.rule == "qdq-axis"]
    a = make_session(fp32).run(None, {"input": x})[0]
    b = make_session(out).run(None, {"input": x})[0]
    assert np.abs(a - b).max() < 0.05 * np.abs(a).max()


def test_layout_targets() -> None:
    assert TRT.trt_target == DEFAULT_TRT_TARGET == "8.6.1" and TRT.weight_axis("ConvTranspose") == 0
    assert get_layout("trt") is TRT and get_layout(TRT, "10.3") is TRT  # an object keeps its own target
    ten = TRT.for_target("10.3")
    assert ten.weight_axes() == {"Conv": 0, "ConvTranspose": 1} and ten.for_target("10.3") is ten
    assert ten.name == "trt" and ten.fake_quant is TRT.fake_quant
    assert CPU.for_target("8.6") is CPU and CPU.weight_axes() == {"Conv": 0, "ConvTranspose": 1}
    for bad in ("7.2", "8.4", "9.2", "x"):
        with pytest.raises(EdgesegError, match="TensorRT version"):
            TRT.for_target(bad)


def test_fp16_scale_graphs_target_strongly_typed_versions(up, tmp_path: Path) -> None:
    """FP16 scales need opset 19, which only 10.x / 11.x parse: their ConvTranspose axis is 1 even when the layout
    object targets 8.6."""
    fp32, ranges, _ = up
    axis, _, meta = _weight_dq(fp16_qdq_graph(fp32, tmp_path / "q16.onnx", ranges))
    assert (axis, meta["qdq_trt_target"], meta["qdq_scale_dtype"]) == (1, "11", "fp16")


def test_retargeting_equals_quantizing_for_the_version(up, tmp_path: Path) -> None:
    """A bundle built for 8.6 and finished on a 10.x device (or the reverse): the ConvTranspose scales are
    recomputed from the float weight along the other axis, exactly as the quantizer writes them."""
    fp32, ranges, x = up
    for_86 = quantize_qdq(fp32, tmp_path / "q86.onnx", ranges, TRT)
    for_10 = quantize_qdq(fp32, tmp_path / "q10.onnx", ranges, TRT.for_target("10.3"))
    model = onnx.load(str(for_86))
    assert retarget_weight_axes(model, "10.3") == 1 and retarget_weight_axes(model, "10.3") == 0
    onnx.checker.check_model(model, full_check=True)
    assert _weight_dq(model)[:2] == (1, (4,)) and not check_onnx(model, "10.3")
    a = make_session(model.SerializeToString()).run(None, {"input": x})[0]
    b = make_session(for_10).run(None, {"input": x})[0]
    assert np.array_equal(a, b)
    used = {i for n in model.graph.node for i in n.input}
    assert all(i.name in used for i in model.graph.initializer)  # the old axis-0 scale and zero point are gone
    assert retarget_weight_axes_file(for_10, "8.6.1") == 1
    axis, shape, meta = _weight_dq(for_10)
    assert (axis, shape, meta["qdq_trt_target"]) == (0, (8,), "8.6.1")
    scales = {numpy_helper.to_array(i).shape: numpy_helper.to_array(i) for i in onnx.load(str(for_10)).graph.initializer
              if "up.weight_scale" in i.name}
    ref = {numpy_helper.to_array(i).shape: numpy_helper.to_array(i) for i in onnx.load(str(for_86)).graph.initializer
           if "up.weight_scale" in i.name}
    assert np.array_equal(scales[(8,)], ref[(8,)])


def test_a_stored_int8_convtranspose_weight_is_refused(tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    w = numpy_helper.from_array(np.ones((8, 4, 2, 2), np.int8), "w_q")
    scale = numpy_helper.from_array(np.full(4, 0.1, np.float32), "s")
    zp = numpy_helper.from_array(np.zeros(4, np.int8), "z")
    nodes = [helper.make_node("DequantizeLinear", ["w_q", "s", "z"], ["w"], name="w_dq", axis=1),
             helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="up", strides=[2, 2])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w, scale, zp])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(EdgesegError, match="stored quantized; requantize it"):
        retarget_weight_axes(model, "8.6")


def test_sensitivity_fake_quantizes_on_the_layout_axis(up) -> None:
    """The guard's per-layer ranking quantizes ConvTranspose weights as the deployed model does."""
    fp32, ranges, x = up
    model = onnx.load(str(fp32))
    from edgeseg.quantize.histograms import iter_activation_groups

    acts = [g for _, g in iter_activation_groups(fp32, [x])]
    by_target = {v: {r.node: r.sqnr_db for r in rank_layers(model, acts, ranges, TRT.for_target(v))}
                 for v in ("8.6", "10.3")}
    (ct,) = [n.name for n in model.graph.node if n.op_type == "ConvTranspose"]
    assert by_target["8.6"][ct] != by_target["10.3"][ct]


@pytest.mark.parametrize("version", ["8.6.1", "10.3"])
def test_a_unet_quantized_for_a_version_lints_clean_for_it(version: str, tmp_path: Path) -> None:
    """U-Net's up-convolutions through the whole INT8 path (ptq.build_int8 with the bundle's trt_version): every
    ConvTranspose weight on the version's axis, and the lint of that version finds no axis error."""
    from edgeseg.export.onnx_export import export_onnx
    from edgeseg.models import ModelConfig, build_model
    from edgeseg.quantize.ptq import Int8Options, build_int8

    torch.manual_seed(0)
    fp32 = tmp_path / "unet.onnx"
    export_onnx(build_model(ModelConfig("unet", 4, width=0.125)), fp32, input_size=(64, 96),
                metadata={"preprocessing": PRE})
    rng = np.random.default_rng(0)
    stats = collect_stats(fp32, [PRE(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8))[None] for _ in range(2)])
    out = tmp_path / "q.onnx"
    build_int8(fp32, out, stats, layout="trt", calibrator="minmax", trt_version=version, preprocessing=PRE,
               options=Int8Options(bias_correction=False))
    model = onnx.load(str(out))
    producer = {o: n for n in model.graph.node for o in n.output}
    axes = {next((a.i for a in producer[n.input[1]].attribute if a.name == "axis"), 1)
            for n in model.graph.node if n.op_type == "ConvTranspose"}
    assert axes == {0 if version.startswith("8.") else 1}
    lint_as = "8.6" if version.startswith("8.") else version
    assert [f for f in check_onnx(model, lint_as) if f.rule == "qdq-axis"] == []
    other = "10" if version.startswith("8.") else "8.6"
    assert [f for f in check_onnx(model, other) if f.rule == "qdq-axis"]  # the other version's lint refuses it


def test_finishing_on_a_device_retargets_the_engine_source(up, tmp_path: Path, monkeypatch) -> None:
    """`build --from DIR --backend trt` on a 10.x device: the 8.6-targeted model.int8.trt.onnx gets axis 1 before
    the engine is built from it, and the manifest's trt_weight_axes record follows (before: it kept axis 0)."""
    import shutil

    from edgeseg.backends import registry, trt_engine

    fp32, ranges, _ = up
    stage = tmp_path / "stage"
    stage.mkdir()
    quantize_qdq(fp32, stage / "model.int8.trt.onnx", ranges, get_layout("trt", "8.6.1"))
    shutil.copyfile(fp32, stage / "model.onnx")
    roles = {"fp32": "model.onnx", "int8_trt": "model.int8.trt.onnx"}
    manifest = {"calibration": {"trt_weight_axes": {"model.int8.trt.onnx": {"trt_target": "8.6.1"}}}}
    built = {}

    class _Trt:
        __version__ = "10.3.0"

    monkeypatch.setattr(trt_engine.trt_env, "require", lambda name: _Trt)
    monkeypatch.setattr(trt_engine, "retarget_bundle_cache", lambda *a: None)
    def build_engine(source: Path, engine: Path, **kwargs) -> None:  # what the engine would be built from
        built["axis"] = _weight_dq(source)[0]
        raise RuntimeError("stop")

    monkeypatch.setattr(trt_engine, "build_engine", build_engine)
    request = registry.ArtifactRequest(stage, roles, manifest, "int8", 1.0, None, on_device=True, log=lambda m: None)
    with pytest.raises(RuntimeError, match="stop"):
        trt_engine.build_artifacts(request)
    assert built["axis"] == 1 and _weight_dq(stage / "model.int8.trt.onnx")[0] == 1
    assert manifest["calibration"]["trt_weight_axes"]["model.int8.trt.onnx"]["trt_target"] == "10.3.0"
