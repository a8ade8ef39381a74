"""End-to-end checks on the tiny model (``doctor.tiny``): ONNX Runtime on CPU, then TensorRT.

The model (transposed convolution, residual Add, MaxPool, Resize and Concat) is exported at opset 17 with a
dynamic batch and size, calibrated on synthetic images and quantized with edgeseg's own code (trt layout,
FP16-scale mixed graph, calibration cache). Its files are named after the bundle's (``tiny.onnx`` for
``model.onnx``, ...) and each engine is built from the file a bundle's engine would be: the same
``trt_api.engine_source`` as ``edgeseg build``, over the tiny model's roles. Every engine has the dynamic-shape
profile ``tiny.profile_bounds`` and runs at both ``tiny.SIZES`` (batch 1, then batch 2); every class map is
compared with ONNX Runtime FP32 on CPU at the same size (agreement = share of pixels with the same class).
INT8 engines are built with detailed profiling and the engine inspector must show their convolutions
(transposed ones included) running INT8. The agreement floors are fixed in advance (not tuned on these
images): they catch a broken path, not a small precision loss.

The same functions run under the GPU tests (tests/doctor), so the first ``edgeseg doctor`` on a
device exercises exactly what the tests would.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.backends.artifacts import TIMING_CACHE, role_file
from edgeseg.doctor.environment import Environment
from edgeseg.doctor.report import Report, Skip, require
from edgeseg.doctor.tiny import (BATCHES, CLASSES, SIZE, SIZES, TRAIN_STEPS, export_tiny, profile_bounds,
                                 synthetic_batch, synthetic_images, tiny_model)

CALIB_IMAGES, TEST_IMAGES = 16, 4
MIN_CLASS_SHARE = 5.0  # % of pixels: every class must cover this much of the reference map
# agreement floors with ONNX Runtime FP32 on CPU, in % of pixels (fixed in advance, see module doc)
FLOOR = {"fp32": 99.5, "fp16": 98.0, "int8": 90.0}
INT8_LAYER_FLOOR = 50.0  # % of an INT8 engine's convolution layers the inspector must show running INT8
NATIVE_LIB = "EDGESEG_NATIVE_LIB"  # environment variable: the C++ runtime library built with the TensorRT backend


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """% of pixels whose argmax class is the same in two (N, C, H, W) logit arrays."""
    return float((np.asarray(a).argmax(1) == np.asarray(b).argmax(1)).mean() * 100)


def check_inputs() -> list[np.ndarray]:
    """One input array per ``SIZES`` entry: ``TEST_IMAGES`` images at the first size, two batches of
    ``BATCHES[1]`` at the second."""
    return [synthetic_images(TEST_IMAGES, seed=1, size=SIZES[0]),
            synthetic_images(2 * BATCHES[1], seed=2, size=SIZES[1])]


def _batches(x: np.ndarray, batch: int) -> list[np.ndarray]:
    return [x[i:i + batch] for i in range(0, len(x), batch)]


def _ort(path: Path, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """ONNX Runtime's logits for each size's inputs, run in that size's batch."""
    from edgeseg.ort_session import make_session

    session = make_session(path, threads=1)
    return [np.concatenate([session.run(None, {"input": b})[0] for b in _batches(x, batch)])
            for x, batch in zip(inputs, BATCHES)]


def _agreement(outs: list[np.ndarray], refs: list[np.ndarray]) -> list[float]:
    return [agreement(o, r) for o, r in zip(outs, refs)]


def _sizes_text(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}% at {h}x{w} batch {b}" for v, (h, w), b in zip(values, SIZES, BATCHES))


def tiny_file(role: str) -> str:
    """The tiny model's name for a bundle role's file: model.onnx -> tiny.onnx, calibration.cache ->
    tiny.calibration.cache."""
    return "tiny." + role_file(role).removeprefix("model.")


@dataclass
class Artifacts:
    """The tiny model's files, made once by ``cpu_checks`` and reused by ``tensorrt_checks``."""

    root: Path
    files: dict[str, Path] = field(default_factory=dict)  # bundle role -> the tiny model's file, once made
    amax: dict[str, float] | None = None
    inputs: list[np.ndarray] = field(default_factory=list)  # one array per SIZES entry
    reference: list[np.ndarray] | None = None  # ONNX Runtime FP32 logits on ``inputs``

    def make(self, role: str) -> Path:
        """Where the file of ``role`` goes (recorded once the check that writes it returns)."""
        return self.root / tiny_file(role)

    @property
    def roles(self) -> dict[str, str]:
        """The tiny model's roles as a bundle manifest has them (role -> file name), for ``engine_source``."""
        return {role: path.name for role, path in self.files.items()}


