"""TensorRT backend: every version-specific decision against fake ``tensorrt`` modules that have only
the enum members each version has (tensorrt-notes.md sections 1-3, 7), plus GPU tests that build and
run real engines and compare them with ONNX Runtime (skipped without TensorRT and a GPU)."""
from __future__ import annotations

import enum
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from edgeseg.backends import trt_api
from edgeseg.backends.trt_engine import EngineInfo, build_engine, summarize_onnx
from edgeseg.backends.trt_env import require
from edgeseg.backends.trt_runner import TensorRTRunner
from edgeseg.errors import EdgesegError
from edgeseg.quantize.trt_cache import calibration_cache_text

from _trt_fakes import RELEASES, Memory, fake_pycuda, fake_trt, fake_trt_runtime, load_surface, offered_names

# ----------------------------------------------------------------------------- fakes from the real surfaces

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


@pytest.mark.parametrize("version,dla", [("8.6.1", False), ("8.6.1", True), ("10.3.0", True), ("10.7.0", True),
                                         ("11.1.0", False), ("11.4.1", False), ("11.4.1", True)])
def test_build_support_accepts(version, dla):
    trt_api.require_build_support(version, dla=dla, system="linux", machine="aarch64")


@pytest.mark.parametrize("version,dla,match", [("8.4.3", False, "8.5, 8.6, 10.x or 11.x"),
                                               ("9.2.0", False, "8.5, 8.6, 10.x"),
                                               ("10.8.0", True, "10.7 was the last 10.x release with DLA"),
                                               ("10.16.1", True, "no DLA"),
                                               ("11.2.0", True, "no DLA in 11.0-11.3"),
                                               ("11.4.0", True, "DLA only on Windows on ARM")])
def test_build_support_refuses(version, dla, match):
    """DLA per version (TensorRT docs, 'Working with DLA' of 11.3.0 / 11.4.0 / 11.4.1): 10.7 was the last 10.x
    with DLA; 11.0-11.3 have none; 11.4.0 has it on Windows on ARM only; 11.4.1 restores it on Jetson AGX Orin
    (JetPack >= 7.2.2). The old code allowed 10.8+ and 11.4+ on Linux and failed later at num_DLA_cores."""
    with pytest.raises(EdgesegError, match=match) as e:
        trt_api.require_build_support(version, dla=dla, system="linux", machine="aarch64")
    assert "\n" not in str(e.value) and "--dla-core" in str(e.value) or not dla


def test_dla_on_11_is_for_windows_on_arm_and_from_11_4_1_jetson():
    """Drift between two DLA tables: trt_api refused 11.4.1 on a Jetson ("Windows on ARM only", true of 11.4.0)
    and allowed 11.0-11.3 on Windows on ARM; the lint warned for every 11.x. Both now read trt_api's one table."""
    trt_api.require_build_support("11.4.1", dla=True, system="win32", machine="ARM64")
    trt_api.require_build_support("11.4.0.106", dla=True, system="win32", machine="ARM64")
    assert trt_api.dla_support("11.4.1", *trt_api.JETSON) is None
    with pytest.raises(EdgesegError, match="Windows on ARM"):
        trt_api.require_build_support("11.4.1", dla=True, system="win32", machine="AMD64")
    with pytest.raises(EdgesegError, match="no DLA in 11.0-11.3"):
        trt_api.require_build_support("11.2.0", dla=True, system="win32", machine="ARM64")


# ----------------------------------------------------------------------------- the one DLA table (issue 25.6)

@pytest.mark.parametrize("version,system,machine,jetpack,supported", [
    ("11.4.1", "linux", "aarch64", "7.2.2", True),     # the statement: AGX Orin, JetPack >= 7.2.2
    ("11.4.1.3", "linux", "aarch64", "7.3", True),
    ("11.4.1", "linux", "aarch64", "7.2", False),      # JetPack 7.2 GA (L4T 39.2.0) is not enough
    ("11.4.1", "linux", "aarch64", "6.1", False),      # "Jetson Orin on JetPack 6.x is not supported in 11.4.1"
    ("11.4.1", "linux", "aarch64", None, True),        # JetPack unknown (the lint): the table's platform only
    ("11.4.1", "win32", "ARM64", None, True),           # Windows on ARM (beta)
    ("11.4.0", "linux", "aarch64", "7.2.2", False),    # 11.4.0: Windows on ARM only
    ("11.3.0", "linux", "aarch64", "7.2.2", False),
    ("10.7.0", "linux", "aarch64", "6.1", True), ("10.8.0", "linux", "aarch64", "6.2", False),
    ("8.5.2", "linux", "aarch64", "5.1", True),         # JetPack 5.1 (Xavier, Orin): DLA since long before 8.6
])
def test_the_dla_table_states_nvidias_platforms(version, system, machine, jetpack, supported):
    """TensorRT 11.4.1 docs ('Working with DLA', release notes, Jetson migration): DLA on Jetson AGX Orin with
    JetPack >= 7.2.2 (strongly typed) and on Windows on ARM (beta, no GPU fallback); none on Thor, DriveOS or Orin
    with JetPack 6.x; 10.7 the last 10.x with DLA. The old table ignored JetPack and had no 8.5 row."""
    assert (trt_api.dla_support(version, system, machine, jetpack) is None) is supported


def test_the_dla_table_carries_typing_and_gpu_fallback():
    orin = trt_api.dla_facts("11.4.1", "linux", "aarch64")
    assert orin.typing == "strong" and orin.gpu_fallback and orin.min_jetpack == (7, 2, 2)
    assert not trt_api.dla_facts("11.4.1", "win32", "ARM64").gpu_fallback  # "there is no GPU fallback"
    assert trt_api.dla_facts("10.3.0", "linux", "aarch64").typing == "weak or strong"
    flags = {f.name for f in trt_api.builder_flags(TRT11, 11, "fp16", strongly_typed=True, dla=True,
                                                   gpu_fallback=False)}
    assert flags == set()


