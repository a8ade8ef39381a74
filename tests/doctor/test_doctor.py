"""`edgeseg doctor`: its CPU-only run here (every TensorRT check SKIPPED with the reason and the fix,
every CPU check PASS), its failure path (exit 1), and, on a GPU with TensorRT, the full run."""
from __future__ import annotations

import importlib.util
import inspect
import json
import types
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeseg.cli import main
from edgeseg.doctor import FAIL, PASS, SKIPPED, run_doctor
from edgeseg.doctor import engines
from edgeseg.doctor.environment import Environment
from edgeseg.doctor.report import Report

CPU_CHECKS = ["tiny model: train, export ONNX (opset 17, dynamic shapes)", "FP16 ONNX on ONNX Runtime CPU",
              "INT8 Q/DQ (trt layout) on ONNX Runtime CPU", "INT8 + FP16 mixed Q/DQ (opset 19) on ONNX Runtime CPU",
              "calibration cache header"]
TRT_CHECKS = ["TensorRT FP32 engine", "TensorRT FP16 engine", "TensorRT INT8 engine (Q/DQ)",
              "TensorRT INT8 engine (implicit, edgeseg cache)"]
HAS_TRT = importlib.util.find_spec("tensorrt") is not None


@pytest.fixture(scope="module")
def cpu_report(tmp_path_factory):
    if HAS_TRT:
        pytest.skip("TensorRT is installed: the GPU test below covers the full run")
    return run_doctor(tmp_path_factory.mktemp("doctor"))


def test_cpu_only_run_checks_the_cpu_paths_and_says_why_it_skips_the_rest(cpu_report):
    rows = {c.name: c for c in cpu_report.checks}
    for name in ["Python", "PyTorch / CUDA", "ONNX Runtime", *CPU_CHECKS]:
        assert rows[name].status == PASS, rows[name]
    assert "CPUExecutionProvider" in rows["ONNX Runtime"].detail
    assert rows["calibration cache header"].detail.startswith("TRT-100300-EntropyCalibration2")
    for name in ["TensorRT", *TRT_CHECKS]:
        assert rows[name].status == SKIPPED and rows[name].detail and "edgeseg[trt]" in rows[name].fix, rows[name]
    assert rows["JetPack"].status == SKIPPED and "nv_tegra_release" in rows["JetPack"].detail
    assert not cpu_report.failed and all(c.seconds >= 0 for c in cpu_report.checks)
    # the tiny model's reference map has every class, so agreement means something
    assert "class shares" in rows[CPU_CHECKS[0]].detail


def test_agreement_counts_pixels():
    a = np.zeros((1, 2, 2, 2), np.float32)
    b = a.copy()
    a[0, 1, 0, 0] = 1  # one of four pixels changes class
    assert engines.agreement(a, b) == 75.0


def test_a_failing_check_fails_the_command(monkeypatch, tmp_path):
    """A path that produces wrong class maps is a FAIL row, and the command exits 1 (not a traceback)."""
    real = engines.agreement
    monkeypatch.setattr(engines, "agreement", lambda a, b: real(a, b[:, ::-1]) if a.shape == b.shape else 0.0)
    monkeypatch.setattr(engines, "TRAIN_STEPS", 5)
    res = CliRunner().invoke(main, ["doctor", "--json", "--keep", str(tmp_path / "keep")])
    assert res.exit_code == 1, res.output
    report = json.loads(res.output.strip().splitlines()[-1])
    failed = [c for c in report["checks"] if c["status"] == FAIL]
    assert failed and all(c["detail"] and c["fix"] for c in failed) and report["failed"] == len(failed)
    assert (tmp_path / "keep" / "tiny.onnx").is_file()  # --keep keeps the files


def test_cli_table(monkeypatch):
    monkeypatch.setattr(engines, "TRAIN_STEPS", 5)  # the table, not the model, is under test
    monkeypatch.setattr(engines, "MIN_CLASS_SHARE", 0.0)
    res = CliRunner().invoke(main, ["doctor"])
    assert "edgeseg doctor" in res.output and "TensorRT FP32 engine" in res.output, res.output
    assert "edgeseg[trt]" in res.output or HAS_TRT  # rich markup must not eat the extra's brackets


