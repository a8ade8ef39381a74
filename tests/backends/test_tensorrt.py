"""TensorRT backend: every version-specific decision against fake ``tensorrt`` modules that have only
the enum members each version has (tensorrt-notes.md sections 1-3, 7), plus GPU tests that build and
run real engines and compare them with ONNX Runtime (skipped without TensorRT and a GPU)."""
from __future__ import annotations

import enum
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from edgeseg.backends import trt_api
from edgeseg.backends.tensorrt import EngineInfo, TensorRTRunner, build_engine, require, summarize_onnx
from edgeseg.errors import EdgesegError
from edgeseg.quantize.trt_cache import calibration_cache_text

# ----------------------------------------------------------------------------- fake tensorrt modules

_FLAGS_86 = ["FP16", "INT8", "DEBUG", "GPU_FALLBACK", "STRICT_TYPES", "REFIT", "DISABLE_TIMING_CACHE", "TF32",
             "SPARSE_WEIGHTS", "SAFETY_SCOPE", "OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS",
             "DIRECT_IO", "VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME", "FP8"]
_FLAGS_10 = [f for f in _FLAGS_86 if f != "STRICT_TYPES"] + [
    "BF16", "INT4", "ERROR_ON_TIMING_CACHE_MISS", "DISABLE_COMPILATION_CACHE", "WEIGHTLESS", "STRIP_PLAN",
    "REFIT_IDENTICAL", "REFIT_INDIVIDUAL", "WEIGHT_STREAMING"]
_REMOVED_IN_11 = {"FP16", "BF16", "INT8", "FP8", "INT4", "OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS",
                  "STRIP_PLAN", "WEIGHTLESS"}
_FLAGS_11 = [f for f in _FLAGS_10 if f not in _REMOVED_IN_11]


class _Calibrator:
    """Stands in for the pybind11 calibrator base classes (8.6 / 10.x only)."""

    def __init__(self) -> None:
        self.base_initialized = True


def fake_trt(version: str) -> types.SimpleNamespace:
    """A ``tensorrt`` stand-in with the members of ``version`` only: touching a member the real
    module lacks raises AttributeError, as the real module does [S1, S6]."""
    major = trt_api.trt_major(version)
    creation = {8: {"EXPLICIT_BATCH": 0, "EXPLICIT_PRECISION": 1}, 10: {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 5},
                11: {"STRONGLY_TYPED": 5}}[major]
    levels = ["NONE", "AMPERE_PLUS"]
    if trt_api.version_tuple(version) >= (10, 9):
        levels.append("SAME_COMPUTE_CAPABILITY")
    module = types.SimpleNamespace(
        __version__=version,
        NetworkDefinitionCreationFlag=enum.IntEnum("NetworkDefinitionCreationFlag", creation),
        BuilderFlag=enum.IntEnum("BuilderFlag", {8: _FLAGS_86, 10: _FLAGS_10, 11: _FLAGS_11}[major]),
        HardwareCompatibilityLevel=enum.IntEnum("HardwareCompatibilityLevel", levels),
    )
    if major < 11:
        module.IInt8EntropyCalibrator2 = type("IInt8EntropyCalibrator2", (_Calibrator,), {})
        module.IInt8MinMaxCalibrator = type("IInt8MinMaxCalibrator", (_Calibrator,), {})
    return module


TRT86, TRT10, TRT109, TRT11 = fake_trt("8.6.2"), fake_trt("10.3.0"), fake_trt("10.9.0"), fake_trt("11.1.0")
FAKES = {8: TRT86, 10: TRT10, 11: TRT11}


def test_fakes_are_as_strict_as_the_bindings():
    with pytest.raises(AttributeError):
        TRT11.BuilderFlag.FP16
    with pytest.raises(AttributeError):
        TRT11.NetworkDefinitionCreationFlag.EXPLICIT_BATCH
    with pytest.raises(AttributeError):
        TRT86.NetworkDefinitionCreationFlag.STRONGLY_TYPED
    with pytest.raises(AttributeError):
        TRT10.HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY
    assert not hasattr(TRT11, "IInt8EntropyCalibrator2")


# ----------------------------------------------------------------------------- versions

@pytest.mark.parametrize("version,expected", [("8.6.1", (8, 6, 1)), ("10.3.0.26", (10, 3, 0, 26)),
                                              ("11.4.1.post1", (11, 4, 1)), ("10", (10,))])
def test_version_tuple(version, expected):
    assert trt_api.version_tuple(version) == expected
    assert trt_api.trt_major(version) == expected[0]


def test_version_tuple_rejects_garbage():
    with pytest.raises(EdgesegError, match="look like 10.3.0"):
        trt_api.version_tuple("latest")


@pytest.mark.parametrize("version,dla", [("8.6.1", False), ("10.3.0", True), ("11.1.0", False), ("11.4.1", True)])
def test_build_support_accepts(version, dla):
    trt_api.require_build_support(version, dla=dla)


@pytest.mark.parametrize("version,dla,match", [("8.5.2", False, "8.6, 10.x or 11.x"), ("9.2.0", False, "8.6, 10.x"),
                                               ("11.2.0", True, "no DLA support")])