def test_lint_build_and_doctor_read_the_one_dla_table(monkeypatch, fake_backend, tmp_path):
    """Change the table, and all three follow: the lint's dla-version finding, build_engine's refusal and the
    doctor's DLA row."""
    from onnx import TensorProto, helper

    from edgeseg.backends.trt_lint import check_onnx
    from edgeseg.doctor.environment import Environment, _dla_row
    from edgeseg.doctor.report import Report

    monkeypatch.setattr(trt_api, "DLA_TABLE", ())  # no release has DLA anywhere
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3, 8, 8]) for n in ("x", "y")]
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", io[:1], io[1:]),
                              opset_imports=[helper.make_opsetid("", 17)])
    assert [f.rule for f in check_onnx(model, "10.3", dla=True)] == ["dla-version"]
    trt, _ = fake_backend((1, 3, 8, 8), dla_cores=2)
    with pytest.raises(EdgesegError, match="--dla-core cannot be used"):
        build_engine(_write_onnx(tmp_path / "m.onnx"), tmp_path / "m.engine", precision="fp16", dla_core=0)
    report = Report()
    _dla_row(report, Environment(trt=trt, trt_version="10.3.0", gpu="Orin"))
    assert report.checks[0].status == "SKIPPED" and "10.3.0 has no DLA" in report.checks[0].detail


@pytest.mark.parametrize("version,line", [("8.5.2.2", "8.5"), ("8.6", "8.6"), ("8.6.1", "8.6"), ("10", "10"),
                                          ("10.3.0.26", "10"),
                                          ("11.4", "11"), ("12.0", "11")])
def test_release_line(version, line):
    assert trt_api.release_line(version) == line


@pytest.mark.parametrize("version", ["7.2", "8.4.1", "9.2", "latest"])
def test_release_line_refuses(version):
    with pytest.raises(EdgesegError, match="TensorRT version"):
        trt_api.release_line(version)


@pytest.mark.parametrize("version,implicit", [("8.6.1", True), ("10.16.1", True), ("11.0.0", False), ("12", False)])
def test_implicit_int8_exists_before_11(version, implicit):
    assert trt_api.has_implicit_int8(version) is implicit
    if not implicit:
        with pytest.raises(EdgesegError, match="no implicit INT8"):
            trt_api.require_implicit_int8(version)


@pytest.mark.parametrize("core,cores,match", [(0, 0, "this device has no DLA"), (2, 2, "has 2 DLA core"),
                                              (-1, 1, "has 1 DLA core")])
def test_dla_core_this_device_lacks_is_refused(core, cores, match):
    with pytest.raises(EdgesegError, match=match):
        trt_api.require_dla_cores(core, cores)
    trt_api.require_dla_cores(1, 2)


# ----------------------------------------------------------------------------- network creation flags

