"""TensorRT lint: every rule fires on a small ONNX graph that breaks it, names the node and the fix,
and stays silent on the clean reference export."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from edgeseg.cli import main
from edgeseg.errors import EdgesegError
from edgeseg.export.onnx_export import export_onnx
from edgeseg.models import ModelConfig, build_model
from edgeseg.backends.trt_api import release_line
from edgeseg.backends.trt_lint import check_onnx

F = TensorProto.FLOAT




def _model(nodes, inits=(), opset: int = 17, in_shape=(1, 4, 8, 8), out_shape=None, meta: dict | None = None,
           domains=()):
    out_shape = out_shape or [None] * len(in_shape)
    graph = helper.make_graph(list(nodes), "g", [helper.make_tensor_value_info("x", F, list(in_shape))],
                              [helper.make_tensor_value_info("y", F, out_shape)], initializer=list(inits))
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]
                          + [helper.make_opsetid(d, 1) for d in domains])
    for k, v in (meta or {}).items():
        m.metadata_props.append(onnx.StringStringEntryProto(key=k, value=json.dumps(v)))
    return m


def _init(name: str, value) -> TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def _rules(model, version: str = "10", dla: bool = False) -> dict[str, list]:
    onnx.checker.check_model(model, full_check=True)  # the fixtures are valid ONNX, only TensorRT minds them
    out: dict[str, list] = {}
    for f in check_onnx(model, version, dla=dla):
        assert f.node and f.message and f.fix, f
        out.setdefault(f.rule, []).append(f)
    return out


def _resize(name: str, opset: int = 17, **attrs):
    scales = _init("scales", np.array([1, 1, 2, 2], np.float32))
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], name=name, **attrs)
    return _model([node], [scales], opset=opset)


def test_plain_graph_is_silent() -> None:
    assert check_onnx(_model([helper.make_node("Relu", ["x"], ["y"], name="relu")]), "8.6") == []


def test_opset_above_the_parser_maximum() -> None:
    m = _model([helper.make_node("Relu", ["x"], ["y"])], opset=18)
    (f,) = _rules(m, "8.6")["opset"]
    assert f.severity == "error" and "17" in f.message and "--opset" in f.fix
    assert "opset" not in _rules(m, "10")  # 10.x parses 9-20
    assert "opset" in _rules(_model([helper.make_node("Relu", ["x"], ["y"])], opset=21), "10")


def test_unsupported_ops_per_version_and_custom_domains() -> None:
    m = _model([helper.make_node("Unique", ["x"], ["u"], name="uniq"),
                helper.make_node("Hardmax", ["u"], ["h"], name="hardmax"),
                helper.make_node("FusedConv", ["h"], ["y"], name="fused", domain="com.microsoft")],
               domains=["com.microsoft"])
    nodes = {f.node for f in _rules(m, "8.6")["unsupported-op"]}
    assert nodes == {"uniq", "hardmax", "fused"}
    nodes = {f.node for f in _rules(m, "10")["unsupported-op"]}
    assert nodes == {"uniq", "fused"}  # Hardmax arrived in 9.2
    (custom,) = [f for f in _rules(m, "11")["unsupported-op"] if f.node == "fused"]
    assert "plugin" in custom.fix


@pytest.mark.parametrize("attrs, severity, text", [
    ({"mode": "cubic"}, "warning", "cubic"),
    ({"mode": "linear", "coordinate_transformation_mode": "tf_crop_and_resize"}, "error", "tf_crop_and_resize"),
    ({"mode": "linear", "coordinate_transformation_mode": "half_pixel_symmetric"}, "error", "half_pixel_symmetric"),
    ({"mode": "nearest", "coordinate_transformation_mode": "tf_half_pixel_for_nn", "nearest_mode": "floor"},
     "error", "round_prefer_floor"),
    ({"mode": "linear", "antialias": 1, "opset": 18}, "error", "antialias"),
])
def test_resize_rules(attrs: dict, severity: str, text: str) -> None:
    (f,) = _rules(_resize("up", **attrs), "10")["resize"]
    assert f.node == "up" and f.severity == severity and text in f.message


def test_supported_resize_modes_are_silent() -> None:
    for attrs in ({"mode": "linear", "coordinate_transformation_mode": "half_pixel"},
                  {"mode": "linear", "coordinate_transformation_mode": "align_corners"},
                  {"mode": "nearest", "coordinate_transformation_mode": "asymmetric",
                   "nearest_mode": "round_prefer_ceil"},
                  {"mode": "nearest", "coordinate_transformation_mode": "tf_half_pixel_for_nn"}):
        assert check_onnx(_resize("up", **attrs), "8.6") == [], attrs


def _conv_with_weight_qdq(op: str, axis: int, weight_shape, channels_axis: int, zero: int = 0):
    """int8 weight initializer -> DequantizeLinear (per-channel) -> Conv/ConvTranspose input 1."""
    k = weight_shape[channels_axis]
    w = _init("w_q", np.ones(weight_shape, np.int8))
    scale = _init("w_scale", np.full(k, 0.1, np.float32))
    zp = _init("w_zp", np.full(k, zero, np.int8))
    dq = helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w"], name="w_dq", axis=axis)
    conv = helper.make_node(op, ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1])
    return _model([dq, conv], [w, scale, zp])


def test_per_channel_weight_axis() -> None:
    bad = _conv_with_weight_qdq("Conv", axis=1, weight_shape=(8, 4, 3, 3), channels_axis=1)
    (f,) = _rules(bad)["qdq-axis"]
    assert f.node == "w_dq" and "axis 1" in f.message and "axis=0" in f.fix
    bad_t = _conv_with_weight_qdq("ConvTranspose", axis=0, weight_shape=(4, 8, 3, 3), channels_axis=0)
    (f,) = _rules(bad_t)["qdq-axis"]
    assert "ConvTranspose" in f.message and "axis=1" in f.fix
    for good in (_conv_with_weight_qdq("Conv", 0, (8, 4, 3, 3), 0),
                 _conv_with_weight_qdq("ConvTranspose", 1, (4, 8, 3, 3), 1)):
        assert check_onnx(good, "10") == []


@pytest.mark.parametrize("version, good_axis", [("8.6", 0), ("8.6.1", 0), ("10", 1), ("10.3", 1), ("11", 1)])
def test_convtranspose_weight_axis_follows_the_version(version: str, good_axis: int) -> None:
    """TensorRT 8.x deconvolution kernels take per-INPUT-channel scales (NVIDIA, TensorRT#2380; pytorch-quantization
    release/8.4-8.6 axis 0); 10.x / 11.x per output channel (pytorch-quantization release/10.2+, ModelOpt).
    Before: axis 1 passed on every version, axis 0 failed on every version."""
    shapes = {0: (4, 8, 3, 3), 1: (4, 8, 3, 3)}
    good = _conv_with_weight_qdq("ConvTranspose", good_axis, shapes[good_axis], good_axis)
    bad = _conv_with_weight_qdq("ConvTranspose", 1 - good_axis, shapes[good_axis], 1 - good_axis)
    assert check_onnx(good, version) == []
    (f,) = _rules(bad, version)["qdq-axis"]
    assert f"takes axis {good_axis}" in f.message and "retarget_weight_axes" in f.fix
    assert ("input channels" if good_axis == 0 else "output channels") in f.message


def test_per_channel_activation() -> None:
    scale = _init("s", np.full(4, 0.1, np.float32))
    zp = _init("z", np.zeros(4, np.int8))
    q = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="act_q", axis=1)
    dq = helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["y"], name="act_dq", axis=1)
    found = _rules(_model([q, dq], [scale, zp]))["qdq-axis"]
    assert {f.node for f in found} == {"act_q", "act_dq"} and all("activation" in f.message for f in found)


def test_nonzero_and_unsigned_zero_points() -> None:
    bad = _conv_with_weight_qdq("Conv", 0, (8, 4, 3, 3), 0, zero=3)
    (f,) = _rules(bad)["qdq-zero-point"]
    assert f.node == "w_dq" and "not 0" in f.message and "Symmetric" in f.fix
    s, z = _init("s", np.float32(0.1)), _init("z", np.uint8(128))
    q = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="u8_q")
    dq = helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["y"], name="u8_dq")
    found = _rules(_model([q, dq], [s, z]))["qdq-zero-point"]
    assert {f.node for f in found} == {"u8_q", "u8_dq"} and "signed INT8" in found[0].message


def test_int32_bias_into_dequantize() -> None:
    b = _init("b_q", np.arange(4, dtype=np.int32))
    s = _init("b_s", np.full(4, 0.01, np.float32))
    dq = helper.make_node("DequantizeLinear", ["b_q", "b_s"], ["b"], name="bias_dq", axis=0)
    add = helper.make_node("Add", ["x", "b"], ["y"], name="add")
    (f,) = _rules(_model([dq, add], [b, s], in_shape=(1, 4)))["qdq-int32-bias"]
    assert f.node == "bias_dq" and "QuantizeBias" in f.fix


def test_dynamic_dims_need_bounds() -> None:
    relu = helper.make_node("Relu", ["x"], ["y"])
    m = _model([relu], in_shape=("N", 3, "H", "W"))
    (f,) = _rules(m)["dynamic-no-bounds"]
    assert f.node == "x" and f.severity == "warning" and "'H'" in f.message
    bounds = {"x": {"min": [1, 3, 32, 32], "opt": [1, 3, 64, 64], "max": [4, 3, 128, 128]}}
    assert check_onnx(_model([relu], in_shape=("N", 3, "H", "W"), meta={"edgeseg.shape_bounds": bounds})) == []


def test_dla_rules_only_with_dla() -> None:
    relu = helper.make_node("Relu", ["x"], ["y"])
    dyn = _model([relu], in_shape=(1, 3, "H", "W"),
                 meta={"edgeseg.shape_bounds": {"x": {"min": [1], "opt": [1], "max": [1]}}})
    assert check_onnx(dyn, "10") == []
    (f,) = _rules(dyn, "10", dla=True)["dla-dynamic"]
    assert f.severity == "error" and "static" in f.fix
    corners = _resize("up_corners", mode="linear", coordinate_transformation_mode="align_corners")
    assert check_onnx(corners, "8.6") == []
    (f,) = _rules(corners, "8.6", dla=True)["dla-resize"]
    assert f.node == "up_corners" and "align_corners=False" in f.fix
    assert "dla-version" in _rules(_model([relu]), "11", dla=True)


def test_trt_version_names() -> None:
    versions = [release_line(v) for v in ("8.6", "8.6.1", "10", "10.3", "11.4")]
    assert versions == ["8.6", "8.6", "10", "10", "11"]
    with pytest.raises(EdgesegError, match="unsupported TensorRT version"):
        release_line("7.2")
    with pytest.raises(EdgesegError, match="unsupported TensorRT version"):
        check_onnx(_model([helper.make_node("Relu", ["x"], ["y"])]), "7.2")


@pytest.mark.parametrize("version,warned", [("8.6.1", False), ("10.3", False), ("10.8", True), ("11", True),
                                            ("11.2", True), ("11.4.0", True), ("11.4.1", False)])
def test_dla_version_reads_the_one_dla_table(version: str, warned: bool) -> None:
    """The old lint warned for every 11.x and never for 10.8+; it now asks trt_api.dla_support (a Jetson)."""
    findings = _rules(_model([helper.make_node("Relu", ["x"], ["y"])]), version, dla=True).get("dla-version", [])
    assert bool(findings) is warned
    assert all(f.severity == "warning" and "DLA" in f.message for f in findings)


@pytest.fixture(scope="module")
def reference_exports(tmp_path_factory) -> dict[str, Path]:
    """The clean reference: a small DeepLab v3+ (MobileNetV2), static and dynamic, logits and labels."""
    folder = tmp_path_factory.mktemp("ref")
    model = build_model(ModelConfig("deeplabv3plus_mobilenet_v2", 5, width=0.35)).eval()
    paths = {}
    for tag, kwargs in {"static": {}, "dynamic": {"dynamic": "both"}, "argmax": {"argmax": True}}.items():
        paths[tag] = folder / f"{tag}.onnx"
        export_onnx(model, paths[tag], input_size=(64, 96), **kwargs)
    return paths


@pytest.mark.parametrize("version", ["8.6", "10", "11"])
def test_clean_reference_export_is_silent(reference_exports: dict[str, Path], version: str) -> None:
    for tag, path in reference_exports.items():
        assert check_onnx(path, version) == [], tag
    for tag in ("static", "argmax"):
        findings = check_onnx(reference_exports[tag], version, dla=True)
        assert [f.rule for f in findings] == (["dla-version"] if version == "11" else []), tag


def test_cli_check_exit_codes(reference_exports: dict[str, Path], tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(main, ["check", str(reference_exports["static"]), "--trt", "8.6", "--dla"])
    assert res.exit_code == 0 and "no findings" in res.output
    res = runner.invoke(main, ["check", str(reference_exports["dynamic"]), "--dla", "--json"])
    assert res.exit_code == 1
    assert [f["rule"] for f in json.loads(res.output)] == ["dla-dynamic"]
    warn = tmp_path / "warn.onnx"
    onnx.save(_resize("up", mode="cubic"), str(warn))
    res = runner.invoke(main, ["check", str(warn)])
    assert res.exit_code == 0 and "cubic" in res.output  # warnings alone do not fail


def test_onnxruntime_quantizer_defaults_fail_and_tensorrt_settings_pass(reference_exports: dict[str, Path],
                                                                         tmp_path: Path) -> None:
    """ORT's default Q/DQ (uint8 activations, int32 bias) is what TensorRT refuses; the settings from
    tensorrt-notes.md section 4 (symmetric int8, float bias, per-channel on the output axis) lint clean."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(0)
            self.batches = iter([{"input": rng.standard_normal((1, 3, 64, 96), dtype=np.float32)} for _ in range(2)])

        def get_next(self):
            return next(self.batches, None)

    src = str(reference_exports["static"])
    default = tmp_path / "ort_default.onnx"
    quantize_static(src, str(default), Reader(), quant_format=QuantFormat.QDQ)
    rules = {(f.rule, f.severity) for f in check_onnx(default, "8.6")}
    assert rules == {("qdq-zero-point", "error"), ("qdq-int32-bias", "error")}
    trt = tmp_path / "trt_style.onnx"
    quantize_static(src, str(trt), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    op_types_to_quantize=["Conv", "ConvTranspose"],
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
                                   "QDQOpTypePerChannelSupportToAxis": {"Conv": 0, "ConvTranspose": 1}})
    assert check_onnx(trt, "8.6") == []


def test_the_85_line_reads_the_85_table() -> None:
    """JetPack 5.1's TensorRT 8.5 (onnx-tensorrt 8.5-GA operators.md: opset <= 17, no LayerNormalization /
    GroupNormalization, which 8.6 EA added); the old lint refused '8.5' as an unsupported version."""
    norm = _model([helper.make_node("LayerNormalization", ["x", "s"], ["y"], axis=-1)],
                  [numpy_helper.from_array(np.ones(8, np.float32), "s")])
    assert "unsupported-op" in _rules(norm, "8.5") and "unsupported-op" not in _rules(norm, "8.6")
    assert "opset" in _rules(_model([helper.make_node("Relu", ["x"], ["y"])], opset=18), "8.5.2")