def test_build_support_refuses(version, dla, match):
    with pytest.raises(EdgesegError, match=match):
        trt_api.require_build_support(version, dla=dla)


# ----------------------------------------------------------------------------- network creation flags

def test_network_flags_86_needs_explicit_batch():
    assert trt_api.network_flags(TRT86, 8, False) == 1 << int(TRT86.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    with pytest.raises(EdgesegError, match="no STRONGLY_TYPED"):
        trt_api.network_flags(TRT86, 8, True)


def test_network_flags_10_strongly_typed_optional_explicit_batch_not_set():
    assert trt_api.network_flags(TRT10, 10, False) == 0
    assert trt_api.network_flags(TRT10, 10, True) == 1 << 5


@pytest.mark.parametrize("strong", [True, False])
def test_network_flags_11_is_zero(strong):
    assert trt_api.network_flags(TRT11, 11, strong) == 0  # the fake lacks EXPLICIT_BATCH: not touched


# ----------------------------------------------------------------------------- precision plan

@pytest.mark.parametrize("major,precision,onnx,cache,strong,implicit", [
    (8, "fp32", "fp32", False, False, False),
    (8, "fp16", "fp32", False, False, False),   # FP16 builder flag
    (8, "fp16", "fp16", False, False, False),   # FP16 ONNX on a weakly typed 8.6 network
    (8, "int8", "int8", False, False, False),   # Q/DQ, weakly typed
    (8, "int8", "fp32", True, False, True),     # implicit INT8 from the cache
    (10, "fp32", "fp32", False, False, False),
    (10, "fp16", "fp32", False, False, False),  # FP32 ONNX: builder flags
    (10, "fp16", "fp16", False, True, False),   # the ONNX carries FP16: strongly typed
    (10, "int8", "int8", False, True, False),
    (10, "int8", "fp32", True, False, True),
    (11, "fp32", "fp32", False, True, False),
    (11, "fp16", "fp16", False, True, False),
    (11, "int8", "int8", False, True, False),
])
def test_precision_plan_defaults(major, precision, onnx, cache, strong, implicit):
    plan = trt_api.precision_plan(major, precision, onnx, has_calibration_cache=cache)
    assert (plan.strongly_typed, plan.implicit_int8) == (strong, implicit)


@pytest.mark.parametrize("major,precision,onnx,kwargs,match", [
    (11, "int8", "fp32", {"has_calibration_cache": True}, "TensorRT 11 has no implicit INT8"),
    (11, "fp16", "fp32", {}, "strongly typed network takes its precision from the ONNX"),
    (10, "fp16", "fp32", {"strongly_typed": True}, "strongly typed network"),
    (10, "fp32", "int8", {}, "ONNX is INT8"),
    (8, "fp32", "fp16", {}, "already carries FP16"),
    (8, "fp16", "fp32", {"strongly_typed": True}, "no strongly typed networks"),
    (11, "fp16", "fp16", {"strongly_typed": False}, "always strongly typed"),
    (10, "int8", "fp32", {}, "needs a calibration cache"),
    (10, "int8", "fp32", {"has_calibration_cache": True, "strongly_typed": True}, "weakly typed network"),
    (10, "int8", "int8", {"has_calibration_cache": True}, "drop calibration_cache"),
    (10, "bf16", "fp32", {}, "precision must be one of"),
])
def test_precision_plan_refuses(major, precision, onnx, kwargs, match):
    with pytest.raises(EdgesegError, match=match):
        trt_api.precision_plan(major, precision, onnx, **kwargs)


@pytest.mark.parametrize("qdq,fp16,expected", [(False, False, "fp32"), (False, True, "fp16"), (True, True, "int8"),
                                               (True, False, "int8")])
def test_onnx_precision(qdq, fp16, expected):
    assert trt_api.onnx_precision(qdq, fp16) == expected


# ----------------------------------------------------------------------------- builder flags

def _flags(version: str, precision: str, **kwargs) -> set[str]:
    major = trt_api.trt_major(version)
    return {f.name for f in trt_api.builder_flags(fake_trt(version), major, precision, **kwargs)}


@pytest.mark.parametrize("version,precision,kwargs,expected", [
    ("8.6.2", "fp32", {"strongly_typed": False}, set()),
    ("8.6.2", "fp16", {"strongly_typed": False}, {"FP16"}),
    ("8.6.2", "int8", {"strongly_typed": False}, {"FP16", "INT8"}),
    ("8.6.2", "int8", {"strongly_typed": False, "implicit_int8": True}, {"FP16", "INT8"}),
    ("8.6.2", "fp16", {"strongly_typed": False, "dla": True}, {"FP16", "GPU_FALLBACK"}),
    ("8.6.2", "fp32", {"strongly_typed": False, "version_compatible": True}, {"VERSION_COMPATIBLE"}),
    ("10.3.0", "fp16", {"strongly_typed": False}, {"FP16"}),
    ("10.3.0", "fp16", {"strongly_typed": True}, set()),
    ("10.3.0", "int8", {"strongly_typed": True, "dla": True}, {"GPU_FALLBACK"}),
    ("10.3.0", "int8", {"strongly_typed": False, "implicit_int8": True}, {"FP16", "INT8"}),
    ("11.1.0", "fp16", {"strongly_typed": True}, set()),
    ("11.1.0", "int8", {"strongly_typed": True, "dla": True, "version_compatible": True},
     {"GPU_FALLBACK", "VERSION_COMPATIBLE"}),
])
def test_builder_flags(version, precision, kwargs, expected):
    assert _flags(version, precision, **kwargs) == expected


@pytest.mark.parametrize("version,precision,kwargs,match", [
    ("11.1.0", "int8", {"strongly_typed": True, "implicit_int8": True}, "implicit INT8 needs TensorRT 8.6/10.x"),
    ("11.1.0", "fp16", {"strongly_typed": False}, "always strongly typed"),
    ("10.3.0", "int8", {"strongly_typed": True, "implicit_int8": True}, "weakly typed"),
    ("8.6.2", "fp32", {"strongly_typed": False, "dla": True}, "DLA runs FP16 or INT8 only"),
    ("8.6.2", "int4", {"strongly_typed": False}, "precision must be one of"),
])
def test_builder_flags_refuse(version, precision, kwargs, match):
    with pytest.raises(EdgesegError, match=match):
        _flags(version, precision, **kwargs)


# ----------------------------------------------------------------------------- profile shapes

BOUNDS = {"min": [1, 3, 32, 48], "opt": [2, 3, 64, 96], "max": [4, 3, 128, 192]}


def test_profile_from_static_shape():
    assert trt_api.profile_shapes(None, (1, 3, 64, 96)) == ((1, 3, 64, 96),) * 3


def test_profile_from_bounds():
    lo, opt, hi = trt_api.profile_shapes(BOUNDS, (-1, 3, -1, -1))
    assert (lo, opt, hi) == ((1, 3, 32, 48), (2, 3, 64, 96), (4, 3, 128, 192))


@pytest.mark.parametrize("bounds,static,match", [
    (None, (-1, 3, 64, 96), "dynamic dims but no shape bounds"),
    ({"min": [1, 3, 32, 48], "max": [4, 3, 128, 192]}, None, "missing \\['opt'\\]"),
    ({**BOUNDS, "opt": [8, 3, 64, 96]}, None, "min <= opt <= max"),
    ({**BOUNDS, "min": [1, 3, 32]}, None, "must be 4 integers"),
    (BOUNDS, (1, 3, -1, -1), "static in dims \\[0\\]"),
])
def test_profile_refuses(bounds, static, match):
    with pytest.raises(EdgesegError, match=match):
        trt_api.profile_shapes(bounds, static)


def test_dla_refuses_dynamic_shapes():
    with pytest.raises(EdgesegError, match="DLA has no dynamic shapes"):
        trt_api.profile_shapes(BOUNDS, (-1, 3, -1, -1), dla=True)
    fixed = {"min": [1, 3, 64, 96], "opt": [1, 3, 64, 96], "max": [1, 3, 64, 96]}
    assert trt_api.profile_shapes(fixed, (-1, 3, -1, -1), dla=True) == ((1, 3, 64, 96),) * 3
    assert trt_api.profile_shapes(None, (1, 3, 64, 96), dla=True) == ((1, 3, 64, 96),) * 3


# ----------------------------------------------------------------------------- hardware compatibility level

@pytest.mark.parametrize("trt,level,expected", [
    (TRT86, "ampere_plus", "AMPERE_PLUS"), (TRT86, True, "AMPERE_PLUS"), (TRT10, "ampere_plus", "AMPERE_PLUS"),
    (TRT109, "same_compute_capability", "SAME_COMPUTE_CAPABILITY"), (TRT11, "same_compute_capability",
                                                                      "SAME_COMPUTE_CAPABILITY"),
])
def test_hardware_level(trt, level, expected):
    assert trt_api.hardware_level(trt, trt.__version__, level, "8.6").name == expected


@pytest.mark.parametrize("level", [False, "none", None])
def test_hardware_level_none_sets_nothing(level):
    assert trt_api.hardware_level(TRT11, "11.1.0", level) is None


@pytest.mark.parametrize("version,level,cc,match", [
    ("8.6.2", "same_compute_capability", "8.7", "needs TensorRT 10.9"),
    ("10.3.0", "same_compute_capability", "8.7", "needs TensorRT 10.9"),
    ("8.5.2", "ampere_plus", "8.7", "need TensorRT 8.6"),
    ("10.3.0", "ampere_plus", "7.5", "Ampere or newer build GPU"),
    ("10.3.0", "turing_plus", "8.7", "must be one of"),
])
def test_hardware_level_refuses(version, level, cc, match):
    with pytest.raises(EdgesegError, match=match):
        trt_api.hardware_level(TRT10, version, level, cc)


# ----------------------------------------------------------------------------- engine compatibility

def _built(version="10.3.0", cc="8.7", vc=False, hw=False, gpu="Orin"):
    return {"trt_version": version, "compute_capability": cc, "version_compatible": vc, "hardware_compatible": hw,
            "gpu": gpu}


def _here(version="10.3.0", cc="8.7", gpu="Orin"):
    return {"trt_version": version, "compute_capability": cc, "gpu": gpu}


@pytest.mark.parametrize("built,here", [
    (_built(), _here()),
    (_built("10.3.0", vc=True), _here("10.9.0")),       # later runtime, same major
    (_built("8.6.2", vc=True), _here("10.3.0")),        # 8 -> 10
    (_built("10.3.0", vc=True), _here("11.1.0")),       # 10 -> 11
    (_built(cc="8.6", hw=True, gpu="RTX 3090"), _here(cc="8.9", gpu="RTX 4090")),
    (_built(cc="8.6", hw="ampere_plus"), _here(cc="9.0", gpu="H100")),
])
def test_engine_compatible(built, here):
    assert trt_api.engine_compatibility(built, here) == []


@pytest.mark.parametrize("built,here,fragment", [
    (_built("10.3.0"), _here("10.9.0"), "not version-compatible"),
    (_built("10.9.0", vc=True), _here("10.3.0"), "same or a later TensorRT"),
    (_built("8.6.2", vc=True), _here("11.1.0"), "8 -> 10 and 10 -> 11"),
    (_built(cc="8.7"), _here(cc="8.6"), "compute capability 8.7, this GPU is 8.6"),
    (_built(cc="8.6", hw=True), _here(cc="7.5"), "Ampere or newer"),
    (_built(cc="8.6", gpu="RTX 3090"), _here(cc="8.6", gpu="A10"), "built on RTX 3090, this GPU is A10"),
])
def test_engine_incompatible(built, here, fragment):
    problems = trt_api.engine_compatibility(built, here)
    assert len(problems) == 1 and fragment in problems[0]


def test_incompatibility_names_every_difference_and_the_rebuild_command():
    with pytest.raises(EdgesegError) as e:
        trt_api.require_compatible(_built("10.3.0", "8.7"), _here("11.1.0", "8.6"), "out/model.engine", "out")
    msg = str(e.value)
    assert "\n" not in msg and "10.3.0" in msg and "11.1.0" in msg and "8.7" in msg
    assert "`edgeseg build --from out --backend trt`" in msg


def test_engine_record_without_versions_is_refused():
    with pytest.raises(EdgesegError, match="engine record lacks trt_version"):
        trt_api.engine_compatibility({"compute_capability": "8.7"}, _here())


def test_engine_info_dict_feeds_the_compatibility_check():
    info = EngineInfo("m.engine", "10.3.0", "8.7", "Orin", "fp16", "fp16", True, False, "input",
                      {"min": [1, 3, 64, 96], "opt": [1, 3, 64, 96], "max": [1, 3, 64, 96]}, None, False, "none",
                      2 << 30, 12.5)
    assert trt_api.engine_compatibility(info.to_dict(), _here()) == []
    assert trt_api.engine_compatibility(info.to_dict(), _here("10.3.1")) != []


# ----------------------------------------------------------------------------- I/O types

@pytest.mark.parametrize("name,expected", [("FLOAT", np.float32), ("HALF", np.float16), ("INT32", np.int32),
                                           ("BOOL", np.bool_)])
def test_numpy_dtype(name, expected):
    assert trt_api.numpy_dtype(enum.Enum("DataType", [name])[name]) == np.dtype(expected)


def test_numpy_dtype_refuses_bf16_io():
    with pytest.raises(EdgesegError, match="BF16 has no numpy equivalent"):
        trt_api.numpy_dtype("BF16")


# ----------------------------------------------------------------------------- parser errors

class _Err:
    def __init__(self, node, desc, code="UNSUPPORTED_NODE", name=None, op=None):
        self._node, self._desc, self._code = node, desc, code
        if name is not None:  # 10.x bindings have node_name / node_operator [S4]; 8.6 does not
            self.node_name = lambda: name
            self.node_operator = lambda: op

    def node(self):
        return self._node

    def desc(self):
        return self._desc

    def code(self):
        return self._code


class _Parser:
    def __init__(self, errors):
        self.errors = errors
        self.num_errors = len(errors)

    def get_error(self, i):
        return self.errors[i]


def test_parser_errors_node_by_node_10x():
    parser = _Parser([_Err(3, "No importer registered for op: Foo", name="/head/Foo", op="Foo"),
                      _Err(-1, "model has\nno graph", code="INVALID_GRAPH")])
    assert trt_api.parser_errors(parser) == ["node 3 '/head/Foo' (Foo): UNSUPPORTED_NODE: No importer registered "
                                             "for op: Foo", "model: INVALID_GRAPH: model has no graph"]


def test_parser_errors_86_names_nodes_from_the_graph():
    parser = _Parser([_Err(1, "Resize mode unsupported")])
    assert trt_api.parser_errors(parser, ["conv", "/up/Resize"]) == [
        "node 1 '/up/Resize': UNSUPPORTED_NODE: Resize mode unsupported"]
    assert trt_api.parser_errors(parser) == ["node 1: UNSUPPORTED_NODE: Resize mode unsupported"]


# ----------------------------------------------------------------------------- calibration cache replay

def _cache(algorithm="entropy", version="8.6.1") -> bytes:
    return calibration_cache_text({"input": 2.5, "/conv/Conv_output_0": 6.0}, version, algorithm).encode()


@pytest.mark.parametrize("trt", [TRT86, TRT10])
def test_cache_calibrator_replays_the_file(trt):
    calibrator = trt_api.cache_calibrator(trt, trt_api.trt_major(trt.__version__), _cache())
    assert isinstance(calibrator, trt.IInt8EntropyCalibrator2) and calibrator.base_initialized
    assert calibrator.get_batch(["input"]) is None  # no GPU calibration pass
    assert calibrator.read_calibration_cache() == _cache()
    assert calibrator.get_batch_size() == 1


def test_cache_calibrator_follows_the_header_algorithm():
    calibrator = trt_api.cache_calibrator(TRT10, 10, _cache("minmax"))
    assert isinstance(calibrator, TRT10.IInt8MinMaxCalibrator)
    with pytest.raises(EdgesegError, match="DLA needs an EntropyCalibration2 cache"):
        trt_api.cache_calibrator(TRT10, 10, _cache("minmax"), dla=True)


def test_cache_calibrator_refuses_11_and_bad_headers():
    with pytest.raises(EdgesegError, match="TensorRT 11 has no INT8 calibrators"):
        trt_api.cache_calibrator(TRT11, 11, _cache())
    with pytest.raises(EdgesegError, match="header must be"):
        trt_api.cache_calibrator(TRT10, 10, b"input: 3c23d70a\n")
    assert trt_api.calibration_algorithm(_cache(version="10.3.0")) == "EntropyCalibration2"


# ----------------------------------------------------------------------------- missing packages, ONNX facts

@pytest.mark.parametrize("module,hidden", [("tensorrt", "tensorrt"), ("pycuda.driver", "pycuda")])
def test_missing_package_names_the_extra(monkeypatch, module, hidden):
    monkeypatch.setitem(sys.modules, hidden, None)  # makes the import raise ImportError
    with pytest.raises(EdgesegError, match=r"pip install 'edgeseg\[trt\]'"):
        require(module)


def test_build_and_runner_without_tensorrt_say_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(EdgesegError, match=r"edgeseg\[trt\]"):
        build_engine(tmp_path / "m.onnx", tmp_path / "m.engine")
    with pytest.raises(EdgesegError, match=r"edgeseg\[trt\]"):
        TensorRTRunner(tmp_path / "m.engine").activate()


def _graph(nodes, inputs, outputs, initializers=(), props=None):
    import onnx
    from onnx import helper

    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, list(initializers)),
                              opset_imports=[helper.make_opsetid("", 17)])
    for key, value in (props or {}).items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    return model