def _agree_row(row: Any, what: str, values: list[float], floor: float, fix: str) -> None:
    row.detail = f"{what}: {_sizes_text(values)} of pixels agree with ONNX Runtime FP32 (floor {floor}%)"
    require(min(values) >= floor, row.detail, fix)


def cpu_checks(report: Report, root: Path, trt_version: str | None = None) -> Artifacts:
    """Export, FP16, INT8 Q/DQ (both graphs) and the calibration cache, all checked on CPU at both sizes. The
    FP32-scale Q/DQ graph targets ``trt_version`` (its ConvTranspose weight axis; None: the bundles' default)."""
    art = Artifacts(root, inputs=check_inputs())
    _export_check(report, art)
    if art.reference is None:
        return art
    with report.check("FP16 ONNX on ONNX Runtime CPU") as row:
        from edgeseg.quantize.fp16 import convert_fp16

        fp16 = art.files["fp16"] = convert_fp16(art.files["fp32"], art.make("fp16"))
        _agree_row(row, "FP16", _agreement(_ort(fp16, art.inputs), art.reference), FLOOR["fp16"],
                   "check onnxconverter-common (FP16 conversion)")
    ranges = _int8_check(report, art, trt_version)
    if art.amax is not None:
        with report.check("INT8 + FP16 mixed Q/DQ (opset 19) on ONNX Runtime CPU") as row:
            from edgeseg.quantize.qdq import fp16_qdq_graph

            mixed = art.files["int8_trt_fp16"] = fp16_qdq_graph(art.files["fp32"], art.make("int8_trt_fp16"), ranges)
            _agree_row(row, "INT8 + FP16", _agreement(_ort(mixed, art.inputs), art.reference), FLOOR["int8"],
                       "check onnx's version converter (opset 17 -> 19) and the FP16 conversion")
    return art


def _export_check(report: Report, art: Artifacts) -> None:
    """Train and export the tiny model (``art.files["fp32"]``) and take ONNX Runtime's logits as the reference."""
    with report.check("tiny model: train, export ONNX (opset 17, dynamic shapes)") as row:
        import torch

        model = tiny_model(TRAIN_STEPS)
        fp32 = art.files["fp32"] = art.make("fp32")
        export_tiny(model, fp32)
        with torch.no_grad():
            torch_out = [model(torch.from_numpy(x)).numpy() for x in art.inputs]
        art.reference = _ort(fp32, art.inputs)
        values = _agreement(torch_out, art.reference)
        labels = art.reference[0].argmax(1)
        shares = np.bincount(labels.ravel(), minlength=CLASSES) / labels.size * 100
        row.detail = (f"PyTorch vs ONNX Runtime FP32: {_sizes_text(values)} agree; class shares "
                      f"{', '.join(f'{v:.0f}%' for v in shares)}")
        require(min(values) >= 99.9, row.detail,
                "the exporter or ONNX Runtime is broken: reinstall torch / onnxruntime")
        require(shares.min() >= MIN_CLASS_SHARE, row.detail, "the tiny model did not learn its classes: report this")


def _int8_check(report: Report, art: Artifacts, trt_version: str | None) -> dict[str, Any] | None:
    """Statistics, amax (``art.amax``) and the FP32-scale Q/DQ graph; returns the activation ranges."""
    ranges = None
    with report.check("INT8 Q/DQ (trt layout) on ONNX Runtime CPU") as row:
        from edgeseg.quantize.calibrators import compute_amax
        from edgeseg.quantize.histograms import collect_stats
        from edgeseg.quantize.layouts import get_layout
        from edgeseg.quantize.qdq import activation_ranges, quantize_qdq

        stats = collect_stats(art.files["fp32"], list(synthetic_images(CALIB_IMAGES, seed=0)[:, None]))
        ranges = activation_ranges(stats, "entropy", "trt")
        art.amax = {n: compute_amax("entropy", s.hist, s.bin_width, s.absmax) for n, s in stats.items()
                    if s.absmax > 0}
        int8 = art.files["int8_trt"] = quantize_qdq(art.files["fp32"], art.make("int8_trt"), ranges,
                                                         get_layout("trt", trt_version))
        _agree_row(row, "INT8 (FP32 scales)", _agreement(_ort(int8, art.inputs), art.reference), FLOOR["int8"],
                   "recalibrate: the Q/DQ placement or the ranges are wrong")
    return ranges