def test_network_flags_86_needs_explicit_batch():
    assert trt_api.network_flags(TRT86, 8, False) == 1 << int(TRT86.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    with pytest.raises(EdgesegError, match="no STRONGLY_TYPED"):
        trt_api.network_flags(TRT86, 8, True)


def test_network_flags_10_strongly_typed_optional_explicit_batch_not_set():
    assert trt_api.network_flags(TRT10, 10, False) == 0
    assert trt_api.network_flags(TRT10, 10, True) == 1 << 1  # kSTRONGLY_TYPED = 1 (release/10.3 NvInfer.h)


@pytest.mark.parametrize("release,flag,value", [("8.6.1", "EXPLICIT_BATCH", 0), ("10.3.0", "STRONGLY_TYPED", 1),
                                                ("10.16.1", "STRONGLY_TYPED", 1), ("11.4.0", "STRONGLY_TYPED", 0)])
def test_creation_flag_values_come_from_nvidia_headers(release, flag, value):
    """The old fake had STRONGLY_TYPED = 5; NVIDIA's headers say 1 on 10.x and 0 on 11.x (deprecated there)."""
    assert load_surface(release).values["NetworkDefinitionCreationFlag"][flag] == value
    assert int(getattr(fake_trt(release).NetworkDefinitionCreationFlag, flag)) == value


@pytest.mark.parametrize("strong", [True, False])
def test_network_flags_11_is_zero(strong):
    assert trt_api.network_flags(TRT11, 11, strong) == 0  # the fake lacks EXPLICIT_BATCH: not touched


# ----------------------------------------------------------------------------- precision plan

@pytest.mark.parametrize("major,precision,onnx,cache,fp16_qdq,strong,implicit,mix", [
    (8, "fp32", "fp32", False, False, False, False, "fp32"),
    (8, "fp16", "fp32", False, False, False, False, "fp16 (builder flag) + fp32 fallback"),
    (8, "fp16", "fp16", False, False, False, False, "fp16 (from the ONNX)"),  # FP16 ONNX, weakly typed 8.6
    (8, "int8", "int8", False, False, False, False, "int8 (Q/DQ) + fp16 (builder flags)"),
    (8, "int8", "fp32", True, False, False, True, "int8 (calibration cache) + fp16 (builder flags)"),
    (10, "fp32", "fp32", False, False, False, False, "fp32"),
    (10, "fp16", "fp32", False, False, False, False, "fp16 (builder flag) + fp32 fallback"),
    (10, "fp16", "fp16", False, False, True, False, "fp16 (from the ONNX)"),  # the ONNX carries FP16
    # FP32-scale Q/DQ: weakly typed with FP16|INT8 flags, the same mix as 8.6 (was strongly typed: all FP32)
    (10, "int8", "int8", False, False, False, False, "int8 (Q/DQ) + fp16 (builder flags)"),
    (10, "int8", "int8", False, True, True, False, "int8 (Q/DQ) + fp16 (FP16 graph)"),  # the mixed graph
    (10, "int8", "fp32", True, False, False, True, "int8 (calibration cache) + fp16 (builder flags)"),
    (11, "fp32", "fp32", False, False, True, False, "fp32"),
    (11, "fp16", "fp16", False, False, True, False, "fp16 (from the ONNX)"),
    (11, "int8", "int8", False, True, True, False, "int8 (Q/DQ) + fp16 (FP16 graph)"),
])
def test_precision_plan_defaults(major, precision, onnx, cache, fp16_qdq, strong, implicit, mix):
    plan = trt_api.precision_plan(major, precision, onnx, has_calibration_cache=cache, fp16_qdq=fp16_qdq)
    assert (plan.strongly_typed, plan.implicit_int8, plan.precision_mix) == (strong, implicit, mix)
    assert plan.typing == ("strong" if strong else "weak")


def test_int8_unquantized_layers_run_fp16_on_every_version():
    """The bundle's FP32-scale Q/DQ graph gets FP16 for its unquantized layers on 8.6 and 10.x (flags);
    on 11.x it is refused in favour of the FP16-scale graph, unless INT8 + FP32 is asked for explicitly."""
    for major in (8, 10):
        plan = trt_api.precision_plan(major, "int8", "int8")
        flags = {f.name for f in trt_api.builder_flags(FAKES[major], major, "int8", strongly_typed=plan.strongly_typed)}
        assert flags == {"FP16", "INT8"}
    with pytest.raises(EdgesegError, match="FP32 Q/DQ scales would run every unquantized layer.*model.int8.trt16.onnx"):
        trt_api.precision_plan(11, "int8", "int8")
    assert trt_api.precision_plan(11, "int8", "int8", strongly_typed=True).precision_mix == "int8 (Q/DQ) + fp32"
    with pytest.raises(EdgesegError, match="opset <= 17"):
        trt_api.precision_plan(8, "int8", "int8", fp16_qdq=True)


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
    (11, "int8", "fp32", {}, "TensorRT 11 has no implicit INT8"),
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


X86_DGPU = {"os": "linux", "arch": "x86_64", "jetson": False}
ORIN = {"os": "linux", "arch": "aarch64", "jetson": True}
SBSA = {"os": "linux", "arch": "aarch64", "jetson": False}  # e.g. GH200: aarch64 with a discrete GPU


def test_an_x86_ampere_plus_plan_is_not_declared_runnable_on_an_orin():
    """The old check compared only versions and compute capability: an AMPERE_PLUS plan built on an RTX 3090
    (x86) "ran" on an Orin (8.7 >= 8.0). Plans are not portable across platforms (TensorRT support matrix) and
    hardware-compatible plans do not exist on JetPack."""
    built = dict(_built(cc="8.6", hw="ampere_plus", gpu="NVIDIA GeForce RTX 3090"), platform=X86_DGPU)
    here = dict(_here(cc="8.7", gpu="Orin"), platform=ORIN)
    problems = trt_api.engine_compatibility(built, here)
    assert any("built on linux x86_64 (discrete GPU), this machine is linux aarch64 (Jetson)" in p for p in problems)
    assert any("not supported on Jetson" in p for p in problems)
    # an older record without a platform: the Jetson rule alone still refuses the hardware-compatible plan
    assert trt_api.engine_compatibility(_built(cc="8.6", hw="ampere_plus"), here)


@pytest.mark.parametrize("built,here,ok", [
    (X86_DGPU, X86_DGPU, True), (ORIN, ORIN, True), (SBSA, ORIN, False), (X86_DGPU, SBSA, False),
    ({"os": "win32", "arch": "x86_64", "jetson": False}, X86_DGPU, False), (None, ORIN, True),
])
def test_plans_stay_on_their_platform(built, here, ok):
    record = dict(_built(), platform=built) if built else _built()
    assert (trt_api.engine_compatibility(record, dict(_here(), platform=here)) == []) is ok


def test_hardware_compatible_builds_are_refused_on_a_jetson():
    assert trt_api.hardware_level(TRT10, "10.3.0", "ampere_plus", "8.6", jetson=False).name == "AMPERE_PLUS"
    with pytest.raises(EdgesegError, match="not supported on Jetson.*JetPack"):
        trt_api.hardware_level(TRT10, "10.3.0", "ampere_plus", "8.7", jetson=True)
    assert trt_api.hardware_level(TRT10, "10.3.0", "none", "8.7", jetson=True) is None


def test_the_engine_record_names_its_platform_and_device(fake_backend, tmp_path, monkeypatch):
    import edgeseg.backends.trt_device as trt_device

    fake_backend((1, 3, 8, 8))
    info = build_engine(_write_onnx(tmp_path / "m.onnx"), tmp_path / "m.engine")
    assert info.platform == trt_device.platform_record() and info.device["platform"] == info.platform
    assert {"tensorrt", "cuda", "cudnn"} <= set(info.device) and info.device["tensorrt"] == "10.3.0"
    monkeypatch.setattr(trt_device, "platform_record", lambda *a, **k: dict(ORIN))
    with pytest.raises(EdgesegError, match="not supported on Jetson"):
        build_engine(tmp_path / "m.onnx", tmp_path / "m2.engine", hardware_compatible=True)


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
    assert isinstance(calibrator, trt.IInt8EntropyCalibrator2) and calibrator._base_initialized
    assert calibrator.get_batch(["input"]) is None  # no GPU calibration pass
    assert calibrator.read_calibration_cache() == _cache(version=trt.__version__)  # header for this TensorRT
    assert calibrator.get_batch_size() == 1


def test_cache_calibrator_rewrites_the_header_for_the_running_tensorrt():
    """A bundle cache written for 8.6.1 is replayed on 10.3 with 10.3's header (TRT-100300-...): the old
    code handed TensorRT the 8.6.1 header, which 10.3 ignores and then calibrates afresh with no data."""
    replayed = trt_api.cache_calibrator(TRT10, 10, _cache("minmax", "8.6.1")).read_calibration_cache()
    assert replayed.split(b"\n")[0] == b"TRT-100300-MinMaxCalibration"
    assert replayed.split(b"\n", 1)[1] == _cache("minmax", "8.6.1").split(b"\n", 1)[1]  # the table is kept


def test_cache_calibrator_follows_the_header_algorithm():
    calibrator = trt_api.cache_calibrator(TRT10, 10, _cache("minmax"))
    assert isinstance(calibrator, TRT10.IInt8MinMaxCalibrator)
    with pytest.raises(EdgesegError, match="DLA needs an EntropyCalibration2 cache"):
        trt_api.cache_calibrator(TRT10, 10, _cache("minmax"), dla=True)


def test_cache_calibrator_refuses_11_and_bad_headers():
    with pytest.raises(EdgesegError, match="TensorRT 11.1.0 has no implicit INT8.*Q/DQ model"):
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
    import edgeseg.backends.trt_env as backend

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
    from edgeseg.backends.trt_env import runtime_info

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
# Exercises build_engine and TensorRTRunner call by call against Strict stand-ins of the bindings
# (tests/_trt_fakes.py): each exposes only what its release's surface lists, so these tests also
# prove the code touches no TensorRT name the release lacks.

@pytest.fixture
def fake_backend(monkeypatch, tmp_path):
    """Install fakes for TensorRT (10.3 by default) and pycuda; returns install(input_shape, profile,
    version, **fake options) -> (trt, cuda)."""
    import edgeseg.backends.trt_env as backend

    def install(input_shape, profile=None, version="10.3.0", **options):
        memory = Memory()
        trt, cuda = fake_trt_runtime(version, memory, input_shape, profile, **options), fake_pycuda(memory)
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
    assert trt.config._flags == ["FP16", "VERSION_COMPATIBLE"] and trt.config._profiles == []  # static: no profile
    assert ("network_flags", 0) in trt.calls and ("workspace", 2 << 30) in trt.calls
    assert (info.trt_version, info.compute_capability, info.precision, info.strongly_typed) == ("10.3.0", "8.7",
                                                                                             "fp16", False)
    assert info.profile == {"min": [1, 3, 8, 12], "opt": [1, 3, 8, 12], "max": [1, 3, 8, 12]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.engine", "m.onnx", "t.cache"]  # no temp files left


def test_build_glue_dynamic_and_implicit_int8(fake_backend, tmp_path):
    trt, _ = fake_backend((-1, 3, -1, -1))
    (tmp_path / "calib.cache").write_bytes(_cache(version="8.6.1"))
    info = build_engine(_write_onnx(tmp_path / "m.onnx"), tmp_path / "m.engine", precision="int8", bounds=BOUNDS,
                        calibration_cache=tmp_path / "calib.cache")
    assert info.implicit_int8 and trt.config._flags == ["FP16", "INT8"]
    assert (info.typing, info.precision_mix) == ("weak", "int8 (calibration cache) + fp16 (builder flags)")
    assert ("profile", ("input", (1, 3, 32, 48), (2, 3, 64, 96), (4, 3, 128, 192))) in trt.calls
    assert trt.config.int8_calibrator.read_calibration_cache() == _cache(version="10.3.0")  # retargeted
    # the calibration profile is its own min = opt = max profile at the opt shape (sampleEngines.cpp),
    # not the dynamic build profile
    calibration = trt.config._calibration_profile
    assert calibration is not trt.config._profiles[0]
    assert calibration._shape == ("input", (2, 3, 64, 96), (2, 3, 64, 96), (2, 3, 64, 96))


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
    assert cuda.detached and [c for c in trt.calls if c[0] == "execute"][-1] == ("execute", (1, 3, 4, 6), 77)


def test_runner_glue_corrupt_plan(fake_backend, tmp_path):
    _, cuda = fake_backend((1, 3, 8, 8))
    (tmp_path / "m.engine").write_bytes(b"garbage")
    with pytest.raises(EdgesegError, match=r"cannot load .*rebuild it with `edgeseg build --from"):
        TensorRTRunner(tmp_path / "m.engine").activate()
    assert cuda.stack == [] and cuda.detached


# ----------------------------------------------------------------------------- timing cache, DLA, VC plans, logging

def test_corrupt_timing_cache_is_rebuilt_and_kept_out_of_the_error(fake_backend, tmp_path):
    """A foreign/corrupt timing cache: create_timing_cache returns None after TensorRT logs a serialization
    assertion. The old code passed None to set_timing_cache (TypeError) and would have reported the
    assertion as the build error."""
    fake_backend((1, 3, 8, 12))
    (tmp_path / "t.cache").write_bytes(b"CORRUPT")
    build_engine(_write_onnx(tmp_path / "m.onnx"), tmp_path / "m.engine", timing_cache_path=tmp_path / "t.cache")
    assert (tmp_path / "t.cache").read_bytes() == b"TIMING"  # a new cache, written back
    fake_backend((1, 3, 8, 12), build_fails=True)
    (tmp_path / "t.cache").write_bytes(b"CORRUPT")
    with pytest.raises(EdgesegError, match="out of memory building tactic") as e:
        build_engine(tmp_path / "m.onnx", tmp_path / "m2.engine", timing_cache_path=tmp_path / "t.cache")
    assert "serialization" not in str(e.value)


def test_dla_core_on_a_device_without_dla_is_refused_before_parsing(fake_backend, tmp_path):
    trt, _ = fake_backend((1, 3, 8, 12), dla_cores=0)
    with pytest.raises(EdgesegError, match="this device has no DLA"):
        build_engine(_write_onnx(tmp_path / "m.onnx"), tmp_path / "m.engine", precision="fp16", dla_core=0)
    assert not [c for c in trt.calls if c[0] == "parse"]


def test_dla_build_sets_device_type_and_core(fake_backend, tmp_path):
    trt, _ = fake_backend((1, 3, 8, 12), dla_cores=2)
    info = build_engine(_write_onnx(tmp_path / "m.onnx"), tmp_path / "m.engine", precision="fp16", dla_core=1)
    assert trt.config.DLA_core == 1 and trt.config.default_device_type == trt.DeviceType.DLA
    assert info.dla_core == 1 and "GPU_FALLBACK" in trt.config._flags


def _vc_record(tmp_path, **extra):
    import json

    record = dict(_built(vc=True), file="model.engine", **extra)
    (tmp_path / "manifest.json").write_text(json.dumps({"engine": record}))


def test_version_compatible_plan_loads_without_engine_info(fake_backend, tmp_path):
    """TensorRT refuses a version-compatible plan unless engine_host_code_allowed is set; the old runner set it
    only from engine_info. Now: from the bundle manifest next to the plan, or version_compatible=True."""
    trt, _ = fake_backend((1, 3, 8, 8), host_code_needed=True)
    (tmp_path / "model.engine").write_bytes(b"PLAN")
    with pytest.raises(EdgesegError, match="version_compatible=True"):
        TensorRTRunner(tmp_path / "model.engine").activate()
    with TensorRTRunner(tmp_path / "model.engine", version_compatible=True) as runner:
        assert runner.infer(_x((1, 3, 8, 8))).shape == (1, 4, 8, 8)
    _vc_record(tmp_path)
    with TensorRTRunner(tmp_path / "model.engine") as runner:  # the manifest's record says so
        assert runner.engine_info["version_compatible"] is True
        assert runner._runtime.engine_host_code_allowed is True


def test_each_tensorrt_warning_reaches_the_log_once(caplog):
    import logging

    from edgeseg.backends.trt_env import logger as process_logger

    trt = fake_trt("10.3.0")
    logger = process_logger(trt)
    with caplog.at_level(logging.WARNING, logger="edgeseg.backends.trt_env"):
        for _ in range(50):  # what TensorRT does per enqueueV3 on the default stream
            logger.log(trt.ILogger.Severity.WARNING, "Using default stream in enqueueV3() may lead to performance issues")
        logger.log(trt.ILogger.Severity.WARNING, "another warning")
    assert len(caplog.records) == 2 and logger.warnings[
        "Using default stream in enqueueV3() may lead to performance issues"] == 50


@pytest.mark.parametrize("handle,default", [(0, True), (1, True), (2, True), (94251234, False)])
def test_default_stream_handles(handle, default):
    assert trt_api.is_default_stream(handle) is default


class _FakeTorchStream:
    def __init__(self, handle):
        self.cuda_stream, self.waited = handle, []

    def wait_stream(self, other):
        self.waited.append(other)

    def synchronize(self):
        pass


class _FakeCudaTensor:
    is_cuda, dtype = True, "torch.float32"

    def __init__(self, shape, offset=0):
        self.shape, self.device, self.offset = tuple(shape), types.SimpleNamespace(index=0), offset

    def contiguous(self):
        return self

    def clone(self):
        return _FakeCudaTensor(self.shape)  # a new allocation: PyTorch's CUDA blocks are 512-byte aligned

    def data_ptr(self):
        return (1 << 40) + self.offset  # not host memory of the fake pycuda: the fake engine leaves it alone


# ----------------------------------------------------------------------------- one logger per process (issue 25.1)

def test_a_second_runners_errors_reach_edgeseg(fake_backend, tmp_path):
    """TensorRT keeps the first logger it is given and sends every later object's messages there. The old
    runner made a logger per runner: the second runner's deserialization error went to the first runner's
    logger and edgeseg said "no error logged"."""
    fake_backend((1, 3, 8, 8))
    (tmp_path / "good.engine").write_bytes(b"PLAN")
    (tmp_path / "bad.engine").write_bytes(b"garbage")
    with TensorRTRunner(tmp_path / "good.engine"):
        with pytest.raises(EdgesegError, match=r"\(cannot deserialize the plan\)"):
            TensorRTRunner(tmp_path / "bad.engine").activate()


def test_builder_parser_and_runners_hand_tensorrt_one_logger(fake_backend, tmp_path):
    from edgeseg.backends import trt_env

    trt, _ = fake_backend((1, 3, 8, 8))
    build_engine(_write_onnx(tmp_path / "m.onnx"), tmp_path / "m.engine")
    with TensorRTRunner(tmp_path / "m.engine"), TensorRTRunner(tmp_path / "m.engine"):
        pass
    assert trt._logger is trt_env.logger(trt)
    assert not any("single logger pointer" in w for w in trt._logger.warnings)  # no second logger was offered


def test_the_process_logger_reads_errors_since_a_mark_and_prefers_this_thread():
    import threading

    from edgeseg.backends.trt_env import logger as process_logger

    trt = fake_trt("10.3.0")
    logger = process_logger(trt)
    assert process_logger(trt) is logger
    logger.log(trt.ILogger.Severity.ERROR, "old failure")
    mark = logger.mark()
    assert logger.last_error(mark) == "no error logged" and logger.last_error() == "old failure"
    other = threading.Thread(target=lambda: logger.log(trt.ILogger.Severity.ERROR, "another thread's error"))
    other.start()
    other.join()
    assert logger.last_error(mark) == "another thread's error"  # none of this thread's: any thread's
    logger.log(trt.ILogger.Severity.INTERNAL_ERROR, "this\nthread's error")
    assert logger.last_error(mark) == "this thread's error"
    assert logger.forget_since(mark) == ["another thread's error", "this thread's error"]
    assert logger.last_error(mark) == "no error logged"


# ----------------------------------------------------------------------------- set_tensor_address (issue 25.2)

def test_set_tensor_address_result_is_checked(fake_backend, tmp_path, monkeypatch):
    """The binding returns False (and logs) when TensorRT refuses an address; the old runner ignored it
    and ran the engine with the previous (or no) address."""
    trt, _ = fake_backend((1, 3, 8, 8))
    (tmp_path / "m.engine").write_bytes(b"PLAN")
    with TensorRTRunner(tmp_path / "m.engine") as runner:
        context = type(runner._context)

        def refuse(self, name, ptr):
            trt._logger.log(trt.ILogger.Severity.ERROR, f"setTensorAddress: no tensor {name}")
            return False

        monkeypatch.setattr(context, "set_tensor_address", refuse)
        with pytest.raises(EdgesegError, match=r"refused the address of tensor 'input' \(setTensorAddress: no tensor"):
            runner.infer(_x((1, 3, 8, 8)))
    assert not [c for c in trt.calls if c[0] == "execute"]


@pytest.mark.parametrize("h,w,aligned", [(8, 8, True), (7, 9, False), (64, 96, True), (30, 50, False)])
def test_a_batch_slice_is_aligned_only_when_hw_is_a_multiple_of_64(h, w, aligned):
    """x[1:] of a float32 (N, 3, H, W) tensor starts 3 * H * W * 4 bytes in: 256-byte aligned iff 64 | H * W."""
    import torch

    x = torch.empty((2, 3, h, w))
    offset = x[1:].data_ptr() - x.data_ptr()
    assert offset == 12 * h * w and trt_api.is_aligned(offset) is aligned is ((h * w) % 64 == 0)


def test_an_unaligned_torch_slice_is_copied_to_an_aligned_buffer(fake_backend, tmp_path, monkeypatch):
    """A batch slice of a 7x9 image batch is 756 bytes off a 256-byte boundary; TensorRT requires 256-byte
    aligned I/O addresses (NvInferRuntime.h, setTensorAddress). The old runner passed it as is."""
    import torch

    trt, _ = fake_backend((1, 3, 7, 9))
    (tmp_path / "m.engine").write_bytes(b"PLAN")
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: _FakeTorchStream(4242))
    monkeypatch.setattr(torch, "empty", lambda shape, dtype=None, device=None: _FakeCudaTensor(shape))
    with TensorRTRunner(tmp_path / "m.engine") as runner:
        runner.infer(_FakeCudaTensor((1, 3, 7, 9), offset=12 * 7 * 9))
        assert all(trt_api.is_aligned(a) for a in runner._context._addresses.values())
    assert [c[0] for c in trt.calls].count("execute") == 1


@pytest.mark.parametrize("caller_handle,expected", [(0, 555), (4242, 4242)])
def test_torch_tensors_never_run_on_the_default_stream(fake_backend, tmp_path, monkeypatch, caller_handle, expected):
    """The old code passed torch.cuda.current_stream() (the legacy default stream unless the caller set
    one): TensorRT warned on every call and synchronised. Now the runner's own stream, ordered after the
    caller's, unless the caller already runs on a non-default stream."""
    import torch

    trt, _ = fake_backend((1, 3, 8, 8))
    (tmp_path / "m.engine").write_bytes(b"PLAN")
    caller, made = _FakeTorchStream(caller_handle), []

    def new_stream(device=None):
        made.append(_FakeTorchStream(555))
        return made[-1]

    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: caller)
    monkeypatch.setattr(torch.cuda, "Stream", new_stream)
    monkeypatch.setattr(torch, "empty", lambda shape, dtype=None, device=None: _FakeCudaTensor(shape))
    with TensorRTRunner(tmp_path / "m.engine") as runner:
        for _ in range(3):
            runner.infer(_FakeCudaTensor((1, 3, 8, 8)))
    handles = [c[2] for c in trt.calls if c[0] == "execute"]
    assert handles == [expected] * 3
    assert len(made) == (1 if caller_handle == 0 else 0)  # one stream per runner, reused
    if made:
        assert made[0].waited == [caller] * 3  # ordered after the caller's pending work