def test_summarize_onnx_reads_precision_names_and_bounds():
    import json

    from onnx import TensorProto, helper, numpy_helper

    f32 = [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, "H", "W"])]
    out = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3, "H", "W"])]
    bounds = {"input": BOUNDS}
    fp32 = _graph([helper.make_node("Relu", ["input"], ["logits"], name="relu")], f32, out,
                  props={"edgeseg.shape_bounds": json.dumps(bounds)})
    summary = summarize_onnx(fp32)
    assert (summary.precision, summary.node_names, summary.shape_bounds) == ("fp32", ["relu"], bounds)

    cast = [helper.make_node("Cast", ["input"], ["h"], to=TensorProto.FLOAT16, name="c16"),
            helper.make_node("Cast", ["h"], ["logits"], to=TensorProto.FLOAT, name="c32")]
    assert summarize_onnx(_graph(cast, f32, out)).precision == "fp16"

    scale = numpy_helper.from_array(np.array(0.05, np.float32), "s")
    zero = numpy_helper.from_array(np.array(0, np.int8), "z")
    qdq = [helper.make_node("QuantizeLinear", ["input", "s", "z"], ["q"]),
           helper.make_node("DequantizeLinear", ["q", "s", "z"], ["logits"])]
    assert summarize_onnx(_graph(qdq, f32, out, [scale, zero])).precision == "int8"


