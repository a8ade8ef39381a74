"""tools/trt_surface.py (offline parts) and the committed surface files it wrote. Regenerating the files
needs PyPI and NVIDIA/TensorRT's sources, so it never runs here; these tests read what is committed."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from _trt_fakes import RELEASES, SURFACE_DIR, load_surface

TOOL = Path(__file__).resolve().parents[2] / "tools" / "trt_surface.py"


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("trt_surface_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pybind_registrations_are_parsed(tool):
    src = '''
    py::class_<ILogger, PyLogger> baseLoggerBinding{m, "ILogger", ILoggerDoc::descr, py::module_local()};
    baseLoggerBinding.def(py::init<>()).def("log", &ILogger::log, "severity"_a, "msg"_a, ILoggerDoc::log);
    py::enum_<ILogger::Severity>(baseLoggerBinding, "Severity", py::arithmetic())
        .value("ERROR", ILogger::Severity::kERROR, SeverityDoc::error); // a comment with .def("nope"
    py::class_<IBuilderConfig>(m, "IBuilderConfig", py::module_local())
        .def_property("DLA_core", &IBuilderConfig::getDLACore, &IBuilderConfig::setDLACore)
        .def("set_flag", [](IBuilderConfig& self, BuilderFlag f) { self.setFlag(f); }, "flag"_a);
    m.def("get_nv_onnx_parser_version", &getNvOnnxParserVersion);
    '''
    classes = tool.parse_bindings(src)
    assert classes["ILogger"]["log"] == ("def", None)
    assert classes["ILogger.Severity"]["ERROR"] == ("value", "ILogger::Severity::kERROR")
    assert classes["IBuilderConfig"]["DLA_core"][0] == "property" and "set_flag" in classes["IBuilderConfig"]
    assert "nope" not in classes["ILogger.Severity"] and "get_nv_onnx_parser_version" in classes["<module>"]


def test_header_enums_and_version_formula(tool):
    header = '''
    enum class BuilderFlag : int32_t
    {
        //! comment
        kFP16 TRT_DEPRECATED_ENUM = 0,
        kINT8 = 1,
        kDEBUG,
        kSTRIP_PLAN = 1 << 4,
        kWEIGHTLESS TRT_DEPRECATED_ENUM = kSTRIP_PLAN,
    };
    #define NV_TENSORRT_VERSION_INT(major, minor, patch) ((major) *10000L + (minor) *100L + (patch) *1L)
    '''
    assert tool.parse_enums(header)["BuilderFlag"] == {"kFP16": 0, "kINT8": 1, "kDEBUG": 2, "kSTRIP_PLAN": 16,
                                                       "kWEIGHTLESS": 16}
    assert tool.version_formula(header) == "major*10000+minor*100+patch"
    old = "static constexpr int32_t kNV_TENSORRT_VERSION_IMPL\n = (NV_TENSORRT_MAJOR * 1000) + (NV_TENSORRT_MINOR * 100)"
    assert tool.version_formula(old) == "major*1000+minor*100+patch"


def test_binary_names_allow_merged_string_tails(tool):
    names = tool.binary_names(b"\x00ILogger\x00FP16\x00")
    assert "Logger" in names and "ILogger" in names and "FP16" in names and "FP8" not in names


@pytest.mark.parametrize("release", RELEASES)
def test_committed_surfaces_say_how_they_were_made(release):
    surface = load_surface(release)
    assert surface.header["made by"].startswith("python tools/trt_surface.py")
    assert "sha256" in surface.header["wheel"] and release.split(".")[0] in surface.header["wheel"]
    missing = next(v for k, v in surface.header.items() if k.endswith("but not in this binary"))
    assert missing == "none"  # every source registration of interest is in the binary
    assert {"Builder", "IBuilderConfig", "Runtime", "ICudaEngine", "IExecutionContext", "OnnxParser"} <= surface.names


def test_what_changed_between_releases_is_what_nvidia_changed():
    """Spot checks of the surfaces against NVIDIA's release notes: calibrators gone in 11, STRIP_PLAN kept in 11
    (the old fake removed it), node_name on parser errors from 10.x, DataType.INT64 from 10.x."""
    s85, s86, s103, s1016, s114 = (load_surface(r) for r in RELEASES)
    assert all(s.has("IInt8EntropyCalibrator2") for s in (s86, s103, s1016)) and not s114.has("IInt8EntropyCalibrator2")
    assert s114.has("BuilderFlag", "STRIP_PLAN") and not s114.has("BuilderFlag", "FP16")
    assert not s114.has("BuilderFlag", "INT8") and s114.has("BuilderFlag", "VERSION_COMPATIBLE")
    assert s103.has("ParserError", "node_name") and not s86.has("ParserError", "node_name")
    assert s103.has("DataType", "INT64") and not s86.has("DataType", "INT64")
    assert not s114.has("IBuilderConfig", "int8_calibrator") and s1016.has("IBuilderConfig", "set_calibration_profile")
    assert sorted(p.stem for p in SURFACE_DIR.glob("*.txt")) == sorted(RELEASES)


def test_the_85_surface_has_every_call_of_the_default_build_and_the_runner():
    """JetPack 5.1's TensorRT 8.5 (surface from the 8.5.2.2 wheel and release/8.5): the calls of the default build
    and of the runner exist; what 8.5 lacks (version- and hardware-compatible plans, parser node names, parser
    flags) is absent, so the code refuses it in one line or names nodes from the ONNX graph."""
    s85 = load_surface("8.5.2")
    assert s85.header["version code (NV_TENSORRT_VERSION, the calibration cache header)"].startswith(
        "major*1000+minor*100+patch (release/8.5 include/NvInferRuntimeCommon.h)")
    for name in ["Builder.create_network", "Builder.create_builder_config", "Builder.build_serialized_network",
                 "Builder.create_optimization_profile", "Builder.num_DLA_cores", "IBuilderConfig.set_memory_pool_limit",
                 "IBuilderConfig.create_timing_cache", "IBuilderConfig.set_timing_cache", "IBuilderConfig.set_flag",
                 "IBuilderConfig.add_optimization_profile", "IBuilderConfig.set_calibration_profile",
                 "IBuilderConfig.int8_calibrator", "IBuilderConfig.profiling_verbosity",
                 "IOptimizationProfile.set_shape",
                 "OnnxParser.parse_from_file", "OnnxParser.num_errors", "OnnxParser.get_error", "ParserError.node",
                 "Runtime.deserialize_cuda_engine", "Runtime.DLA_core", "ICudaEngine.num_io_tensors",
                 "ICudaEngine.get_tensor_name", "ICudaEngine.get_tensor_mode", "ICudaEngine.get_tensor_dtype",
                 "ICudaEngine.get_tensor_shape", "ICudaEngine.get_tensor_profile_shape",
                 "ICudaEngine.create_execution_context", "ICudaEngine.create_engine_inspector",
                 "EngineInspector.get_engine_information", "IExecutionContext.set_input_shape",
                 "IExecutionContext.get_tensor_shape", "IExecutionContext.set_tensor_address",
                 "IExecutionContext.execute_async_v3", "BuilderFlag.FP16", "BuilderFlag.INT8",
                 "BuilderFlag.GPU_FALLBACK", "NetworkDefinitionCreationFlag.EXPLICIT_BATCH", "MemoryPoolType.WORKSPACE",
                 "ProfilingVerbosity.DETAILED", "LayerInformationFormat.JSON", "IInt8EntropyCalibrator2"]:
        assert name in s85.names, name
    for name in ["BuilderFlag.VERSION_COMPATIBLE", "HardwareCompatibilityLevel", "Runtime.engine_host_code_allowed",
                 "ParserError.node_name", "OnnxParserFlag"]:
        assert name not in s85.names and name in load_surface("8.6.1").names or name == "ParserError.node_name", name