# ----------------------------------------------------------------------------- against the real binding surfaces

def _qdq_onnx(path: Path, fp16_scales: bool) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    dtype = np.float16 if fp16_scales else np.float32
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3, 8, 8]) for n in ("input", "logits")]
    inits = [numpy_helper.from_array(np.array(0.05, dtype), "s"), numpy_helper.from_array(np.array(0, np.int8), "z")]
    nodes = [helper.make_node("QuantizeLinear", ["input", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["logits"])]
    model = helper.make_model(helper.make_graph(nodes, "g", io[:1], io[1:], inits),
                              opset_imports=[helper.make_opsetid("", 19 if fp16_scales else 17)])
    onnx.save(model, path)
    return path


def _fp16_onnx(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3, 8, 8]) for n in ("input", "logits")]
    nodes = [helper.make_node("Cast", ["input"], ["h"], to=TensorProto.FLOAT16),
             helper.make_node("Cast", ["h"], ["logits"], to=TensorProto.FLOAT)]
    onnx.save(_graph(nodes, io[:1], io[1:]), path)
    return path


# (precision, ONNX kind) each release builds, and the builder flags and typing it must use
_PATHS = {
    "8.6.1": [("fp32", "fp32", set(), "weak"), ("fp16", "fp32", {"FP16"}, "weak"),
              ("int8", "qdq32", {"FP16", "INT8"}, "weak"), ("int8", "cache", {"FP16", "INT8"}, "weak")],
    "10.3.0": [("fp32", "fp32", set(), "weak"), ("fp16", "fp32", {"FP16"}, "weak"), ("fp16", "fp16", set(), "strong"),
               ("int8", "qdq32", {"FP16", "INT8"}, "weak"), ("int8", "qdq16", set(), "strong"),
               ("int8", "cache", {"FP16", "INT8"}, "weak")],
    "10.16.1": [("fp16", "fp32", {"FP16"}, "weak"), ("int8", "qdq32", {"FP16", "INT8"}, "weak"),
                ("int8", "qdq16", set(), "strong"), ("int8", "cache", {"FP16", "INT8"}, "weak")],
    "11.4.0": [("fp32", "fp32", set(), "strong"), ("fp16", "fp16", set(), "strong"),
               ("int8", "qdq16", set(), "strong")],
}