def test_runner_refuses_an_engine_built_elsewhere_before_loading(monkeypatch, tmp_path):
    """The portability guard runs before deserialization, with every difference and the fix."""
    import edgeseg.backends.tensorrt as backend

    engine = tmp_path / "model.engine"
    engine.write_bytes(b"plan")
    monkeypatch.setattr(backend, "require", lambda module: types.SimpleNamespace())
    monkeypatch.setattr(backend, "runtime_info", lambda device=0: _here("10.3.0", "8.7"))
    runner = TensorRTRunner(engine, engine_info=_built("8.6.2", "8.6"))
    with pytest.raises(EdgesegError, match=r"TensorRT 8.6.2.*compute capability 8.6.*--from .* --backend trt"):
        runner.activate()


# ----------------------------------------------------------------------------- GPU + TensorRT

def _tiny_net():
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 4, 1)).eval()


def _export(path: Path, shape=(1, 3, 32, 48), dynamic: bool = False) -> Path:
    """A tiny conv net through the TorchScript exporter at opset 17 (what TensorRT 8.6 parses) [notes 6]."""
    import torch

    axes = {"input": {0: "N", 2: "H", 3: "W"}, "logits": {0: "N", 2: "H", 3: "W"}} if dynamic else None
    torch.onnx.export(_tiny_net(), torch.randn(*shape), str(path), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"], dynamic_axes=axes)
    return path


def _ort(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def _x(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


TF32_TOL = 1e-2  # TensorRT enables TF32 by default on Ampere+; FP32 ONNX Runtime is the reference


@pytest.mark.gpu
@pytest.mark.tensorrt
def test_fp32_engine_matches_onnxruntime(tmp_path):
    onnx_path = _export(tmp_path / "m.onnx")
    info = build_engine(onnx_path, tmp_path / "m.engine", precision="fp32", timing_cache_path=tmp_path / "t.cache")
    assert (tmp_path / "m.engine").stat().st_size > 0 and (tmp_path / "t.cache").stat().st_size > 0
    assert info.profile["min"] == info.profile["max"] == [1, 3, 32, 48] and info.build_seconds > 0
    x = _x((1, 3, 32, 48))
    with TensorRTRunner(tmp_path / "m.engine", engine_info=info.to_dict()) as runner:
        out = runner.infer(x)
        assert runner.last_latency_ms is not None
        with pytest.raises(EdgesegError, match="height 64 is outside"):
            runner.infer(_x((1, 3, 64, 48)))
    assert out.shape == (1, 4, 32, 48) and out.dtype == np.float32
    assert float(np.abs(out - _ort(onnx_path, x)).max()) < TF32_TOL


@pytest.mark.gpu
@pytest.mark.tensorrt
def test_dynamic_shapes_within_the_profile(tmp_path):
    onnx_path = _export(tmp_path / "m.onnx", dynamic=True)
    bounds = {"min": [1, 3, 16, 16], "opt": [1, 3, 32, 48], "max": [2, 3, 64, 64]}
    info = build_engine(onnx_path, tmp_path / "m.engine", bounds=bounds)
    with TensorRTRunner(tmp_path / "m.engine", engine_info=info.to_dict()) as runner:
        spec = runner.input_spec
        assert (spec.min_shape, spec.max_shape) == ((1, 3, 16, 16), (2, 3, 64, 64))
        for shape in [(1, 3, 32, 48), (2, 3, 64, 64), (1, 3, 16, 24)]:  # grow the buffers, then shrink
            x = _x(shape, seed=sum(shape))
            assert float(np.abs(runner.infer(x) - _ort(onnx_path, x)).max()) < TF32_TOL
        with pytest.raises(EdgesegError, match="batch 3 is outside"):
            runner.infer(_x((3, 3, 32, 48)))


@pytest.mark.gpu
@pytest.mark.tensorrt
def test_torch_cuda_tensors_in_and_out_without_copies(tmp_path):
    import torch

    onnx_path = _export(tmp_path / "m.onnx")
    build_engine(onnx_path, tmp_path / "m.engine")
    x = _x((1, 3, 32, 48))
    with TensorRTRunner(tmp_path / "m.engine") as runner:
        expected = runner.infer(x)
        out = runner.infer(torch.from_numpy(x).cuda())
    assert isinstance(out, torch.Tensor) and out.is_cuda and out.dtype == torch.float32
    assert float(np.abs(out.cpu().numpy() - expected).max()) < 1e-5


@pytest.mark.gpu
@pytest.mark.tensorrt
def test_fp16_engine_is_close_to_onnxruntime(tmp_path):
    import tensorrt as trt

    if trt_api.trt_major(trt.__version__) >= 11:
        pytest.skip("TensorRT 11 takes FP16 from an FP16 ONNX only (no FP16 builder flag)")
    onnx_path = _export(tmp_path / "m.onnx")
    info = build_engine(onnx_path, tmp_path / "m.engine", precision="fp16")
    assert not info.strongly_typed and info.onnx_precision == "fp32"
    x = _x((1, 3, 32, 48))
    with TensorRTRunner(tmp_path / "m.engine") as runner:
        out = runner.infer(x)
    ref = _ort(onnx_path, x)
    assert float(np.abs(out - ref).max()) < 5e-2 * max(1.0, float(np.abs(ref).max()))


@pytest.mark.gpu
@pytest.mark.tensorrt
def test_built_engine_is_compatible_with_this_machine(tmp_path):
    from edgeseg.backends.tensorrt import runtime_info

    info = build_engine(_export(tmp_path / "m.onnx"), tmp_path / "m.engine")
    assert trt_api.engine_compatibility(info.to_dict(), runtime_info()) == []


@pytest.mark.gpu
@pytest.mark.tensorrt
def test_corrupt_engine_is_a_clear_error(tmp_path):
    (tmp_path / "m.engine").write_bytes(b"\x00not a plan" * 64)
    with pytest.raises(EdgesegError, match=r"cannot load .*rebuild it with `edgeseg build --from"):
        TensorRTRunner(tmp_path / "m.engine").activate()


@pytest.mark.gpu
@pytest.mark.tensorrt
def test_parser_errors_name_the_node(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3, 8, 8]) for n in ("input", "logits")]
    model = helper.make_model(
        helper.make_graph([helper.make_node("NoSuchOp", ["input"], ["logits"], name="mystery", domain="edgeseg.test")],
                          "g", io[:1], io[1:]),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("edgeseg.test", 1)])
    onnx.save(model, tmp_path / "bad.onnx")
    with pytest.raises(EdgesegError, match=r"cannot parse .*node 0 'mystery'"):
        build_engine(tmp_path / "bad.onnx", tmp_path / "bad.engine")
    assert not (tmp_path / "bad.engine").exists()


