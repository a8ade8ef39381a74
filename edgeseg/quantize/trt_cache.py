"""TensorRT implicit-INT8 calibration cache (text), written from our statistics.

Format (TensorRT 8.6 / 10, read by trtexec --calib, IInt8Calibrator.read_calibration_cache and
ONNX Runtime's TensorRT provider): first line ``TRT-<MAJOR*1000+MINOR*100+PATCH>-<Algorithm>``,
then ``<tensor name>: <hex>`` per tensor, hex being the float32 bit pattern of amax / 127,
lower case, no 0x. TensorRT 11 has no implicit INT8: use the Q/DQ ONNX there.
"""
from __future__ import annotations

import struct
from pathlib import Path

from edgeseg.errors import EdgesegError
from edgeseg.io_utils import atomic_write_text

ALGORITHMS = {"entropy": "EntropyCalibration2", "minmax": "MinMaxCalibration"}


def trt_version_code(version: str) -> int:
    """'8.6.1' -> 8601, '10.3.0' -> 10300."""
    try:
        parts = [int(p) for p in version.split(".")[:3]] + [0, 0]
    except ValueError:
        raise EdgesegError(f"TensorRT version must look like 8.6.1, got {version!r}") from None
    major, minor, patch = parts[:3]
    if major >= 11:
        raise EdgesegError(f"TensorRT {version} has no implicit INT8 calibration (removed in 11); "
                           "build from the Q/DQ ONNX (--layout trt) instead")
    return major * 1000 + minor * 100 + patch


def scale_hex(amax: float) -> str:
    """The float32 bit pattern of amax / 127 as TensorRT writes it."""
    scale = float(amax) / 127.0
    return format(struct.unpack("<I", struct.pack("<f", scale))[0], "x")


def calibration_cache_text(amax_by_tensor: dict[str, float], trt_version: str = "8.6.1",
                           algorithm: str = "entropy") -> str:
    if algorithm not in ALGORITHMS:
        raise EdgesegError(f"TensorRT caches record entropy or minmax calibration, got {algorithm!r}")
    lines = [f"TRT-{trt_version_code(trt_version)}-{ALGORITHMS[algorithm]}"]
    lines += [f"{name}: {scale_hex(amax)}" for name, amax in amax_by_tensor.items()]
    return "\n".join(lines) + "\n"


def write_calibration_cache(path: str | Path, amax_by_tensor: dict[str, float], trt_version: str = "8.6.1",
                            algorithm: str = "entropy") -> Path:
    atomic_write_text(path, calibration_cache_text(amax_by_tensor, trt_version, algorithm))
    return Path(path)