def calibration_cache_check(report: Report, env: Environment, art: Artifacts) -> Path | None:
    """The cache edgeseg writes for this TensorRT (JetPack 6.1's, 10.3.0, when none is installed)."""
    from edgeseg.backends import trt_api

    path = None
    with report.check("calibration cache header") as row:
        if art.amax is None:
            raise Skip("no INT8 statistics (the INT8 check failed)", "fix the INT8 check first")
        version = env.trt_version or trt_api.JETPACK_6_1_TRT
        if not trt_api.has_implicit_int8(version):
            raise Skip(f"TensorRT {version} has no implicit INT8: no calibration cache is used",
                       "INT8 engines come from the Q/DQ ONNX")
        from edgeseg.quantize.trt_cache import write_calibration_cache

        path = art.files["calibration_cache"] = write_calibration_cache(art.make("calibration_cache"), art.amax,
                                                                        version, "entropy")
        header = path.read_text().split("\n", 1)[0]
        expected = f"TRT-{trt_api.version_code(version)}-EntropyCalibration2"
        row.detail = f"{header} for TensorRT {version}" + (
            "" if env.trt_version else " (none installed: JetPack 6.1's)")
        require(header == expected, f"header {header!r}, expected {expected!r}", "report this bug")
    return path


def _engine(report: Report, name: str, art: Artifacts, onnx_path: Path | None, precision: str, floor: float, *,
            cache: Path | None = None, torch_path: bool = False) -> None:
    """Build ``onnx_path`` as a ``precision`` engine with the dynamic profile, run it at both sizes, compare with
    ``art.reference``; an INT8 engine's layers must run INT8 (``_int8_layers``)."""
    with report.check(name) as row:
        if onnx_path is None:
            raise Skip("its ONNX could not be made (see the CPU checks above)", "fix the CPU check first")
        from edgeseg.backends.trt_engine import build_engine
        from edgeseg.backends.trt_runner import TensorRTRunner

        engine = art.root / f"{onnx_path.stem}.{precision}{'.cache' if cache else ''}.engine"
        info = build_engine(onnx_path, engine, precision=precision, calibration_cache=cache, bounds=profile_bounds(),
                            timing_cache_path=art.root / TIMING_CACHE, detailed_profile=precision == "int8")
        with TensorRTRunner(engine, engine_info=info.to_dict()) as runner:
            outs = [np.concatenate([runner.infer(b) for b in _batches(x, batch)])
                    for x, batch in zip(art.inputs, BATCHES)]
            extra = _torch_path_check(runner, art, outs[0]) if torch_path else ""
            layers = _int8_layers(runner) if precision == "int8" else ""
        values = _agreement(outs, art.reference)
        row.detail = (f"{info.typing}ly typed, {info.precision_mix}, profile {info.profile['min']}.."
                      f"{info.profile['max']}, built in {info.build_seconds:.1f} s: {_sizes_text(values)} agree with "
                      f"ONNX Runtime (floor {floor}%){layers}{extra}")
        require(min(values) >= floor, row.detail, "report it with this table; try the FP32 engine to isolate the step")


def _int8_layers(runner: Any) -> str:
    """The engine inspector's view: the share of convolution layers (transposed ones included) running INT8
    must reach ``INT8_LAYER_FLOOR``; a Q/DQ or calibration path that silently fell back to FP16 fails here."""
    convs = [layer for layer in runner.engine_layers() if layer.convolution]
    require(bool(convs), "the engine inspector shows no convolution layer", "report this with the TensorRT version")
    int8 = [layer for layer in convs if layer.int8]
    share = 100 * len(int8) / len(convs)
    transposed = [layer for layer in convs if layer.transposed]
    text = (f"; inspector: {len(int8)} of {len(convs)} convolution layers run INT8"
            + "".join(f", transposed {t.name!r} runs {t.precision or t.weights or '?'}" for t in transposed))
    require(share >= INT8_LAYER_FLOOR, text.lstrip("; "),
            "INT8 did not reach the convolutions: check the Q/DQ placement (edgeseg quantize --layout trt) or the "
            "calibration cache header")
    return text


def _torch_path_check(runner: Any, art: Artifacts, out: np.ndarray) -> str:
    """CUDA tensors in and out, on the runner's own stream: the same logits as the numpy path, from an input
    that is not 256-byte aligned (it goes through the runner's aligned copy)."""
    import torch

    x = torch.from_numpy(art.inputs[0][:1])
    flat = torch.empty(x.numel() + 1, device="cuda")
    flat[1:] = x.flatten().cuda()
    t = runner.infer(flat[1:].view(x.shape))  # 4 bytes off a 256-byte boundary, like a batch slice when 64 ∤ H*W
    same = float(np.abs(t.cpu().numpy() - out[:1]).max())
    require(same < 1e-3, f"the torch CUDA tensor path differs from the numpy path by {same}",
            "report this bug with the TensorRT version")
    return f"; torch CUDA path (unaligned input) max |diff| {same:.2e}"