# ----------------------------------------------------------------------------- glue, with fake tensorrt + pycuda
# Exercises build_engine and TensorRTRunner call by call against stand-ins of the bindings used in
# tensorrt-notes.md sections 1-2: flags reach the config, the plan and the timing cache are written,
# every I/O tensor gets an address, buffers grow with the shape. The fake engine computes 2 * x on
# the first channel block (output channels: input channels + 1).

class _Memory(dict):
    next_ptr = 4096


def _fake_pycuda(memory: _Memory) -> types.SimpleNamespace:
    class Alloc:
        def __init__(self, nbytes):
            self.ptr, memory.next_ptr = memory.next_ptr, memory.next_ptr + nbytes + 256
            memory[self.ptr] = np.zeros(nbytes, np.uint8)

        def __int__(self):
            return self.ptr

        def free(self):
            memory.pop(self.ptr, None)

    class Ctx:
        def push(self):
            cuda.stack.append(self)

        def detach(self):
            cuda.detached = True

    def flat(a):
        return a.reshape(-1).view(np.uint8)

    cuda = types.SimpleNamespace(stack=[], detached=False, Error=RuntimeError)
    cuda.init = lambda: None
    cuda.Device = lambda i: types.SimpleNamespace(compute_capability=lambda: (8, 7), name=lambda: "Orin",
                                                  retain_primary_context=Ctx)
    cuda.Context = types.SimpleNamespace(pop=lambda: cuda.stack.pop())
    cuda.Stream = lambda: types.SimpleNamespace(handle=77, synchronize=lambda: None)
    cuda.pagelocked_empty = lambda shape, dtype: np.empty(shape, dtype)
    cuda.mem_alloc = Alloc

    def htod(dest, src, stream):
        memory[int(dest)][:src.nbytes] = flat(src)

    def dtoh(dest, src, stream):
        flat(dest)[:] = memory[int(src)][:dest.nbytes]

    cuda.memcpy_htod_async, cuda.memcpy_dtoh_async = htod, dtoh
    return cuda


