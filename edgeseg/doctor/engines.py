"""End-to-end checks on a tiny synthetic segmentation model: ONNX Runtime on CPU, then TensorRT.

The model (``TinySeg``: strided Conv+BN+ReLU stages, an image-pooling branch upsampled with Resize,
a Concat, a head and a final Resize, like a small DeepLab v3+) is exported at opset 17, calibrated
on synthetic images and quantized with edgeseg's own code (trt layout, FP16-scale mixed graph,
calibration cache). Its files are named after the bundle's (``tiny.onnx`` for ``model.onnx``, ...) and
each engine is built from the file a bundle's engine would be (``trt_api.engine_role``). Every variant's
class map is compared with ONNX Runtime FP32 on CPU (agreement = share of pixels with the same class).
The agreement floors are fixed in advance (not tuned on these images): they catch a broken path, not a
small precision loss.

The same functions run under the GPU tests (tests/doctor), so the first ``edgeseg doctor`` on a
device exercises exactly what the tests would.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.backends.artifacts import TIMING_CACHE, role_file
from edgeseg.doctor.environment import Environment
from edgeseg.doctor.report import Report, Skip, require

SIZE = (64, 96)  # H, W
CLASSES = 4
CALIB_IMAGES, TEST_IMAGES = 16, 4
TRAIN_STEPS = 60
MIN_CLASS_SHARE = 5.0  # % of pixels: every class must cover this much of the reference map
# agreement floors with ONNX Runtime FP32 on CPU, in % of pixels (fixed in advance, see module doc)
FLOOR = {"fp32": 99.5, "fp16": 98.0, "int8": 90.0}


def tiny_model(steps: int = TRAIN_STEPS) -> Any:
    """A small DeepLab-like segmentation net, trained for ``steps`` Adam steps (seed 0, deterministic) on
    ``synthetic_batch`` so its class map has several classes with real margins (a random net's map is
    one class everywhere, which any broken path would still "agree" with)."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    class TinySeg(nn.Module):
        def __init__(self) -> None:
            super().__init__()

            def block(cin: int, cout: int, stride: int = 1, k: int = 3) -> nn.Sequential:
                return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout),
                                     nn.ReLU())

            self.stem, self.body = block(3, 16, 2), block(16, 32, 2)
            self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(32, 16, 1), nn.ReLU())
            self.proj = block(32, 16, k=1)
            self.fuse = block(32, 16)
            self.head = nn.Conv2d(16, CLASSES, 1)

        def forward(self, x):
            f = self.body(self.stem(x))
            pooled = F.interpolate(self.pool(f), size=f.shape[2:], mode="bilinear", align_corners=False)
            y = self.head(self.fuse(torch.cat([self.proj(f), pooled], 1)))
            return F.interpolate(y, size=x.shape[2:], mode="bilinear", align_corners=False)

    torch.manual_seed(0)
    with torch.random.fork_rng():
        model = TinySeg()
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # deterministic and quick: the model is tiny
        try:
            for step in range(steps):
                x, y = synthetic_batch(8, seed=1000 + step)
                loss = F.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y))
                opt.zero_grad()
                loss.backward()
                opt.step()
        finally:
            torch.set_num_threads(threads)
    return model.eval()