@pytest.mark.parametrize("release,precision,kind,flags,typing",
                         [(r, *p) for r, paths in _PATHS.items() for p in paths])
def test_every_build_and_run_path_uses_only_names_of_its_release(fake_backend, tmp_path, release, precision, kind,
                                                                 flags, typing):
    """build_engine + TensorRTRunner on each release's path, against stand-ins that expose only that
    release's surface (tools/trt_surface/<release>.txt): a name the release lacks raises AttributeError."""
    trt, _ = fake_backend((-1, 3, -1, -1), {"min": (1, 3, 8, 8), "opt": (1, 3, 8, 8), "max": (2, 3, 8, 8)},
                          version=release)
    onnx_path = {"fp32": _write_onnx, "cache": _write_onnx, "fp16": _fp16_onnx,
                 "qdq32": lambda p: _qdq_onnx(p, False), "qdq16": lambda p: _qdq_onnx(p, True)}[kind](tmp_path / "m.onnx")
    cache = None
    if kind == "cache":
        cache = tmp_path / "calib.cache"
        cache.write_bytes(_cache(version="8.6.1"))
    bounds = {"min": [1, 3, 8, 8], "opt": [1, 3, 8, 8], "max": [2, 3, 8, 8]}
    info = build_engine(onnx_path, tmp_path / "m.engine", precision=precision, bounds=bounds, calibration_cache=cache,
                        timing_cache_path=tmp_path / "t.cache", version_compatible=True, hardware_compatible=True)
    assert set(trt.config._flags) == flags | {"VERSION_COMPATIBLE"} and info.typing == typing
    with TensorRTRunner(tmp_path / "m.engine", engine_info=dict(info.to_dict(), gpu="Orin")) as runner:
        assert runner.infer(_x((2, 3, 8, 8))).shape == (2, 4, 8, 8)


