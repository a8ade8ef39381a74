"""TensorRT implicit-INT8 calibration cache (text), written from our statistics.

Format (TensorRT 8.6 / 10.x, read by trtexec --calib, IInt8Calibrator.read_calibration_cache and
ONNX Runtime's TensorRT provider): first line ``TRT-<NV_TENSORRT_VERSION>-<Algorithm>`` (the
version code per release: 8.x MAJOR*1000+MINOR*100+PATCH, 10.x MAJOR*10000+MINOR*100+PATCH, see
``trt_api.version_code``), then ``<tensor name>: <hex>`` per tensor, hex being the float32 bit
pattern of amax / 127, lower case, no 0x. ``<Algorithm>`` names the calibrator that made the table;
TensorRT replays it only through a calibrator of that algorithm. TensorRT 11 has no implicit INT8:
use the Q/DQ ONNX there. Every TensorRT version fact (the version code, which versions have implicit
INT8, the header) is ``edgeseg.backends.trt_api``'s.
"""
from __future__ import annotations

import struct
from pathlib import Path

from edgeseg.backends import trt_api
from edgeseg.errors import EdgesegError
from edgeseg.io_utils import atomic_write_text

# edgeseg calibrator -> the TensorRT calibration algorithm whose table it computes. Percentile and
# MSE have no TensorRT algorithm, so no cache is written for them (the Q/DQ ONNX carries them).
ALGORITHMS = {"entropy": "EntropyCalibration2", "minmax": "MinMaxCalibration"}


def algorithm_of(calibrator: str) -> str:
    """The TensorRT algorithm name for an edgeseg calibrator; EdgesegError for percentile / mse."""
    if calibrator not in ALGORITHMS:
        raise EdgesegError(f"a TensorRT calibration cache records entropy or minmax calibration, got calibrator "
                           f"{calibrator!r} (TensorRT has no calibrator of that kind to replay it); use --calibrator "
                           "entropy or minmax for --trt-cache, or build from the Q/DQ ONNX")
    return ALGORITHMS[calibrator]


def scale_hex(amax: float) -> str:
    """The float32 bit pattern of amax / 127 as TensorRT writes it."""
    scale = float(amax) / 127.0
    return format(struct.unpack("<I", struct.pack("<f", scale))[0], "x")


def calibration_cache_text(amax_by_tensor: dict[str, float], trt_version: str = "8.6.1",
                           algorithm: str = "entropy") -> str:
    """The cache TensorRT ``trt_version`` reads, labelled with the algorithm of ``algorithm`` (an edgeseg
    calibrator name: entropy or minmax)."""
    lines = [trt_api.calibration_cache_header(trt_version, algorithm_of(algorithm))]
    lines += [f"{name}: {scale_hex(amax)}" for name, amax in amax_by_tensor.items()]
    return "\n".join(lines) + "\n"


def write_calibration_cache(path: str | Path, amax_by_tensor: dict[str, float], trt_version: str = "8.6.1",
                            algorithm: str = "entropy") -> Path:
    atomic_write_text(path, calibration_cache_text(amax_by_tensor, trt_version, algorithm))
    return Path(path)