def _fake_trt_runtime(version: str, memory: _Memory, input_shape, profile=None) -> types.SimpleNamespace:
    trt = fake_trt(version)
    trt.calls = []
    trt.ILogger = type("ILogger", (), {"__init__": lambda self: None,
                                       "Severity": enum.IntEnum("Severity", "INTERNAL_ERROR ERROR WARNING INFO")})
    trt.MemoryPoolType = enum.IntEnum("MemoryPoolType", "WORKSPACE")
    trt.TensorIOMode = enum.IntEnum("TensorIOMode", "NONE INPUT OUTPUT")
    trt.DeviceType = enum.IntEnum("DeviceType", "GPU DLA")

    class Config:
        def __init__(self):
            self.flags, self.profiles = [], []

        def set_memory_pool_limit(self, pool, size):
            trt.calls.append(("workspace", size))

        def create_timing_cache(self, data):
            return types.SimpleNamespace(data=bytes(data), serialize=lambda: b"TIMING" + bytes(data))

        def set_timing_cache(self, cache, ignore_mismatch):
            self.cache = cache
            return True

        def get_timing_cache(self):
            return self.cache

        def set_flag(self, flag):
            self.flags.append(flag.name)

        def add_optimization_profile(self, p):
            self.profiles.append(p)

        def set_calibration_profile(self, p):  # 8.6 / 10.x only [S1]
            self.calibration_profile = p

    class Builder:
        num_DLA_cores = 0

        def __init__(self, logger):
            self.logger = logger

        def create_network(self, flags):
            trt.calls.append(("network_flags", flags))
            return types.SimpleNamespace(num_inputs=1, get_input=lambda i: types.SimpleNamespace(
                name="input", shape=input_shape))

        def create_builder_config(self):
            trt.config = Config()
            return trt.config

        def create_optimization_profile(self):
            return types.SimpleNamespace(set_shape=lambda *a: trt.calls.append(("profile", a)))

        def build_serialized_network(self, network, config):
            return b"PLAN"

    class Context:
        addresses: dict = {}

        def set_input_shape(self, name, shape):
            self.shape = tuple(shape)
            return True

        def get_tensor_shape(self, name):
            n, c, h, w = self.shape
            return (n, c + 1, h, w)

        def set_tensor_address(self, name, ptr):
            self.addresses[name] = ptr

        def execute_async_v3(self, handle):
            assert handle == 77 and set(self.addresses) == {"input", "logits"}
            n, c, h, w = self.shape
            x = memory[self.addresses["input"]][:n * c * h * w * 4].view(np.float32).reshape(self.shape)
            out = np.concatenate([2 * x, np.zeros((n, 1, h, w), np.float32)], axis=1)
            memory[self.addresses["logits"]][:out.nbytes] = out.reshape(-1).view(np.uint8)
            trt.calls.append(("execute", self.shape))
            return True

    class Engine:
        num_io_tensors = 2

        def get_tensor_name(self, i):
            return ("input", "logits")[i]

        def get_tensor_mode(self, name):
            return trt.TensorIOMode.INPUT if name == "input" else trt.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name):
            return "FLOAT"

        def get_tensor_shape(self, name):
            return input_shape if name == "input" else (input_shape[0], 4, input_shape[2], input_shape[3])

        def get_tensor_profile_shape(self, name, index):
            return [profile["min"], profile["opt"], profile["max"]]

        def create_execution_context(self):
            return Context()

    trt.Builder = Builder
    trt.OnnxParser = lambda network, logger: types.SimpleNamespace(parse_from_file=lambda path: True)
    trt.Runtime = lambda logger: types.SimpleNamespace(
        deserialize_cuda_engine=lambda plan: Engine() if bytes(plan) == b"PLAN" else None)
    return trt