_PATHS_85 = [("fp32", "fp32", set()), ("fp16", "fp32", {"FP16"}), ("fp16", "fp16", {"FP16"}),
             ("int8", "qdq32", {"FP16", "INT8"}), ("int8", "cache", {"FP16", "INT8"})]


@pytest.mark.parametrize("precision,kind,flags", _PATHS_85)
def test_jetpack_51_tensorrt_85_builds_and_runs_the_default_paths(fake_backend, tmp_path, precision, kind, flags):
    """JetPack 5.1 (Xavier, many Orin boards) ships TensorRT 8.5.2; the old code refused to build there. Against
    the 8.5.2 surface (tools/trt_surface/8.5.2.txt) the default build (no portability options) and the runner
    touch only names 8.5 has."""
    trt, _ = fake_backend((-1, 3, -1, -1), {"min": (1, 3, 8, 8), "opt": (1, 3, 8, 8), "max": (2, 3, 8, 8)},
                          version="8.5.2.2")
    onnx_path = {"fp32": _write_onnx, "cache": _write_onnx, "fp16": _fp16_onnx,
                 "qdq32": lambda p: _qdq_onnx(p, False)}[kind](tmp_path / "m.onnx")
    cache = None
    if kind == "cache":
        cache = tmp_path / "calib.cache"
        cache.write_bytes(_cache(version="8.6.1"))
    bounds = {"min": [1, 3, 8, 8], "opt": [1, 3, 8, 8], "max": [2, 3, 8, 8]}
    info = build_engine(onnx_path, tmp_path / "m.engine", precision=precision, bounds=bounds, calibration_cache=cache,
                        timing_cache_path=tmp_path / "t.cache")
    assert set(trt.config._flags) == flags and info.typing == "weak" and info.trt_version == "8.5.2.2"
    if cache:
        assert trt.config.int8_calibrator.read_calibration_cache().startswith(b"TRT-8502-EntropyCalibration2\n")
    with TensorRTRunner(tmp_path / "m.engine", engine_info=dict(info.to_dict(), gpu="Orin")) as runner:
        assert runner.infer(_x((2, 3, 8, 8))).shape == (2, 4, 8, 8)


