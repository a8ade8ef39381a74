"""End-to-end checks on a tiny synthetic segmentation model: ONNX Runtime on CPU, then TensorRT.

The model (``TinySeg``: strided Conv+BN+ReLU stages, an image-pooling branch upsampled with Resize,
a Concat, a head and a final Resize, like a small DeepLab v3+) is exported at opset 17, calibrated
on synthetic images and quantized with edgeseg's own code (trt layout, FP16-scale mixed graph,
calibration cache). Every variant's class map is compared with ONNX Runtime FP32 on CPU (agreement
= share of pixels with the same class). The agreement floors are fixed in advance (not tuned on
these images): they catch a broken path, not a small precision loss.

The same functions run under the GPU tests (tests/doctor), so the first ``edgeseg doctor`` on a
device exercises exactly what the tests would.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

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


@dataclass
class Artifacts:
    """The tiny model's files, made once by ``cpu_checks`` and reused by ``tensorrt_checks``."""

    root: Path
    fp32: Path | None = None
    fp16: Path | None = None
    int8: Path | None = None  # FP32-scale Q/DQ (trt layout): TensorRT 8.6 / 10.x
    int8_fp16: Path | None = None  # FP16-scale mixed Q/DQ, opset 19: TensorRT 11 (10.x strongly typed)
    amax: dict[str, float] | None = None
    inputs: np.ndarray | None = None
    reference: np.ndarray | None = None  # ONNX Runtime FP32 logits on ``inputs``


def _agree_row(row: Any, what: str, value: float, floor: float, fix: str) -> None:
    row.detail = f"{what}: {value:.2f}% of pixels agree with ONNX Runtime FP32 (floor {floor}%)"
    require(value >= floor, row.detail, fix)