@pytest.fixture
def fake_backend(monkeypatch, tmp_path):
    """Install fakes for TensorRT 10.3 and pycuda; returns a function (input_shape, profile) -> (trt, cuda)."""
    import edgeseg.backends.tensorrt as backend

    def install(input_shape, profile=None, version="10.3.0"):
        memory = _Memory()
        trt, cuda = _fake_trt_runtime(version, memory, input_shape, profile), _fake_pycuda(memory)
        monkeypatch.setattr(backend, "require", lambda module: trt if module == "tensorrt" else cuda)
        return trt, cuda

    return install


def _write_onnx(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 3, "H", "W"]) for n in ("input", "logits")]
    onnx.save(_graph([helper.make_node("Relu", ["input"], ["logits"], name="relu")], io[:1], io[1:]), path)
    return path


def test_build_glue_static(fake_backend, tmp_path):
    trt, _ = fake_backend((1, 3, 8, 12))
    (tmp_path / "t.cache").write_bytes(b"OLD")
    info = build_engine(_write_onnx(tmp_path / "m.onnx"), tmp_path / "m.engine", precision="fp16",
                        timing_cache_path=tmp_path / "t.cache", version_compatible=True)
    assert (tmp_path / "m.engine").read_bytes() == b"PLAN"
    assert (tmp_path / "t.cache").read_bytes() == b"TIMINGOLD"  # read, then written back
    assert trt.config.flags == ["FP16", "VERSION_COMPATIBLE"] and trt.config.profiles == []  # static: no profile
    assert ("network_flags", 0) in trt.calls and ("workspace", 2 << 30) in trt.calls
    assert (info.trt_version, info.compute_capability, info.precision, info.strongly_typed) == ("10.3.0", "8.7",
                                                                                             "fp16", False)
    assert info.profile == {"min": [1, 3, 8, 12], "opt": [1, 3, 8, 12], "max": [1, 3, 8, 12]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.engine", "m.onnx", "t.cache"]  # no temp files left


def test_build_glue_dynamic_and_implicit_int8(fake_backend, tmp_path):
    trt, _ = fake_backend((-1, 3, -1, -1))
    (tmp_path / "calib.cache").write_bytes(_cache(version="10.3.0"))
    info = build_engine(_write_onnx(tmp_path / "m.onnx"), tmp_path / "m.engine", precision="int8", bounds=BOUNDS,
                        calibration_cache=tmp_path / "calib.cache")
    assert info.implicit_int8 and trt.config.flags == ["FP16", "INT8"]
    assert ("profile", ("input", (1, 3, 32, 48), (2, 3, 64, 96), (4, 3, 128, 192))) in trt.calls
    assert trt.config.int8_calibrator.read_calibration_cache() == _cache(version="10.3.0")
    assert trt.config.calibration_profile is trt.config.profiles[0]


def test_build_glue_refuses_dynamic_onnx_without_bounds(fake_backend, tmp_path):
    fake_backend((-1, 3, -1, -1))
    with pytest.raises(EdgesegError, match="no shape bounds"):
        build_engine(_write_onnx(tmp_path / "m.onnx"), tmp_path / "m.engine")
    assert not (tmp_path / "m.engine").exists()


def test_runner_glue_numpy_dynamic(fake_backend, tmp_path):
    profile = {"min": (1, 3, 4, 4), "opt": (1, 3, 8, 8), "max": (2, 3, 16, 16)}
    trt, cuda = fake_backend((-1, 3, -1, -1), profile)
    (tmp_path / "m.engine").write_bytes(b"PLAN")
    with TensorRTRunner(tmp_path / "m.engine", engine_info=_built(cc="8.7", gpu="Orin")) as runner:
        assert (runner.input_spec.min_shape, runner.input_spec.max_shape) == ((1, 3, 4, 4), (2, 3, 16, 16))
        for shape in [(1, 3, 8, 8), (2, 3, 16, 16), (1, 3, 4, 6)]:
            x = _x(shape)
            out = runner.infer(x)
            assert out.shape == (shape[0], 4, *shape[2:]) and np.array_equal(out[:, :3], 2 * x)
        assert cuda.stack == []  # every push was popped
    assert cuda.detached and [c for c in trt.calls if c[0] == "execute"][-1] == ("execute", (1, 3, 4, 6))


def test_runner_glue_corrupt_plan(fake_backend, tmp_path):
    _, cuda = fake_backend((1, 3, 8, 8))
    (tmp_path / "m.engine").write_bytes(b"garbage")
    with pytest.raises(EdgesegError, match=r"cannot load .*rebuild it with `edgeseg build --from"):
        TensorRTRunner(tmp_path / "m.engine").activate()
    assert cuda.stack == [] and cuda.detached
