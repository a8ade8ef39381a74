"""`edgeseg doctor`: its CPU-only run here (every TensorRT check SKIPPED with the reason and the fix,
every CPU check PASS), its failure path (exit 1), and, on a GPU with TensorRT, the full run."""
from __future__ import annotations

import importlib.util
import inspect
import json

import numpy as np
import pytest
from click.testing import CliRunner

from edgeseg.cli import main
from edgeseg.doctor import FAIL, PASS, SKIPPED, run_doctor
from edgeseg.doctor import engines
from edgeseg.doctor.environment import Environment
from edgeseg.doctor.report import Report

CPU_CHECKS = ["tiny model: train, export ONNX (opset 17)", "FP16 ONNX on ONNX Runtime CPU",
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
