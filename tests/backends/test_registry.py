"""The backend registry: every backend declared once, reasons instead of crashes, no backend-name
comparisons anywhere else, and one ONNX Runtime session builder (denormals flushed everywhere)."""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from edgeseg.backends import registry
from edgeseg.backends.hardware import cpu_description, isa_summary, same_machine_type
from edgeseg.bundle.manifest import read_bundle
from edgeseg.errors import EdgesegError

PACKAGE = Path(__file__).resolve().parents[2] / "edgeseg"


def test_every_backend_declares_itself_once() -> None:
    assert set(registry.BACKENDS) == {"torch", "ort", "openvino", "trt"}
    for name, b in registry.BACKENDS.items():
        assert b.name == name and b.title and b.roles
        why = b.unavailable()
        assert why is None or (isinstance(why, str) and why)
    assert [b.name for b in registry.BACKENDS.values() if b.reference] == ["torch"]
    assert registry.fallback_backend().unavailable() is None  # the fallback runs everywhere
    assert registry.backend_names(cpu_runtime=True) == ("ort", "openvino")
    with pytest.raises(EdgesegError, match="unknown backend 'tvm': expected one of torch, ort, openvino, trt"):
        registry.get_backend("tvm")


def test_reasons_not_crashes_for_what_a_bundle_or_machine_lacks(tiny_dynamic_bundle: Path) -> None:
    bundle = read_bundle(tiny_dynamic_bundle)  # fp32, with checkpoint, no engine
    assert "no TensorRT engine" in registry.cannot_run(bundle, "trt")
    assert registry.cannot_run(bundle, "ort") is None and registry.cannot_run(bundle, "torch") is None
    assert "does not run engine files" in registry.cannot_run(bundle, "ort", "engine")
    assert "no TensorRT engine" in registry.runners(bundle, "trt")[0][1]
    (precision, runner), = registry.runners(bundle, "ort")  # only the files the bundle has
    assert precision == "fp32" and runner.path.name == "model.onnx" and not runner.is_active
    with pytest.raises(EdgesegError, match="no file|no TensorRT engine"):
        registry.make_runner(bundle, "trt")
    no_ckpt = type(bundle)(bundle.root, dict(bundle.manifest, roles={k: v for k, v in bundle.manifest["roles"].items()
                                                                     if k != "checkpoint"}))
    assert "no checkpoint" in registry.cannot_run(no_ckpt, "torch")


def test_precision_labels_never_call_bf16_fp32() -> None:
    assert registry.precision_label("fp32", None) == "fp32" and registry.precision_label("fp32", "f32") == "fp32"
    assert registry.precision_label("fp32", "bf16") == "fp32@bf16"
    assert registry.precision_label("int8", "bf16") == "int8@bf16"


def _backend_name_comparisons(path: Path) -> list[str]:
    """`x.backend == "trt"`, `backend in ("ort", ...)`: a comparison of something named *backend* with a
    registered backend name."""
    names = set(registry.BACKENDS)
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Compare):
            continue
        sides = [node.left, *node.comparators]
        consts = {c.value for s in sides for c in ast.walk(s) if isinstance(c, ast.Constant) and isinstance(c.value, str)}
        subjects = [ast.unparse(s) for s in sides if not isinstance(s, (ast.Constant, ast.Tuple, ast.List, ast.Set))]
        if consts & names and any("backend" in s or s in ("name", "b") for s in subjects):
            found.append(f"{path}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_backend_name_is_compared_outside_the_registry(tmp_path: Path) -> None:
    bad = [hit for p in sorted(PACKAGE.rglob("*.py")) if p.name != "registry.py" for hit in _backend_name_comparisons(p)]
    assert bad == []
    probe = tmp_path / "probe.py"  # the scan finds what it is meant to find
    probe.write_text('if opts.backend == "trt":\n    pass\nelif backend in ("ort", "torch"):\n    pass\n')
    assert len(_backend_name_comparisons(probe)) == 2


def test_one_onnx_runtime_session_builder() -> None:
    builders = [f"{p.relative_to(PACKAGE.parent)}:{n.lineno}" for p in sorted(PACKAGE.rglob("*.py"))
                for n in ast.walk(ast.parse(p.read_text()))
                if isinstance(n, ast.Call) and ast.unparse(n.func).endswith(("InferenceSession", "SessionOptions"))]
    assert builders and all(b.startswith("edgeseg/ort_session.py:") for b in builders), builders


def test_every_session_flushes_denormals(tiny_dynamic_bundle: Path) -> None:
    import onnx

    from edgeseg.export.onnx_export import _ort_session
    from edgeseg.ort_session import make_session

    path = read_bundle(tiny_dynamic_bundle).file("fp32")
    # the calibration pass builds its piece sessions with these options (quantize/histograms.py; the source
    # scan above keeps it on make_session)
    calibration = make_session(path.read_bytes(), 1, optimize=False, memory_arena=False)
    sessions = [make_session(path), _ort_session(onnx.load(str(path))), calibration]
    for s in sessions:
        assert s.get_session_options().get_session_config_entry("session.set_denormal_as_zero") == "1"
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 96), dtype=np.float32)
    assert np.allclose(sessions[0].run(None, {"input": x})[0], sessions[1].run(None, {"input": x})[0], atol=1e-4)


def test_cpu_description_reads_model_and_isa_flags() -> None:
    info = "processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu avx2 avx512f avx512_vnni amx_tile\n"
    d = cpu_description(info)
    assert d["cpu"] == "Test CPU 9000" and d["isa"]["avx512_vnni"] and d["isa"]["amx"] and not d["isa"]["avx512_bf16"]
    assert isa_summary(d) == "AVX-512 VNNI yes, AMX yes, BF16 no"
    assert same_machine_type(d, dict(d)) and not same_machine_type(d, dict(d, cpu="Other CPU"))
    here = cpu_description()
    assert here["cpu"] and here["cores"] >= 1 and set(here["isa"]) >= {"avx512_vnni", "amx", "avx512_bf16"}