# What a bundle's engine is built from per TensorRT version (tests/bundle/test_build.py: engine_source), in the
# tiny model's names
BUNDLE_SOURCES = {
    "8.5.2": {"fp32": "tiny.onnx", "fp16": "tiny.fp16.onnx", "int8": "tiny.int8.trt.onnx"},
    "8.6.2": {"fp32": "tiny.onnx", "fp16": "tiny.fp16.onnx", "int8": "tiny.int8.trt.onnx"},
    "10.3.0": {"fp32": "tiny.onnx", "fp16": "tiny.fp16.onnx", "int8": "tiny.int8.trt.onnx"},
    "11.1.0": {"fp32": "tiny.onnx", "fp16": "tiny.fp16.onnx", "int8": "tiny.int8.trt16.onnx"},
}


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    return engines.cpu_checks(Report(), tmp_path_factory.mktemp("tiny"))


@pytest.mark.parametrize("version", BUNDLE_SOURCES)
def test_each_engine_is_built_from_the_file_a_bundle_uses(monkeypatch, tiny_files, version):
    """Drift: the doctor built its FP16 engine from the FP32 ONNX with the FP16 builder flag on 8.6 / 10.x, a
    path no bundle takes (bundles build FP16 engines from the FP16 ONNX on every version). Now both ask
    trt_api.engine_source; the implicit-INT8 check (FP32 ONNX + cache) is nvinfer's path, not a bundle's."""
    real, built = engines._engine, {}

    def record(*args, **kwargs):
        call = inspect.signature(real).bind(*args, **kwargs).arguments
        if call.get("cache") is None:
            built[call["precision"]] = call["onnx_path"].name

    monkeypatch.setattr(engines, "_engine", record)
    env = Environment(trt=object(), trt_version=version, pycuda=True, gpu="test GPU")
    engines.tensorrt_checks(Report(), env, tiny_files, None)
    assert built == BUNDLE_SOURCES[version]


@pytest.mark.gpu
@pytest.mark.tensorrt
def test_full_run_on_a_gpu_with_tensorrt(tmp_path):
    """The device check: the same run a user starts with `edgeseg doctor`; every engine builds, runs and
    agrees with ONNX Runtime (or is SKIPPED for a stated reason, e.g. implicit INT8 on 11.x)."""
    report = run_doctor(tmp_path)
    rows = {c.name: c for c in report.checks}
    assert not report.failed, [c.to_dict() for c in report.failed]
    assert rows["TensorRT FP32 engine"].status == PASS and rows["TensorRT INT8 engine (Q/DQ)"].status == PASS


# ----------------------------------------------------------------------------- what the doctor now catches (issue 25.9)

def test_the_tiny_model_has_every_layer_kind_and_dynamic_shapes(tiny_files):
    """Transposed convolution (U-Net / FCN), residual Add, MaxPool, Resize and Concat, exported with a dynamic
    batch and size; the old tiny model had no ConvTranspose, MaxPool or residual Add and a static shape."""
    import onnx

    model = onnx.load(str(tiny_files.files["fp32"]))
    ops = {n.op_type for n in model.graph.node}
    assert {"ConvTranspose", "Add", "MaxPool", "Resize", "Concat", "Conv"} <= ops, ops
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert isinstance(dims[0], str) and isinstance(dims[2], str) and isinstance(dims[3], str), dims
    qdq = onnx.load(str(tiny_files.files["int8_trt"]))
    deconv = next(n for n in qdq.graph.node if n.op_type == "ConvTranspose")
    producers = {o: n.op_type for n in qdq.graph.node for o in n.output}
    assert producers.get(deconv.input[0]) == "DequantizeLinear"  # the transposed convolution is quantized


class _Layer:
    def __init__(self, name, int8, transposed=False):
        self.name, self.int8, self.transposed, self.convolution = name, int8, transposed, True
        self.precision, self.weights = ("int8" if int8 else "fp16"), ""


def _fake_trt_path(monkeypatch, int8_layers=True):
    """build_engine / TensorRTRunner stand-ins: the runner runs the ONNX with ONNX Runtime and reports inspector
    layers; every build and every infer call is recorded."""
    import edgeseg.backends.trt_engine as trt_engine
    import edgeseg.backends.trt_runner as trt_runner
    from edgeseg.ort_session import make_session

    calls = {"build": [], "infer": []}

    def build(onnx_path, engine_path, **kwargs):
        calls["build"].append((Path(onnx_path).name, kwargs))
        Path(engine_path).write_text(str(onnx_path))
        return types.SimpleNamespace(typing="weak", precision_mix="test", profile=kwargs["bounds"], build_seconds=0.1,
                                     to_dict=lambda: {})

    class Runner:
        def __init__(self, engine, engine_info=None):
            self.session = make_session(Path(Path(engine).read_text()), threads=1)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def infer(self, x):
            calls["infer"].append(tuple(x.shape))
            return self.session.run(None, {"input": x})[0]

        def engine_layers(self):
            return [_Layer("/stem/Conv", int8_layers), _Layer("/up/ConvTranspose", int8_layers, True),
                    _Layer("/head/Conv", int8_layers)]

    monkeypatch.setattr(trt_engine, "build_engine", build)
    monkeypatch.setattr(trt_runner, "TensorRTRunner", Runner)
    return calls


