"""Python side of the native runtime, for its tests and benchmark (not part of the edgeseg package).

    build = build_native(Path("/tmp/b"))          # configure + build (CMake, -j2); NativeUnavailable names what is missing
    lib = NativeLib(build.library)                  # ctypes over the C API (edgeseg.h)
    seg = lib.open("bundle/"); labels = seg.segment(rgb)
    runner = OpenVinoRunner(onnx)                   # `infer(x)` like an edgeseg runner, OpenVINO from Python

The native pre/post-processing is compared against edgeseg's own: ``python_segmenter`` is
``edgeseg.load(bundle)`` with its runner replaced by ``OpenVinoRunner`` on the same ONNX the native
OpenVINO backend runs, so the Python preprocessing and postprocessing are edgeseg's, whatever
module they live in.
"""
from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]


class NativeUnavailable(Exception):
    """A compiler, CMake or a dependency of the native build is absent (the message says which)."""


@dataclass(frozen=True)
class NativeBuild:
    root: Path
    features: dict[str, list[str]]
    ctest: str  # the ctest beside the cmake that configured the build

    @property
    def library(self) -> Path:
        return self.root / "native" / "libedgeseg_runtime.so"

    @property
    def app(self) -> Path:
        return self.root / "native" / "edgeseg-native"

    def built(self, feature: str) -> bool:
        return feature in self.features["built"]


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _tool(name: str) -> str | None:
    """``name`` from this Python's environment (the dev extra's cmake/ninja) before PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() else shutil.which(name)


def build_native(build_dir: Path, jobs: int = 2, extra: list[str] | None = None) -> NativeBuild:
    """Configure and build the native part into ``build_dir``. Raises NativeUnavailable when a tool or
    dependency is missing (CMake says "not found:"), RuntimeError with the log tail on a real failure."""
    cmake = _tool("cmake")
    if cmake is None:
        raise NativeUnavailable("CMake not found (pip install cmake; it is in the dev extra)")
    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if cxx is None:
        raise NativeUnavailable("no C++ compiler (c++, g++ or clang++) on PATH; install g++")
    ninja = _tool("ninja")
    generator = ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}"] if ninja else []
    configure = [cmake, "-S", str(REPO), "-B", str(build_dir), *generator, "-DCMAKE_BUILD_TYPE=Release",
                 f"-DPython3_EXECUTABLE={sys.executable}", f"-DCMAKE_CXX_COMPILER={cxx}", *(extra or [])]
    done = subprocess.run(configure, capture_output=True, text=True)
    if done.returncode != 0:
        log = done.stdout + done.stderr
        missing = [line.strip() for line in log.splitlines() if "not found:" in line]
        if missing:
            raise NativeUnavailable(missing[0])
        raise RuntimeError(f"cmake configure failed:\n{_tail(log)}")
    done = subprocess.run([cmake, "--build", str(build_dir), "-j", str(jobs)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"native build failed:\n{_tail(done.stdout + done.stderr)}")
    raw = json.loads((build_dir / "edgeseg_features.json").read_text())
    features = {k: [v for v in vals if v] for k, vals in raw.items()}
    return NativeBuild(build_dir, features, str(Path(cmake).with_name("ctest")))


# ----------------------------------------------------------------------------- ctypes over the C API

_u8p = ctypes.POINTER(ctypes.c_uint8)
_f32p = ctypes.POINTER(ctypes.c_float)
FORMATS = {"RGB": 0, "BGR": 1, "NV12": 2}


def _ptr(a: np.ndarray, kind: Any) -> Any:
    return a.ctypes.data_as(kind)


class NativeError(Exception):
    pass


class NativeLib:
    def __init__(self, path: Path) -> None:
        self.lib = lib = ctypes.CDLL(str(path))
        lib.edgeseg_last_error.restype = ctypes.c_char_p
        lib.edgeseg_open.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_void_p)]
        lib.edgeseg_close.argtypes = [ctypes.c_void_p]
        lib.edgeseg_backend.argtypes = [ctypes.c_void_p]
        lib.edgeseg_backend.restype = ctypes.c_char_p
        lib.edgeseg_segment.argtypes = [ctypes.c_void_p, _u8p, ctypes.c_int, ctypes.c_int, ctypes.c_size_t,
                                        ctypes.c_int, ctypes.c_int, _u8p]
        lib.edgeseg_last_timing.argtypes = [ctypes.c_void_p] + [ctypes.POINTER(ctypes.c_double)] * 3
        lib.edgeseg_resize_bilinear_u8.argtypes = [_u8p, ctypes.c_int, ctypes.c_int, ctypes.c_int, _u8p,
                                                   ctypes.c_int, ctypes.c_int]
        lib.edgeseg_frame_to_rgb.argtypes = [_u8p, ctypes.c_int, ctypes.c_int, ctypes.c_size_t, ctypes.c_int, _u8p]
        lib.edgeseg_normalize.argtypes = [_u8p, ctypes.c_int, ctypes.c_int, _f32p, _f32p, ctypes.c_float,
                                          ctypes.c_int, _f32p]
        lib.edgeseg_resize_logits.argtypes = [_f32p] + [ctypes.c_int] * 5 + [_f32p]
        lib.edgeseg_labels_from_logits.argtypes = [_f32p] + [ctypes.c_int] * 5 + [_u8p]

    def _check(self, rc: int) -> None:
        if rc != 0:
            raise NativeError(self.lib.edgeseg_last_error().decode())

    def resize_u8(self, image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        image = np.ascontiguousarray(image)
        c = image.shape[2] if image.ndim == 3 else 1
        out = np.empty((size[0], size[1], c), np.uint8)
        self._check(self.lib.edgeseg_resize_bilinear_u8(_ptr(image, _u8p), image.shape[0], image.shape[1], c,
                                                        _ptr(out, _u8p), size[0], size[1]))
        return out if image.ndim == 3 else out[:, :, 0]

    def frame_to_rgb(self, data: np.ndarray, width: int, height: int, fmt: str) -> np.ndarray:
        data = np.ascontiguousarray(data)
        out = np.empty((height, width, 3), np.uint8)
        self._check(self.lib.edgeseg_frame_to_rgb(_ptr(data, _u8p), width, height, 0, FORMATS[fmt], _ptr(out, _u8p)))
        return out

    def normalize(self, rgb: np.ndarray, pre: dict[str, Any]) -> np.ndarray:
        rgb = np.ascontiguousarray(rgb)
        mean, std = (np.asarray(pre[k], np.float32) for k in ("mean", "std"))
        out = np.empty((3, rgb.shape[0], rgb.shape[1]), np.float32)
        self._check(self.lib.edgeseg_normalize(_ptr(rgb, _u8p), rgb.shape[0], rgb.shape[1], _ptr(mean, _f32p),
                                               _ptr(std, _f32p), float(pre.get("scale", 1 / 255)),
                                               int(pre.get("channel_order", "RGB") == "BGR"), _ptr(out, _f32p)))
        return out

    def resize_logits(self, logits: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        logits = np.ascontiguousarray(logits, np.float32)
        c, h, w = logits.shape
        out = np.empty((c, *size), np.float32)
        self._check(self.lib.edgeseg_resize_logits(_ptr(logits, _f32p), c, h, w, size[0], size[1], _ptr(out, _f32p)))
        return out

    def labels(self, logits: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        logits = np.ascontiguousarray(logits, np.float32)
        c, h, w = logits.shape
        out = np.empty(size, np.uint8)
        self._check(self.lib.edgeseg_labels_from_logits(_ptr(logits, _f32p), c, h, w, size[0], size[1],
                                                        _ptr(out, _u8p)))
        return out

    def open(self, bundle: Path, backend: str = "auto", threads: int = 0) -> "NativeSegmenter":
        handle = ctypes.c_void_p()
        self._check(self.lib.edgeseg_open(str(bundle).encode(), backend.encode(), threads, ctypes.byref(handle)))
        return NativeSegmenter(self, handle)


class NativeSegmenter:
    def __init__(self, lib: NativeLib, handle: ctypes.c_void_p) -> None:
        self.native, self.handle = lib, handle

    @property
    def backend(self) -> str:
        return self.native.lib.edgeseg_backend(self.handle).decode()

    def segment(self, frame: np.ndarray, fmt: str = "RGB", channels: int | None = None) -> np.ndarray:
        frame = np.ascontiguousarray(frame)
        h, w = (frame.shape[0] * 2 // 3, frame.shape[1]) if fmt == "NV12" else frame.shape[:2]
        ch = channels if channels is not None else (frame.shape[2] if frame.ndim == 3 else 1)
        labels = np.empty((h, w), np.uint8)
        self.native._check(self.native.lib.edgeseg_segment(self.handle, _ptr(frame, _u8p), w, h, 0, FORMATS[fmt], ch,
                                                           _ptr(labels, _u8p)))
        return labels

    def timing(self) -> tuple[float, float, float]:
        t = [ctypes.c_double() for _ in range(3)]
        self.native._check(self.native.lib.edgeseg_last_timing(self.handle, *(ctypes.byref(v) for v in t)))
        return tuple(v.value for v in t)

    def close(self) -> None:
        if self.handle:
            self.native.lib.edgeseg_close(self.handle)
            self.handle = None


# ----------------------------------------------------------------------------- the Python reference

OPENVINO_CONFIG = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}  # as the native backend


class OpenVinoRunner:
    """``infer(x)`` (NCHW float32 -> logits) with OpenVINO from Python; keeps the last input and output."""

    def __init__(self, onnx: Path, threads: int = 0) -> None:
        import openvino as ov

        config = dict(OPENVINO_CONFIG)
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self.compiled = ov.Core().compile_model(str(onnx), "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.last_input: np.ndarray | None = None
        self.last_output: np.ndarray | None = None

    def infer(self, x: np.ndarray) -> np.ndarray:
        self.last_input = x
        self.request.infer({0: x})
        self.last_output = self.request.get_output_tensor(0).data.copy()
        return self.last_output


def model_file(bundle: Path) -> Path:
    """The ONNX the native OpenVINO backend runs: the int8 role for int8 bundles, else fp32 (as edgeseg.load on CPU)."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    role = "int8" if manifest["precision"] == "int8" else "fp32"
    return bundle / manifest["roles"][role]


def python_segmenter(bundle: Path, threads: int = 0) -> tuple[Any, OpenVinoRunner]:
    """``edgeseg.load(bundle)`` running OpenVINO (same ONNX as native) instead of ONNX Runtime."""
    import edgeseg

    seg = edgeseg.load(bundle, backend="ort")
    runner = OpenVinoRunner(model_file(bundle), threads)
    seg.runner.deactivate()
    seg.runner = runner
    return seg, runner
