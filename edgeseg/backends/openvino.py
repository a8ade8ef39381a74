"""OpenVINO runner: an edgeseg ONNX (FP32, FP16 or INT8 Q/DQ) compiled for a CPU, Intel GPU or NPU.

    with OpenVinoRunner("model.int8.onnx", device="CPU", threads=2, inference_precision="bf16") as runner:
        logits = runner.infer(batch)
        runner.inference_precision     # what the compiled model computes float layers in: "f32" | "bf16" | "f16"

``inference_precision`` None keeps OpenVINO's device default, which is bf16 on CPUs with AVX512_BF16
or AMX: the runner reads the precision back from the compiled model, so a BF16 run is reported as
BF16. ``cache_dir`` is OpenVINO's compiled-model cache (the user's folder; nothing is written
without it). ``openvino`` is imported on activation only (``pip install 'edgeseg[openvino]'``).
"""
from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.backends.base import FileRunner, InputSpec, as_numpy, spec_from_dims
from edgeseg.errors import EdgesegError

EXTRA = "pip install 'edgeseg[openvino]'"
PRECISIONS = {"f32": "FP32", "bf16": "BF16", "f16": "FP16"}  # hint -> the device capability it needs
HINTS = ("LATENCY", "THROUGHPUT")


def openvino_missing() -> str | None:
    """Why the OpenVINO runner cannot run here, or None when it can."""
    if importlib.util.find_spec("openvino") is None:
        return f"OpenVINO is not installed ({EXTRA})"
    return None


def require_openvino() -> Any:
    why = openvino_missing()
    if why:
        raise EdgesegError(f"{why}; install it or use another backend (--backend ort)")
    return importlib.import_module("openvino")


def device_capabilities(core: Any, device: str) -> list[str]:
    """OpenVINO's OPTIMIZATION_CAPABILITIES of ``device`` (e.g. FP32, BF16, INT8), after checking it exists."""
    available = list(core.available_devices)
    if device not in available and device.split(".")[0] not in {d.split(".")[0] for d in available}:
        raise EdgesegError(f"OpenVINO device {device!r} is not available here (available: {', '.join(available)}); "
                           "install Intel's GPU/NPU driver for GPU or NPU, or use device CPU")
    return [str(c) for c in core.get_property(device, "OPTIMIZATION_CAPABILITIES")]


class OpenVinoRunner(FileRunner):
    name = "openvino"

    def __init__(self, path: str | Path, device: str = "CPU", threads: int = 0, inference_precision: str | None = None,
                 hint: str = "LATENCY", cache_dir: str | Path | None = None) -> None:
        super().__init__()
        if inference_precision is not None and inference_precision not in PRECISIONS:
            raise EdgesegError(f"OpenVINO inference precision must be one of {', '.join(PRECISIONS)} (or unset for "
                               f"the device default), got {inference_precision!r}")
        if hint not in HINTS:
            raise EdgesegError(f"OpenVINO performance hint must be one of {', '.join(HINTS)}, got {hint!r}")
        self.path, self.device, self.threads = Path(path), device, threads
        self.requested_precision, self.hint = inference_precision, hint
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.loaded_from_cache = False
        self._request = None
        self._spec: InputSpec | None = None

    def _config(self, capabilities: list[str]) -> dict[str, Any]:
        config: dict[str, Any] = {"PERFORMANCE_HINT": self.hint}
        if self.requested_precision is not None:
            needed = PRECISIONS[self.requested_precision]
            if needed not in capabilities:
                raise EdgesegError(f"OpenVINO {self.device} here cannot compute in {self.requested_precision} "
                                   f"(capabilities: {', '.join(capabilities)}); use f32 or one the device lists")
            config["INFERENCE_PRECISION_HINT"] = self.requested_precision
        if self.device.startswith("CPU"):
            # denormals flushed to zero, as every edgeseg CPU runner does (~100x slower on x86, irrelevant values)
            config["CPU_DENORMALS_OPTIMIZATION"] = True
            if self.threads:
                config["INFERENCE_NUM_THREADS"] = self.threads
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            config["CACHE_DIR"] = str(self.cache_dir)
        return config

    def _activate(self) -> None:
        from edgeseg.export.metadata import read_onnx_metadata

        ov = require_openvino()
        if not self.path.is_file():
            raise EdgesegError(f"model file {self.path} does not exist; check the bundle (edgeseg info DIR)")
        core = ov.Core()
        config = self._config(device_capabilities(core, self.device))
        try:  # compiled from the path, so the cache (when set) can skip reading the ONNX
            compiled = core.compile_model(str(self.path), self.device, config)
        except RuntimeError as e:
            last = [line for line in str(e).splitlines() if line.strip()][-1][:200]
            raise EdgesegError(f"OpenVINO cannot compile {self.path} for {self.device} ({last}); expected a valid "
                               "edgeseg ONNX; re-export it or use --backend ort") from None
        inp = compiled.inputs[0]
        dtype = {"f32": np.float32, "f16": np.float16}.get(inp.get_element_type().get_type_name())
        if dtype is None:
            raise EdgesegError(f"input {inp.get_any_name()!r} is {inp.get_element_type()}; expected float32 images; "
                               "re-export with FP32 inputs")
        dims = [d.get_length() if d.is_static else None for d in inp.get_partial_shape()]
        self._spec = spec_from_dims(inp.get_any_name(), dims, dtype, read_onnx_metadata(self.path).get("shape_bounds"))
        self.inference_precision = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        if self.cache_dir is not None:
            self.loaded_from_cache = bool(compiled.get_property("LOADED_FROM_CACHE"))
        self._compiled = compiled
        self._request = compiled.create_infer_request()

    def _infer(self, x: Any) -> np.ndarray:
        x = as_numpy(x)
        self._request.infer({0: np.ascontiguousarray(x)})
        return self._request.get_output_tensor(0).data.copy()  # the request's buffer is reused by the next call

    def _deactivate(self) -> None:
        self._request = None
        self._compiled = None
