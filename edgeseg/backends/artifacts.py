"""What a bundle holds, by role: the one role -> file-name table and the one tuple of model precisions.

    ROLE_FILES["int8_trt"]  -> "model.int8.trt.onnx"
    role_file("engine")     -> "model.engine"

Roles are the keys of a manifest's ``roles``; every writer (build, deploy, doctor) names a file
through this table and every reader asks the manifest, so a file name is spelled once. The
backend registry (``edgeseg.backends.registry``) says which roles each backend runs and builds.
"""
from __future__ import annotations

PRECISIONS = ("fp32", "fp16", "int8")  # a model's precision: every --precision choice, bundle and manifest
ONNX_ROLES = PRECISIONS  # bundle files holding an ONNX of that precision (int8: Q/DQ, cpu layout)

ROLE_FILES: dict[str, str] = {
    "fp32": "model.onnx",  # fused FP32, parity-checked, edgeseg metadata inside
    "fp16": "model.fp16.onnx",  # FP16 weights and compute, FP32 inputs and outputs
    "int8": "model.int8.onnx",  # Q/DQ, cpu layout (ONNX Runtime / OpenVINO CPU)
    "int8_trt": "model.int8.trt.onnx",  # Q/DQ, trt layout, FP32 scales (TensorRT 8.6 / 10.x, weakly typed)
    "int8_trt_fp16": "model.int8.trt16.onnx",  # Q/DQ, trt layout, FP16 scales, opset 19 (strongly typed: 11.x)
    "calibration_cache": "calibration.cache",  # TensorRT implicit-INT8 calibration table (8.6 / 10.x)
    "engine": "model.engine",  # a TensorRT plan, built on the device
    "checkpoint": "checkpoint.pt",  # the edgeseg checkpoint the bundle was built from (torch backend)
}
CALIBRATION_MANIFEST = "calibration.json"  # the calibration set's manifest (relative paths + sha256)
BUNDLE_MANIFEST = "manifest.json"  # classes, preprocessing, roles, sha256 of every file
TIMING_CACHE = "timing.cache"  # TensorRT's timing cache, kept beside the engine: quicker rebuilds on the device


def role_file(role: str) -> str:
    """The file name a bundle gives the file playing ``role``."""
    return ROLE_FILES[role]
