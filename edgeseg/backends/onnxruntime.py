"""ONNX Runtime runner: CPU by default; CUDA / TensorRT execution providers when installed."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.backends.base import FileRunner, InputSpec, as_numpy, spec_from_dims
from edgeseg.errors import EdgesegError

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}


def _spec_from_session(session, bounds: dict[str, Any] | None) -> InputSpec:
    inp = session.get_inputs()[0]
    dtype = {"tensor(float)": np.float32, "tensor(float16)": np.float16}.get(inp.type)
    if dtype is None:
        raise EdgesegError(f"input {inp.name!r} is {inp.type}; expected float32 images; re-export with FP32 inputs")
    return spec_from_dims(inp.name, [d if isinstance(d, int) else None for d in inp.shape], dtype, bounds)


class OrtRunner(FileRunner):
    """``providers``: names from PROVIDERS in priority order, or "auto" (what this install offers)."""

    name = "onnxruntime"
    thread_safe = True  # InferenceSession.run is documented thread-safe; inputs and outputs are per call

    def __init__(self, path: str | Path, providers: list[str] | str = "cpu", threads: int = 0,
                 spinning: bool = True) -> None:
        super().__init__()
        self.path = Path(path)
        self.providers = providers
        self.threads = threads
        self.spinning = spinning
        self._session = None
        self._spec: InputSpec | None = None

    def _provider_list(self) -> list[str]:
        import onnxruntime as ort

        available = ort.get_available_providers()
        if self.providers == "auto":
            return [p for p in (PROVIDERS["tensorrt"], PROVIDERS["cuda"], PROVIDERS["cpu"]) if p in available]
        names = [self.providers] if isinstance(self.providers, str) else list(self.providers)
        unknown = [n for n in names if n not in PROVIDERS]
        if unknown:
            raise EdgesegError(f"unknown ONNX Runtime provider {unknown[0]!r}: expected {', '.join(PROVIDERS)} or auto")
        missing = [n for n in names if PROVIDERS[n] not in available]
        if missing:
            raise EdgesegError(f"ONNX Runtime here has no {missing[0]} provider (available: {', '.join(available)}); "
                               "install onnxruntime-gpu (pip install 'edgeseg[gpu]') or use --backend ort on CPU")
        return [PROVIDERS[n] for n in names]

    def _activate(self) -> None:
        from edgeseg.ort_session import make_session
        from edgeseg.export.metadata import read_onnx_metadata

        self._session = make_session(self.path, self.threads, self._provider_list(), self.spinning)
        self._spec = _spec_from_session(self._session, read_onnx_metadata(self.path).get("shape_bounds"))
        self.output_name = self._session.get_outputs()[0].name

    def _infer(self, x: Any) -> np.ndarray:
        x = as_numpy(x)
        return self._session.run([self.output_name], {self._spec.name: x})[0]

    def _deactivate(self) -> None:
        self._session = None