ENGINE_CHECKS = {"fp32": "TensorRT FP32 engine", "fp16": "TensorRT FP16 engine", "int8": "TensorRT INT8 engine (Q/DQ)"}
IMPLICIT_CHECK = "TensorRT INT8 engine (implicit, edgeseg cache)"  # nvinfer's path: FP32 ONNX + calibration cache
NATIVE_CHECK = "C++ runtime (TensorRT backend)"


def tensorrt_checks(report: Report, env: Environment, art: Artifacts, cache: Path | None) -> None:
    """An engine per precision, each built from the file ``trt_api.engine_source`` names for this TensorRT over
    the tiny model's roles (what ``edgeseg build`` builds a bundle's engine from), and the implicit-INT8 engine
    (8.5 / 8.6 / 10.x: the FP32 ONNX + the calibration cache, as DeepStream's nvinfer builds it), each
    compared with ONNX Runtime."""
    names = [*ENGINE_CHECKS.values(), IMPLICIT_CHECK]
    if not env.can_build or art.reference is None:
        reason, fix = env.why_not() if not env.can_build else (
            "the tiny model could not be exported", "fix the export check first")
        for name in names:
            report.skip(name, reason, fix)
        return
    from edgeseg.backends import trt_api

    for precision, name in ENGINE_CHECKS.items():
        onnx_path = art.root / trt_api.engine_source(art.roles, precision, env.trt_version) if art.files else None
        _engine(report, name, art, onnx_path, precision, FLOOR[precision], torch_path=precision == "fp32")
    if not trt_api.has_implicit_int8(env.trt_version):
        report.skip(IMPLICIT_CHECK, f"TensorRT {env.trt_version} has no implicit INT8 (no calibrators)",
                    "INT8 engines come from the Q/DQ ONNX (checked above)")
    elif cache is None:
        report.skip(IMPLICIT_CHECK, "no calibration cache (see its check above)",
                    "fix the calibration cache check first")
    else:
        _engine(report, IMPLICIT_CHECK, art, art.files["fp32"], "int8", FLOOR["int8"], cache=cache)


def native_check(report: Report, env: Environment) -> None:
    """The C++ runtime where it is built: its library (``$EDGESEG_NATIVE_LIB``) must load and carry the TensorRT
    backend. Running it needs a bundle, which the doctor (a stage beside bundle) does not write: the device
    script runs the native tests (tests/native) for that."""
    with report.check(NATIVE_CHECK) as row:
        path = os.environ.get(NATIVE_LIB)
        if not path:
            raise Skip(f"not built here (${NATIVE_LIB} is unset)", f"build native/ with CMake on the device and set "
                                                                   f"{NATIVE_LIB} to its libedgeseg_runtime.so")
        import ctypes

        try:
            lib = ctypes.CDLL(path)
        except OSError as e:
            raise Skip(f"{path} cannot be loaded ({e})", "rebuild native/ on this device") from None
        require(hasattr(lib, "edgeseg_open"), f"{path} is not the edgeseg runtime (no edgeseg_open)",
                f"point {NATIVE_LIB} at native/<build>/libedgeseg_runtime.so")
        with open(path, "rb") as f:
            has_trt = b"createInferRuntime_INTERNAL" in f.read()
        require(has_trt, f"{path} was built without the TensorRT backend",
                "configure native/ where TensorRT and the CUDA toolkit are found (EDGESEG_TENSORRT=ON)")
        row.detail = f"{path}: loads, TensorRT backend linked" + ("" if env.can_build else " (no GPU here to run it)")


def run_doctor(workdir: str | Path | None = None) -> Report:
    """Every check, in order: environment, CPU paths, calibration cache, TensorRT engines, the C++ runtime.
    ``workdir`` keeps the files (default: a temporary folder, removed afterwards)."""
    from edgeseg.doctor.environment import survey

    report = Report()
    env = survey(report)
    with tempfile.TemporaryDirectory(prefix="edgeseg-doctor-") as tmp:
        root = Path(workdir) if workdir is not None else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        art = cpu_checks(report, root, env.trt_version)
        cache = calibration_cache_check(report, env, art)
        tensorrt_checks(report, env, art, cache)
        native_check(report, env)
    return report


__all__ = ["Artifacts", "CLASSES", "ENGINE_CHECKS", "FLOOR", "IMPLICIT_CHECK", "INT8_LAYER_FLOOR", "NATIVE_CHECK",
           "SIZE", "SIZES", "agreement", "cpu_checks", "native_check", "run_doctor", "synthetic_batch",
           "synthetic_images", "tensorrt_checks", "check_inputs", "tiny_file", "tiny_model"]