def cpu_checks(report: Report, root: Path) -> Artifacts:
    """Export, FP16, INT8 Q/DQ (both graphs) and the calibration cache, all checked on CPU."""
    art = Artifacts(root)
    art.inputs = synthetic_images(TEST_IMAGES, seed=1)
    with report.check("tiny model: train, export ONNX (opset 17)") as row:
        import torch

        model = tiny_model()
        art.fp32 = root / "tiny.onnx"
        torch.onnx.export(model, torch.from_numpy(art.inputs[:1]), str(art.fp32), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"])
        with torch.no_grad():
            torch_out = model(torch.from_numpy(art.inputs)).numpy()
        art.reference = _ort(art.fp32, art.inputs)
        value = agreement(torch_out, art.reference)
        shares = np.bincount(art.reference.argmax(1).ravel(), minlength=CLASSES) / art.reference.argmax(1).size * 100
        row.detail = (f"PyTorch vs ONNX Runtime FP32: {value:.2f}% agree; class shares "
                      f"{', '.join(f'{v:.0f}%' for v in shares)}")
        require(value >= 99.9, row.detail, "the exporter or ONNX Runtime is broken: reinstall torch / onnxruntime")
        require(shares.min() >= MIN_CLASS_SHARE, row.detail, "the tiny model did not learn its classes: report this")
    if art.reference is None:
        return art
    with report.check("FP16 ONNX on ONNX Runtime CPU") as row:
        from edgeseg.quantize.fp16 import convert_fp16

        art.fp16 = convert_fp16(art.fp32, root / "tiny.fp16.onnx")
        _agree_row(row, "FP16", agreement(_ort(art.fp16, art.inputs), art.reference), FLOOR["fp16"],
                   "check onnxconverter-common (FP16 conversion)")
    with report.check("INT8 Q/DQ (trt layout) on ONNX Runtime CPU") as row:
        from edgeseg.quantize.calibrators import compute_amax
        from edgeseg.quantize.histograms import collect_stats
        from edgeseg.quantize.qdq import activation_ranges, quantize_qdq

        stats = collect_stats(art.fp32, list(synthetic_images(CALIB_IMAGES, seed=0)[:, None]))
        ranges = activation_ranges(stats, "entropy", "trt")
        art.amax = {n: compute_amax("entropy", s.hist, s.bin_width, s.absmax) for n, s in stats.items()
                    if s.absmax > 0}
        art.int8 = quantize_qdq(art.fp32, root / "tiny.int8.trt.onnx", ranges, "trt")
        _agree_row(row, "INT8 (FP32 scales)", agreement(_ort(art.int8, art.inputs), art.reference), FLOOR["int8"],
                   "recalibrate: the Q/DQ placement or the ranges are wrong")
    if art.amax is not None:
        with report.check("INT8 + FP16 mixed Q/DQ (opset 19) on ONNX Runtime CPU") as row:
            from edgeseg.quantize.qdq import fp16_qdq_graph

            art.int8_fp16 = fp16_qdq_graph(art.fp32, root / "tiny.int8.trt16.onnx", ranges)
            _agree_row(row, "INT8 + FP16", agreement(_ort(art.int8_fp16, art.inputs), art.reference),
                       FLOOR["int8"], "check onnx's version converter (opset 17 -> 19) and the FP16 conversion")
    return art


def _cache_version(env: Environment) -> str:
    return env.trt_version or "10.3.0"


def calibration_cache_check(report: Report, env: Environment, art: Artifacts) -> Path | None:
    """The cache edgeseg writes for this TensorRT (10.3.0, JetPack 6.1's, when none is installed)."""
    from edgeseg.backends import trt_api

    path = None
    with report.check("calibration cache header") as row:
        if art.amax is None:
            raise Skip("no INT8 statistics (the INT8 check failed)", "fix the INT8 check first")
        version = _cache_version(env)
        if trt_api.trt_major(version) >= 11:
            raise Skip(f"TensorRT {version} has no implicit INT8: no calibration cache is used",
                       "INT8 engines come from the Q/DQ ONNX")
        from edgeseg.quantize.trt_cache import write_calibration_cache

        path = write_calibration_cache(art.root / "tiny.calibration.cache", art.amax, version, "entropy")
        header = path.read_text().split("\n", 1)[0]
        expected = f"TRT-{trt_api.version_code(version)}-EntropyCalibration2"
        row.detail = f"{header} for TensorRT {version}" + ("" if env.trt_version else " (none installed: JetPack 6.1's)")
        require(header == expected, f"header {header!r}, expected {expected!r}", "report this bug")
    return path


def _engine(report: Report, name: str, env: Environment, art: Artifacts, onnx_path: Path | None, precision: str,
            reference: np.ndarray, floor: float, *, cache: Path | None = None,
            torch_path: bool = False) -> None:
    """Build ``onnx_path`` as a ``precision`` engine, run it, compare with ``reference``."""
    with report.check(name) as row:
        if onnx_path is None:
            raise Skip("its ONNX could not be made (see the CPU checks above)", "fix the CPU check first")
        from edgeseg.backends.tensorrt import TensorRTRunner, build_engine

        engine = art.root / f"{onnx_path.stem}.{precision}{'.cache' if cache else ''}.engine"
        info = build_engine(onnx_path, engine, precision=precision, calibration_cache=cache,
                            timing_cache_path=art.root / "timing.cache")
        with TensorRTRunner(engine, engine_info=info.to_dict()) as runner:
            out = np.concatenate([runner.infer(art.inputs[i:i + 1]) for i in range(len(art.inputs))])
            extra = ""
            if torch_path:  # CUDA tensors in and out, on the runner's own stream
                import torch

                t = runner.infer(torch.from_numpy(art.inputs[:1]).cuda())
                same = float(np.abs(t.cpu().numpy() - out[:1]).max())
                extra = f"; torch CUDA path max |diff| {same:.2e}"
                require(same < 1e-3, f"the torch CUDA tensor path differs from the numpy path by {same}",
                        "report this bug with the TensorRT version")
        value = agreement(out, reference)
        row.detail = (f"{info.typing}ly typed, {info.precision_mix}, built in {info.build_seconds:.1f} s: "
                      f"{value:.2f}% agree with ONNX Runtime (floor {floor}%){extra}")
        require(value >= floor, row.detail, "report it with this table; try the FP32 engine to isolate the step")


def tensorrt_checks(report: Report, env: Environment, art: Artifacts, cache: Path | None) -> None:
    """FP32, FP16, INT8 (Q/DQ) and implicit INT8 (8.6 / 10.x) engines, each compared with ONNX Runtime."""
    names = ["TensorRT FP32 engine", "TensorRT FP16 engine", "TensorRT INT8 engine (Q/DQ)",
             "TensorRT INT8 engine (implicit, edgeseg cache)"]
    if not env.can_build:
        reason, fix = env.why_not()
        for name in names:
            report.skip(name, reason, fix)
        return
    if art.reference is None:
        for name in names:
            report.skip(name, "the tiny model could not be exported", "fix the export check first")
        return
    from edgeseg.backends import trt_api

    major = trt_api.trt_major(env.trt_version)
    _engine(report, names[0], env, art, art.fp32, "fp32", art.reference, FLOOR["fp32"], torch_path=True)
    # FP16: builder flag on an FP32 ONNX (8.6 / 10.x); 11.x has no flag: the FP16 ONNX
    _engine(report, names[1], env, art, art.fp16 if major >= 11 else art.fp32, "fp16", art.reference, FLOOR["fp16"])
    # INT8 + FP16 everywhere: FP32-scale Q/DQ with FP16|INT8 flags (8.6 / 10.x), the FP16-scale graph on 11.x
    _engine(report, names[2], env, art, art.int8_fp16 if major >= 11 else art.int8, "int8", art.reference,
            FLOOR["int8"])
    if major >= 11:
        report.skip(names[3], f"TensorRT {env.trt_version} has no implicit INT8 (no calibrators)",
                    "INT8 engines come from the Q/DQ ONNX (checked above)")
    elif cache is None:
        report.skip(names[3], "no calibration cache (see its check above)", "fix the calibration cache check first")
    else:
        _engine(report, names[3], env, art, art.fp32, "int8", art.reference, FLOOR["int8"], cache=cache)


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


__all__ = ["Artifacts", "CLASSES", "FLOOR", "SIZE", "agreement", "cpu_checks", "run_doctor", "synthetic_images",
           "tensorrt_checks", "tiny_model"]