def test_what_85_lacks_is_refused_in_one_line(fake_backend, tmp_path):
    fake_backend((1, 3, 8, 8), version="8.5.2.2")
    onnx_path = _write_onnx(tmp_path / "m.onnx")
    for options, match in [({"version_compatible": True}, "TensorRT 8.5.2.2 has no version-compatible plans"),
                           ({"hardware_compatible": True}, "hardware-compatible plans need TensorRT 8.6")]:
        with pytest.raises(EdgesegError, match=match) as e:
            build_engine(onnx_path, tmp_path / "m.engine", **options)
        assert "\n" not in str(e.value)
    (tmp_path / "model.engine").write_bytes(b"PLAN")
    with pytest.raises(EdgesegError, match="no version-compatible plans"):
        TensorRTRunner(tmp_path / "model.engine", version_compatible=True).activate()
    # parser node names: 8.5's ParserError has no node_name(); the graph's names stand in (parser_errors)
    assert not load_surface("8.5.2").has("ParserError", "node_name")


@pytest.mark.parametrize("release", RELEASES)
def test_the_fakes_offer_nothing_the_real_surface_lacks(release):
    trt = fake_trt_runtime(release, Memory(), (1, 3, 8, 8))
    surface = load_surface(release)
    assert offered_names(trt) - surface.names == set()
    # and what a Strict stand-in hides is really absent: 11.x has no int8_calibrator / calibration profile
    if release.startswith("11"):
        config = trt.Builder(None).create_builder_config()
        for name in ("int8_calibrator", "set_calibration_profile"):
            with pytest.raises(AttributeError):
                getattr(config, name)


