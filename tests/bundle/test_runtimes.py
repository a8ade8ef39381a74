"""Builds that measure and choose: runtime paths recorded in the manifest, and backend auto taking the
fastest path within the mIoU budget, re-measuring on another machine type, and saying why."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import edgeseg
from edgeseg.backends.hardware import cpu_description
from edgeseg.backends.openvino import openvino_missing
from edgeseg.backends.registry import RunnerOptions
from edgeseg.bundle.build import BuildOptions, build_bundle
from edgeseg.bundle.manifest import Bundle, read_bundle
from edgeseg.bundle.runtimes import candidate_paths
from edgeseg.errors import EdgesegError

SPEC = "synthetic:64x96"
needs_openvino = pytest.mark.skipif(openvino_missing() is not None, reason=str(openvino_missing()))


def _capabilities() -> list[str]:
    import openvino as ov

    return [str(c) for c in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")]


def test_build_records_every_cpu_runtime_with_the_machine(tiny_dynamic_bundle: Path) -> None:
    runtime = read_bundle(tiny_dynamic_bundle).manifest["runtime"]
    assert runtime["machine"] == cpu_description()
    assert runtime["selection"]["split"] == "train"  # chosen on the calibration split; val is what the build reports
    assert runtime["selection"]["max_miou_drop"] == 0.5
    keys = {p["path"] for p in runtime["paths"]}
    expected = {"ort:fp32"} | (set() if openvino_missing() else {"openvino:fp32@f32"})  # fp32 stays exact: no bf16
    assert keys == expected
    for p in runtime["paths"]:
        assert p["latency_ms_median"] > 0 and 0 <= p["miou"] <= 100
        assert p["miou_drop"] == pytest.approx(runtime["selection"]["fp32_miou"] - p["miou"], abs=1e-3)
    if openvino_missing():
        assert runtime["skipped"][0]["backend"] == "openvino"


@needs_openvino
def test_reduced_precision_bundles_also_try_bf16_where_the_cpu_has_it(tiny_dynamic_bundle: Path) -> None:
    b = read_bundle(tiny_dynamic_bundle)
    int8 = Bundle(b.root, dict(b.manifest, precision="int8", roles=dict(b.manifest["roles"], int8="model.onnx")))
    paths, skipped = candidate_paths(int8, ["ort", "openvino", "trt"], RunnerOptions())
    keys = [p.key for p in paths]
    assert keys[:2] == ["ort:int8", "openvino:int8@f32"]
    assert ("openvino:int8@bf16" in keys) == ("BF16" in _capabilities())
    assert skipped and skipped[0]["backend"] == "trt" and "TensorRT" in skipped[0]["skipped"]


@pytest.fixture()
def editable(tiny_dynamic_bundle: Path, tmp_path: Path):
    """A copy of the tiny bundle and a function rewriting its runtime record (the manifest is not hashed)."""
    out = tmp_path / "b"
    shutil.copytree(tiny_dynamic_bundle, out)

    def edit(paths: list[dict] | None, machine: dict | None = None) -> Path:
        m = json.loads((out / "manifest.json").read_text())
        if paths is None:
            m.pop("runtime", None)
        else:
            m["runtime"]["paths"] = paths
            m["runtime"]["machine"] = machine or cpu_description()
        (out / "manifest.json").write_text(json.dumps(m))
        return out

    return edit


def _path(key: str, ms: float, drop: float) -> dict:
    backend, _, rest = key.partition(":")
    role, _, ip = rest.partition("@")
    return {"path": key, "backend": backend, "role": role, "inference_precision": ip or None, "miou": 50.0 - drop,
            "miou_drop": drop, "latency_ms_median": ms}


@needs_openvino
def test_auto_takes_the_fastest_recorded_path_within_the_budget_and_says_why(editable) -> None:
    seg = edgeseg.load(editable([_path("ort:fp32", 9.0, 0.0), _path("openvino:fp32@f32", 3.0, 0.0)]))
    assert seg.backend == "openvino" and seg.runner.inference_precision == "f32"
    assert "fastest measured at build time on this machine type" in seg.choice and "openvino:fp32@f32 3.0 ms" in seg.choice
    seg = edgeseg.load(editable([_path("ort:fp32", 9.0, 0.0), _path("openvino:fp32@f32", 3.0, 0.8)]))
    assert seg.backend == "onnxruntime" and "within the bundle's mIoU budget (0.5" in seg.choice
    seg = edgeseg.load(editable([_path("ort:fp32", 9.0, 0.9), _path("openvino:fp32@f32", 3.0, 0.7)]))
    assert seg.backend == "openvino" and "no path meets the mIoU budget 0.5: the most accurate" in seg.choice
    with pytest.raises(EdgesegError, match="null or 'f32' in an fp32 bundle"):  # an fp32 bundle stays exact (issue 21)
        edgeseg.load(editable([_path("openvino:fp32@f16", 1.0, 0.0), _path("ort:fp32", 9.0, 0.0)]))


@needs_openvino
def test_another_machine_type_is_measured_here(editable) -> None:
    other = dict(cpu_description(), cpu="Some Other CPU 1234")
    seg = edgeseg.load(editable([_path("ort:fp32", 1.0, 0.0), _path("openvino:fp32@f32", 100.0, 0.0)], other))
    assert "measured here" in seg.choice and "the build measured on Some Other CPU 1234" in seg.choice
    assert "ort:fp32" in seg.choice and "openvino:fp32@f32" in seg.choice  # both timed here, figures given


def test_no_measurements_fall_back_to_onnx_runtime(editable) -> None:
    seg = edgeseg.load(editable(None))
    assert seg.backend == "onnxruntime" and "no runtime measurements in the manifest" in seg.choice
    seg = edgeseg.load(editable(None), backend="ort")
    assert seg.choice == "ONNX Runtime on model.onnx (asked for)"
    with pytest.raises(EdgesegError, match="backend must be one of auto, torch, ort, openvino, trt"):
        edgeseg.load(editable(None), backend="tvm")


@needs_openvino
def test_build_for_one_runtime_measures_only_it(tiny_dynamic_bundle: Path, tmp_path: Path) -> None:
    ckpt = read_bundle(tiny_dynamic_bundle).file("checkpoint")
    out = tmp_path / "ov"
    build_bundle(BuildOptions(precision="fp32", out=out, checkpoint=ckpt, data=SPEC, val_limit=2, backend="openvino",
                              select_images=2, runtime_rounds=3), log=lambda s: None)
    runtime = read_bundle(out).manifest["runtime"]
    assert [p["path"] for p in runtime["paths"]] == ["openvino:fp32@f32"]
    seg = edgeseg.load(out)
    assert seg.backend == "openvino" and "openvino:fp32@f32" in seg.choice