def synthetic_batch(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(images (count, 3, H, W) float32 normalised, labels (count, H, W) int64): blocks of random colour plus
    noise; a block's class is its dominant channel, or 3 when it is dark."""
    rng = np.random.default_rng(seed)
    h, w = SIZE
    coarse = rng.uniform(0, 1, (count, 3, 4, 6)).astype(np.float32)
    labels = np.where(coarse.max(1) < 0.5, 3, coarse.argmax(1))
    smooth = coarse.repeat(h // 4, axis=2).repeat(w // 6, axis=3)
    images = np.clip(smooth + rng.normal(0, 0.05, smooth.shape), 0, 1).astype(np.float32)
    return (images - 0.45) / 0.25, labels.repeat(h // 4, axis=1).repeat(w // 6, axis=2).astype(np.int64)


def synthetic_images(count: int, seed: int) -> np.ndarray:
    """(count, 3, H, W) float32 inputs of ``synthetic_batch``."""
    return synthetic_batch(count, seed)[0]


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """% of pixels whose argmax class is the same in two (N, C, H, W) logit arrays."""
    return float((np.asarray(a).argmax(1) == np.asarray(b).argmax(1)).mean() * 100)


def _ort(path: Path, x: np.ndarray) -> np.ndarray:
    from edgeseg.ort_session import make_session

    session = make_session(path, threads=1)
    return np.concatenate([session.run(None, {"input": x[i:i + 1]})[0] for i in range(len(x))])


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
    inputs: np.ndarray | None = None
    reference: np.ndarray | None = None  # ONNX Runtime FP32 logits on ``inputs``

    def make(self, role: str) -> Path:
        """Where the file of ``role`` goes (recorded once the check that writes it returns)."""
        return self.root / tiny_file(role)


def _agree_row(row: Any, what: str, value: float, floor: float, fix: str) -> None:
    row.detail = f"{what}: {value:.2f}% of pixels agree with ONNX Runtime FP32 (floor {floor}%)"
    require(value >= floor, row.detail, fix)


def cpu_checks(report: Report, root: Path) -> Artifacts:
    """Export, FP16, INT8 Q/DQ (both graphs) and the calibration cache, all checked on CPU."""
    art = Artifacts(root)
    art.inputs = synthetic_images(TEST_IMAGES, seed=1)
    _export_check(report, art)
    if art.reference is None:
        return art
    with report.check("FP16 ONNX on ONNX Runtime CPU") as row:
        from edgeseg.quantize.fp16 import convert_fp16

        fp16 = art.files["fp16"] = convert_fp16(art.files["fp32"], art.make("fp16"))
        _agree_row(row, "FP16", agreement(_ort(fp16, art.inputs), art.reference), FLOOR["fp16"],
                   "check onnxconverter-common (FP16 conversion)")
    ranges = _int8_check(report, art)
    if art.amax is not None:
        with report.check("INT8 + FP16 mixed Q/DQ (opset 19) on ONNX Runtime CPU") as row:
            from edgeseg.quantize.qdq import fp16_qdq_graph

            mixed = art.files["int8_trt_fp16"] = fp16_qdq_graph(art.files["fp32"], art.make("int8_trt_fp16"), ranges)
            _agree_row(row, "INT8 + FP16", agreement(_ort(mixed, art.inputs), art.reference),
                       FLOOR["int8"], "check onnx's version converter (opset 17 -> 19) and the FP16 conversion")
    return art


def _export_check(report: Report, art: Artifacts) -> None:
    """Train and export the tiny model (``art.files["fp32"]``) and take ONNX Runtime's logits as the reference."""
    with report.check("tiny model: train, export ONNX (opset 17)") as row:
        import torch

        model = tiny_model()
        fp32 = art.files["fp32"] = art.make("fp32")
        torch.onnx.export(model, torch.from_numpy(art.inputs[:1]), str(fp32), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"])
        with torch.no_grad():
            torch_out = model(torch.from_numpy(art.inputs)).numpy()
        art.reference = _ort(fp32, art.inputs)
        value = agreement(torch_out, art.reference)
        shares = np.bincount(art.reference.argmax(1).ravel(), minlength=CLASSES) / art.reference.argmax(1).size * 100
        row.detail = (f"PyTorch vs ONNX Runtime FP32: {value:.2f}% agree; class shares "
                      f"{', '.join(f'{v:.0f}%' for v in shares)}")
        require(value >= 99.9, row.detail, "the exporter or ONNX Runtime is broken: reinstall torch / onnxruntime")
        require(shares.min() >= MIN_CLASS_SHARE, row.detail, "the tiny model did not learn its classes: report this")


def _int8_check(report: Report, art: Artifacts) -> dict[str, Any] | None:
    """Statistics, amax (``art.amax``) and the FP32-scale Q/DQ graph; returns the activation ranges."""
    ranges = None
    with report.check("INT8 Q/DQ (trt layout) on ONNX Runtime CPU") as row:
        from edgeseg.quantize.calibrators import compute_amax
        from edgeseg.quantize.histograms import collect_stats
        from edgeseg.quantize.qdq import activation_ranges, quantize_qdq

        stats = collect_stats(art.files["fp32"], list(synthetic_images(CALIB_IMAGES, seed=0)[:, None]))
        ranges = activation_ranges(stats, "entropy", "trt")
        art.amax = {n: compute_amax("entropy", s.hist, s.bin_width, s.absmax) for n, s in stats.items()
                    if s.absmax > 0}
        int8 = art.files["int8_trt"] = quantize_qdq(art.files["fp32"], art.make("int8_trt"), ranges, "trt")
        _agree_row(row, "INT8 (FP32 scales)", agreement(_ort(int8, art.inputs), art.reference), FLOOR["int8"],
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
    """Build ``onnx_path`` as a ``precision`` engine, run it, compare with ``art.reference``."""
    with report.check(name) as row:
        if onnx_path is None:
            raise Skip("its ONNX could not be made (see the CPU checks above)", "fix the CPU check first")
        from edgeseg.backends.trt_engine import build_engine
        from edgeseg.backends.trt_runner import TensorRTRunner

        engine = art.root / f"{onnx_path.stem}.{precision}{'.cache' if cache else ''}.engine"
        info = build_engine(onnx_path, engine, precision=precision, calibration_cache=cache,
                            timing_cache_path=art.root / TIMING_CACHE)
        with TensorRTRunner(engine, engine_info=info.to_dict()) as runner:
            out = np.concatenate([runner.infer(art.inputs[i:i + 1]) for i in range(len(art.inputs))])
            extra = _torch_path_check(runner, art, out) if torch_path else ""
        value = agreement(out, art.reference)
        row.detail = (f"{info.typing}ly typed, {info.precision_mix}, built in {info.build_seconds:.1f} s: "
                      f"{value:.2f}% agree with ONNX Runtime (floor {floor}%){extra}")
        require(value >= floor, row.detail, "report it with this table; try the FP32 engine to isolate the step")


def _torch_path_check(runner: Any, art: Artifacts, out: np.ndarray) -> str:
    """CUDA tensors in and out, on the runner's own stream: the same logits as the numpy path."""
    import torch

    t = runner.infer(torch.from_numpy(art.inputs[:1]).cuda())
    same = float(np.abs(t.cpu().numpy() - out[:1]).max())
    require(same < 1e-3, f"the torch CUDA tensor path differs from the numpy path by {same}",
            "report this bug with the TensorRT version")
    return f"; torch CUDA path max |diff| {same:.2e}"


ENGINE_CHECKS = {"fp32": "TensorRT FP32 engine", "fp16": "TensorRT FP16 engine", "int8": "TensorRT INT8 engine (Q/DQ)"}
IMPLICIT_CHECK = "TensorRT INT8 engine (implicit, edgeseg cache)"  # nvinfer's path: FP32 ONNX + calibration cache


def tensorrt_checks(report: Report, env: Environment, art: Artifacts, cache: Path | None) -> None:
    """An engine per precision, each built from the file a bundle's engine is built from on this TensorRT
    (``trt_api.engine_role``), and the implicit-INT8 engine (8.6 / 10.x: the FP32 ONNX + the calibration
    cache, as DeepStream's nvinfer builds it), each compared with ONNX Runtime."""
    names = [*ENGINE_CHECKS.values(), IMPLICIT_CHECK]
    if not env.can_build or art.reference is None:
        reason, fix = env.why_not() if not env.can_build else (
            "the tiny model could not be exported", "fix the export check first")
        for name in names:
            report.skip(name, reason, fix)
        return
    from edgeseg.backends import trt_api

    for precision, name in ENGINE_CHECKS.items():
        onnx_path = art.files.get(trt_api.engine_role(precision, env.trt_version))
        _engine(report, name, art, onnx_path, precision, FLOOR[precision], torch_path=precision == "fp32")
    if not trt_api.has_implicit_int8(env.trt_version):
        report.skip(IMPLICIT_CHECK, f"TensorRT {env.trt_version} has no implicit INT8 (no calibrators)",
                    "INT8 engines come from the Q/DQ ONNX (checked above)")
    elif cache is None:
        report.skip(IMPLICIT_CHECK, "no calibration cache (see its check above)",
                    "fix the calibration cache check first")
    else:
        _engine(report, IMPLICIT_CHECK, art, art.files["fp32"], "int8", FLOOR["int8"], cache=cache)


def run_doctor(workdir: str | Path | None = None) -> Report:
    """Every check, in order: environment, CPU paths, calibration cache, TensorRT engines. ``workdir``
    keeps the files (default: a temporary folder, removed afterwards)."""
    from edgeseg.doctor.environment import survey

    report = Report()
    env = survey(report)
    with tempfile.TemporaryDirectory(prefix="edgeseg-doctor-") as tmp:
        root = Path(workdir) if workdir is not None else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        art = cpu_checks(report, root)
        cache = calibration_cache_check(report, env, art)
        tensorrt_checks(report, env, art, cache)
    return report


__all__ = ["Artifacts", "CLASSES", "ENGINE_CHECKS", "FLOOR", "IMPLICIT_CHECK", "SIZE", "agreement", "cpu_checks",
           "run_doctor", "synthetic_images", "tensorrt_checks", "tiny_file", "tiny_model"]