def _code_trt_names() -> set[str]:
    """Every ``trt.X`` / ``trt.X.Y`` / ``trt.X.Y.Z`` and ``flag.M`` / ``creation.M`` the TensorRT code spells out."""
    import re

    root = Path(trt_api.__file__).resolve().parents[1]
    files = [*sorted((root / "backends").glob("trt_*.py")), *sorted((root / "doctor").glob("*.py"))]
    names = set()
    for path in files:
        text = path.read_text()
        names |= {m.group(1) for m in re.finditer(r"\btrt\.([A-Z]\w*(?:\.[A-Za-z_]\w*)*)", text)}
        names |= {f"BuilderFlag.{m}" for m in re.findall(r"\bflag\.([A-Z][A-Z0-9_]+)", text)}
        names |= {f"NetworkDefinitionCreationFlag.{m}" for m in re.findall(r"\bcreation\.([A-Z][A-Z0-9_]+)", text)}
    return {n for n in names if n != "__version__" and not n.startswith("ILogger.__init__")}


def test_every_tensorrt_name_in_the_code_exists_in_a_real_release():
    """Static check over the source: no TensorRT name the code spells is absent from every release (a typo
    or a name no binding ever had); the per-release paths are checked by the glue test above."""
    union = set().union(*(load_surface(r).names for r in RELEASES))
    # trt.X.Y.method() chains end in methods of objects, not binding names: keep the binding part
    missing = sorted(n for n in _code_trt_names() if n not in union and n.rsplit(".", 1)[0] not in union)
    assert missing == [], missing


@pytest.mark.parametrize("release", RELEASES)
def test_numpy_dtypes_match_the_releases_datatype(release):
    """DataType members of each release (from its headers); every one edgeseg maps is a real member
    somewhere, and BOOL maps to np.bool_ as the wheels' own nptype does (np.bool was never used)."""
    members = load_surface(release).values["DataType"]
    for name in members:
        if name in trt_api._NUMPY_TYPES:
            assert trt_api.numpy_dtype(types.SimpleNamespace(name=name)).name == trt_api._NUMPY_TYPES[name]
    assert trt_api.numpy_dtype(types.SimpleNamespace(name="BOOL")) == np.dtype(np.bool_)
    union = set().union(*(load_surface(r).values["DataType"] for r in RELEASES))
    assert set(trt_api._NUMPY_TYPES) <= union


# ----------------------------------------------------------------------------- engine inspector (issue 25.9)

# The shape of IEngineInspector.get_engine_information(JSON) with ProfilingVerbosity.DETAILED, as the graph.json
# files of NVIDIA's trt-engine-explorer examples have it (release/8.5: fused "ConvActPool" layers with
# "ConvWeights"; release/10.16: "CaskConvolution" / "CaskDeconvolutionV2" layers with "Weights", Q/DQ reformats)
INSPECTOR_JSON = json.dumps({"Layers": [
    {"Name": "input + /stem/QuantizeLinear", "LayerType": "Reformat", "ParameterType": "Reformat", "Origin": "QDQ",
     "Inputs": [{"Name": "input", "Location": "Device", "Dimensions": [1, 3, 64, 96],
                 "Format/Datatype": "Row major linear FP32"}],
     "Outputs": [{"Name": "q", "Location": "Device", "Dimensions": [1, 3, 64, 96],
                  "Format/Datatype": "Four wide channel vectorized row major Int8 format"}]},
    {"Name": "/stem/Conv + /stem/Relu + /pool/MaxPool", "LayerType": "ConvActPool", "ParameterType": "ConvActPool",
     "ConvWeights": {"Type": "Int8", "Count": 432},
     "Inputs": [{"Name": "q", "Format/Datatype": "Four wide channel vectorized row major Int8 format"}]},
    {"Name": "/up/ConvTranspose", "LayerType": "CaskDeconvolutionV2", "ParameterType": "Convolution",
     "Weights": {"Type": "Int8", "Count": 2048},
     "Inputs": [{"Name": "d", "Format/Datatype": "Thirty-two wide channel vectorized row major Int8 format"}]},
    {"Name": "/head/Conv", "LayerType": "CaskConvolution", "ParameterType": "Convolution",
     "Weights": {"Type": "Half", "Count": 64},
     "Inputs": [{"Name": "f", "Format/Datatype": "Channel major FP16 format where channel % 8 == 0"}]},
    {"Name": "/Resize", "LayerType": "Resize", "ParameterType": "Resize",
     "Inputs": [{"Name": "y", "Format/Datatype": "Half"}]},
], "Bindings": ["input", "logits"]})


def test_engine_layers_read_each_layers_precision():
    layers = trt_api.engine_layers(INSPECTOR_JSON)
    assert [(l.precision, l.convolution, l.transposed, l.int8) for l in layers] == [
        ("fp32", False, False, False), ("int8", True, False, True), ("int8", True, True, True),
        ("fp16", True, False, False), ("fp16", False, False, False)]
    with pytest.raises(EdgesegError, match="layer names only.*DETAILED"):
        trt_api.engine_layers(json.dumps({"Layers": ["a", "b"], "Bindings": []}))  # LAYER_NAMES_ONLY


def test_a_detailed_build_and_the_runner_read_the_inspector(fake_backend, tmp_path):
    trt, _ = fake_backend((1, 3, 8, 8), layers_json=INSPECTOR_JSON)
    build_engine(_write_onnx(tmp_path / "m.onnx"), tmp_path / "m.engine", detailed_profile=True)
    assert trt.config.profiling_verbosity == trt.ProfilingVerbosity.DETAILED
    with TensorRTRunner(tmp_path / "m.engine") as runner:
        assert sum(layer.int8 for layer in runner.engine_layers()) == 2