def test_engines_have_a_dynamic_profile_and_run_two_sizes_with_batch_1_and_2(monkeypatch, tiny_files):
    calls = _fake_trt_path(monkeypatch)
    report = Report()
    env = Environment(trt=object(), trt_version="10.3.0", pycuda=True, gpu="test GPU")
    monkeypatch.setattr(engines, "_torch_path_check", lambda runner, art, out: "")
    engines.tensorrt_checks(report, env, tiny_files, tiny_files.files.get("calibration_cache"))
    assert [c.status for c in report.checks if c.name in engines.ENGINE_CHECKS.values()] == [PASS] * 3, report
    for _, kwargs in calls["build"]:
        assert kwargs["bounds"] == {"min": [1, 3, 64, 96], "opt": [1, 3, 64, 96], "max": [2, 3, 96, 144]}
    assert {shape[0] for shape in calls["infer"]} == {1, 2}
    assert {shape[2:] for shape in calls["infer"]} == {(64, 96), (96, 144)}
    int8 = next(c for c in report.checks if c.name == "TensorRT INT8 engine (Q/DQ)")
    assert "3 of 3 convolution layers run INT8" in int8.detail and "'/up/ConvTranspose' runs int8" in int8.detail
    assert [kwargs["detailed_profile"] for _, kwargs in calls["build"][:3]] == [False, False, True]


def test_an_int8_engine_whose_layers_fell_back_to_fp16_fails(monkeypatch, tiny_files):
    """Agreement alone passes an "INT8" engine that runs FP16 everywhere (it agrees even better); the engine
    inspector does not."""
    _fake_trt_path(monkeypatch, int8_layers=False)
    report = Report()
    env = Environment(trt=object(), trt_version="10.3.0", pycuda=True, gpu="test GPU")
    monkeypatch.setattr(engines, "_torch_path_check", lambda runner, art, out: "")
    engines.tensorrt_checks(report, env, tiny_files, None)
    int8 = next(c for c in report.checks if c.name == "TensorRT INT8 engine (Q/DQ)")
    assert int8.status == FAIL and "0 of 3 convolution layers run INT8" in int8.detail and "Q/DQ" in int8.fix
    assert next(c for c in report.checks if c.name == "TensorRT FP16 engine").status == PASS


def test_the_native_runtime_row_says_how_to_enable_it(monkeypatch, tmp_path):
    monkeypatch.delenv(engines.NATIVE_LIB, raising=False)
    report = Report()
    engines.native_check(report, Environment())
    assert report.checks[0].status == SKIPPED and engines.NATIVE_LIB in report.checks[0].fix


def test_a_missing_file_falls_back_as_a_bundle_build_does(monkeypatch, tiny_files):
    """The doctor asks trt_api.engine_source over its own roles, as `edgeseg build` does over a bundle's: without
    the FP16-scale graph an 11.x INT8 engine comes from the FP32-scale one (the old doctor asked engine_role over
    every role and skipped the check instead)."""
    import dataclasses

    built = {}
    monkeypatch.setattr(engines, "_engine", lambda report, name, art, onnx_path, precision, floor, **kw:
                        built.setdefault(precision, onnx_path.name))
    art = dataclasses.replace(tiny_files, files={k: v for k, v in tiny_files.files.items() if k != "int8_trt_fp16"})
    env = Environment(trt=object(), trt_version="11.1.0", pycuda=True, gpu="test GPU")
    engines.tensorrt_checks(Report(), env, art, None)
    assert built["int8"] == "tiny.int8.trt.onnx"


@pytest.mark.parametrize("version, axis", [("8.6.2", 0), ("10.3.0", 1)])
def test_the_int8_graph_targets_the_installed_tensorrt(tmp_path, version, axis):
    """The tiny model's transposed convolution gets the weight axis the installed TensorRT takes (before: always
    the bundles' default target, 8.6, so a 10.x device built and checked an axis-0 graph no 10.x bundle holds)."""
    import onnx

    art = engines.cpu_checks(Report(), tmp_path, version)
    model = onnx.load(str(art.files["int8_trt"]))
    producer = {o: n for n in model.graph.node for o in n.output}
    (deconv,) = [n for n in model.graph.node if n.op_type == "ConvTranspose"]
    dq = producer[deconv.input[1]]
    assert next((a.i for a in dq.attribute if a.name == "axis"), 1) == axis
