"""The TensorRT runner: a serialized engine behind the Runner interface (TensorRT 8.5+ runtime, pycuda).

    with TensorRTRunner("model.engine", engine_info=info.to_dict()) as runner:
        logits = runner.infer(batch)       # numpy in -> numpy out; torch CUDA tensor in -> torch CUDA tensor out

Engines are built by ``trt_engine``; ``tensorrt`` and ``pycuda`` are imported on activation (through
``trt_env``), so importing this module never needs them. The version-specific decisions live in
``trt_api``; this module only makes the calls, in the order of ../shared/docs/tensorrt-notes.md
section 2 ([S#] ids).
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.backends import trt_api, trt_env
from edgeseg.backends.artifacts import BUNDLE_MANIFEST
from edgeseg.backends.base import InputSpec, Runner
from edgeseg.errors import EdgesegError


class _Buffer:
    """A page-locked host buffer and a device buffer of ``capacity`` bytes, grown on demand."""

    def __init__(self) -> None:
        self.capacity = 0
        self.host: np.ndarray | None = None
        self.device: Any = None

    def reserve(self, cuda: Any, nbytes: int) -> None:
        if nbytes > self.capacity:
            self.free()
            self.host = cuda.pagelocked_empty((nbytes,), np.uint8)
            self.device = cuda.mem_alloc(nbytes)
            self.capacity = nbytes

    def view(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        nbytes = int(np.prod(shape)) * dtype.itemsize
        return self.host[:nbytes].view(dtype).reshape(shape)

    def free(self) -> None:
        if self.device is not None:
            self.device.free()
        self.host, self.device, self.capacity = None, None, 0


@dataclass(frozen=True)
class _Tensor:
    name: str
    dtype: np.dtype
    shape: tuple[int, ...]  # -1 = dynamic


def engine_record_beside(engine_path: str | Path) -> dict[str, Any]:
    """The ``engine`` record of the bundle manifest next to ``engine_path`` when it describes this plan,
    else {}. Plain JSON: nothing is executed or unpickled."""
    engine_path = Path(engine_path)
    try:
        manifest = json.loads((engine_path.parent / BUNDLE_MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    record = manifest.get("engine") if isinstance(manifest, dict) else None
    if isinstance(record, dict) and record.get("file", engine_path.name) == engine_path.name:
        return dict(record)
    return {}


class TensorRTRunner(Runner):
    """Runs a serialized engine on GPU ``device`` in PyTorch's primary CUDA context.

    ``engine_info``: the build's ``EngineInfo.to_dict()`` (from the bundle manifest); without it the
    record of the bundle manifest next to the plan is used when there is one. With a record the plan
    is checked against this TensorRT and GPU before loading (the error names every difference and
    the rebuild command), and its ``dla_core`` / ``version_compatible`` are used.
    ``version_compatible``: True for a plan built with VERSION_COMPATIBLE when no record says so
    (no binding reads the flag from a plan before deserializing it; TensorRT refuses such a plan
    unless ``engine_host_code_allowed`` is set, as samples/common/sampleEngines.cpp does).
    """

    name = "tensorrt"

    def __init__(self, engine_path: str | Path, *, engine_info: Mapping[str, Any] | None = None,
                 device: int = 0, version_compatible: bool | None = None) -> None:
        super().__init__()
        self.engine_path = Path(engine_path)
        self.engine_info = dict(engine_info or {}) or engine_record_beside(self.engine_path)
        if version_compatible is not None:
            self.engine_info["version_compatible"] = bool(version_compatible)
        self.device = device
        self._rebuild = trt_api.REBUILD.format(dir=self.engine_path.parent)  # the bundle folder holds the engine
        self._spec: InputSpec | None = None

    # -- lifecycle -------------------------------------------------------------------
    def _activate(self) -> None:
        trt, cuda = trt_env.require("tensorrt"), trt_env.require("pycuda.driver")
        if not self.engine_path.is_file():
            raise EdgesegError(f"engine {self.engine_path} does not exist; build it with `{self._rebuild}`")
        if self.engine_info.get("trt_version"):
            trt_api.require_compatible(self.engine_info, trt_env.runtime_info(self.device), str(self.engine_path),
                                       str(self.engine_path.parent))
        cuda.init()
        # Share PyTorch's primary context; never pycuda.autoinit, which makes a second one [S12, notes 7.11].
        self._ctx = cuda.Device(self.device).retain_primary_context()
        self._ctx.push()
        try:
            self._load(trt, cuda)
        except BaseException:
            cuda.Context.pop()
            self._ctx.detach()
            raise
        cuda.Context.pop()

    def _load(self, trt: Any, cuda: Any) -> None:
        self._trt, self._cuda = trt, cuda
        self._logger = trt_env.logger(trt)  # the process's one logger: errors are read since a mark
        self._engine = self._deserialize(trt)
        self._context = self._engine.create_execution_context()
        self._input, self._output = self._io_tensors(trt, self._engine)
        if any(d < 0 for d in self._input.shape):
            lo, _, hi = self._engine.get_tensor_profile_shape(self._input.name, 0)
            lo, hi = tuple(int(d) for d in lo), tuple(int(d) for d in hi)
        else:
            lo = hi = self._input.shape
        self._spec = InputSpec(self._input.name, self._input.dtype, lo, hi)
        self._stream = cuda.Stream()
        self._buffers = {self._input.name: _Buffer(), self._output.name: _Buffer()}

    def _deserialize(self, trt: Any) -> Any:
        self._runtime = trt.Runtime(self._logger)
        if self.engine_info.get("dla_core") is not None:
            self._runtime.DLA_core = int(self.engine_info["dla_core"])  # [S1, S9]
        if self.engine_info.get("version_compatible"):
            trt_api.require_version_compatible(trt.__version__)  # 8.5 has no engine_host_code_allowed
            self._runtime.engine_host_code_allowed = True  # runs the lean runtime the plan carries (8.6+) [S10]
        since = self._logger.mark()
        engine = self._runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if engine is None:
            vc = "" if self.engine_info.get("version_compatible") else (
                " (a plan built version-compatible needs version_compatible=True when no bundle manifest sits next "
                "to it)")
            raise EdgesegError(f"TensorRT {trt.__version__} cannot load {self.engine_path} "
                               f"({self._logger.last_error(since)}); the file is corrupt or was built for another "
                               f"TensorRT version or GPU{vc}; rebuild it with `{self._rebuild}`")
        return engine

    def _io_tensors(self, trt: Any, engine: Any) -> tuple[_Tensor, _Tensor]:
        """The engine's one (N, 3, H, W) input and one output, by the name-based I/O API (8.5+) [S1]."""
        ios: dict[Any, list[_Tensor]] = {trt.TensorIOMode.INPUT: [], trt.TensorIOMode.OUTPUT: []}
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            ios[engine.get_tensor_mode(name)].append(
                _Tensor(name, trt_api.numpy_dtype(engine.get_tensor_dtype(name)),
                        tuple(int(d) for d in engine.get_tensor_shape(name))))
        inputs, outputs = ios[trt.TensorIOMode.INPUT], ios[trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1 or len(inputs[0].shape) != 4:
            raise EdgesegError(f"{self.engine_path} has inputs {[t.name for t in inputs]} and outputs "
                               f"{[t.name for t in outputs]}; edgeseg engines have one (N, 3, H, W) input and one "
                               "output: rebuild from an edgeseg ONNX")
        return inputs[0], outputs[0]

    def _deactivate(self) -> None:
        self._ctx.push()
        try:
            for buffer in self._buffers.values():
                buffer.free()
            self._context = self._engine = self._runtime = self._stream = self._own_stream = None
        finally:
            self._cuda.Context.pop()
            self._ctx.detach()
        self._spec = None

    def engine_layers(self) -> list[trt_api.LayerPrecision]:
        """Each layer's precision from the engine inspector (``trt_api.engine_layers``); the engine must have
        been built with ``detailed_profile=True``."""
        if self._spec is None:
            raise EdgesegError("the TensorRT runner is not active; use `with runner:` or call activate() first")
        inspector = self._engine.create_engine_inspector()
        return trt_api.engine_layers(inspector.get_engine_information(self._trt.LayerInformationFormat.JSON))

    @property
    def input_spec(self) -> InputSpec:
        if self._spec is None:
            raise EdgesegError("the TensorRT runner is not active; use `with runner:` or call activate() first")
        return self._spec

    # -- inference -------------------------------------------------------------------
    def _set_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Set the input shape; return the output shape it resolves to."""
        since = self._logger.mark()
        if not self._context.set_input_shape(self._input.name, shape):
            raise EdgesegError(f"TensorRT refused input shape {shape} ({self._logger.last_error(since)}); use a shape "
                               f"between {self._spec.min_shape} and {self._spec.max_shape}")
        return tuple(int(d) for d in self._context.get_tensor_shape(self._output.name))

    def _bind(self, tensor: _Tensor, address: int) -> None:
        """``set_tensor_address`` with its result checked; the address must be 256-byte aligned
        (``trt_api.ADDRESS_ALIGNMENT``), which the callers guarantee."""
        since = self._logger.mark()
        if not trt_api.is_aligned(address):
            raise EdgesegError(f"TensorRT tensor {tensor.name!r} needs a {trt_api.ADDRESS_ALIGNMENT}-byte aligned "
                               f"address, got {address:#x}; pass a tensor of its own (x.clone()), not a slice")
        if not self._context.set_tensor_address(tensor.name, int(address)):
            raise EdgesegError(f"TensorRT refused the address of tensor {tensor.name!r} "
                               f"({self._logger.last_error(since)}); rebuild the engine from an edgeseg ONNX")

    def _run(self, stream_handle: int) -> None:
        since = self._logger.mark()
        if not self._context.execute_async_v3(stream_handle):
            raise EdgesegError(f"TensorRT inference failed ({self._logger.last_error(since)}); check the input and the "
                               "GPU memory, or rebuild the engine")

    def _infer(self, x: Any) -> Any:
        if isinstance(x, np.ndarray):
            return self._infer_numpy(x)
        if getattr(x, "is_cuda", False):
            return self._infer_torch_cuda(x)
        import torch  # a CPU tensor: through the numpy path, returned as a CPU tensor

        return torch.from_numpy(self._infer_numpy(x.detach().numpy()))

    def _infer_numpy(self, x: np.ndarray) -> np.ndarray:
        cuda, stream = self._cuda, self._stream
        self._ctx.push()
        try:
            out_shape = self._set_shape(x.shape)
            src, dst = self._buffers[self._input.name], self._buffers[self._output.name]
            src.reserve(cuda, x.nbytes)
            dst.reserve(cuda, int(np.prod(out_shape)) * self._output.dtype.itemsize)
            host_in = src.view(x.shape, self._input.dtype)
            np.copyto(host_in, x)
            host_out = dst.view(out_shape, self._output.dtype)
            cuda.memcpy_htod_async(src.device, host_in, stream)
            self._bind(self._input, int(src.device))  # cuMemAlloc memory: aligned for any type
            self._bind(self._output, int(dst.device))
            self._run(stream.handle)
            cuda.memcpy_dtoh_async(host_out, dst.device, stream)
            stream.synchronize()
            return host_out.copy()  # the page-locked buffer is reused by the next call
        finally:
            cuda.Context.pop()

    def _torch_stream(self, torch: Any, device: Any) -> Any:
        """The stream TensorRT runs on for torch tensors: the caller's current stream when it is not a
        default stream, else this runner's own (made once). TensorRT warns on every enqueueV3 on the
        default stream and adds synchronisation [notes 2]."""
        current = torch.cuda.current_stream(device)
        if not trt_api.is_default_stream(current.cuda_stream):
            return current, current
        if getattr(self, "_own_stream", None) is None:
            self._own_stream = torch.cuda.Stream(device=device)
        return current, self._own_stream

    def _infer_torch_cuda(self, x: Any) -> Any:
        """No host copies: TensorRT reads the tensor's memory and writes a new CUDA tensor, on the caller's
        non-default stream or the runner's own stream, ordered after the caller's pending work."""
        import torch

        if x.device.index not in (None, self.device):
            raise EdgesegError(f"input tensor is on {x.device} but the engine runs on cuda:{self.device}; "
                               f"move it with x.to('cuda:{self.device}')")
        x = aligned_cuda_tensor(x.contiguous())
        self._ctx.push()
        try:
            out_shape = self._set_shape(tuple(x.shape))
            out_dtype = torch.from_numpy(np.empty(0, self._output.dtype)).dtype
            out = torch.empty(out_shape, dtype=out_dtype, device=x.device)  # a new block: 512-byte aligned
            current, stream = self._torch_stream(torch, x.device)
            if stream is not current:
                stream.wait_stream(current)  # x (and out's allocation) are ready on the caller's stream first
            self._bind(self._input, x.data_ptr())
            self._bind(self._output, out.data_ptr())
            self._run(stream.cuda_stream)
            stream.synchronize()  # like TorchRunner: the latency covers the work, and x may be freed after
            return out
        finally:
            self._cuda.Context.pop()


def aligned_cuda_tensor(x: Any) -> Any:
    """``x`` when its memory starts on a ``trt_api.ADDRESS_ALIGNMENT`` (256-byte) boundary, else an aligned
    copy. TensorRT requires that alignment of every I/O address (NvInferRuntime.h, setTensorAddress, 8.5
    to 11.1); a contiguous batch slice ``x[i:]`` of an (N, 3, H, W) float32 tensor starts i * 12 * H * W
    bytes in, which is aligned only when H * W is a multiple of 64. PyTorch's CUDA allocator hands out
    blocks aligned to 512 bytes, so the copy is aligned."""
    if trt_api.is_aligned(x.data_ptr()):
        return x
    return x.clone()


__all__ = ["TensorRTRunner", "aligned_cuda_tensor", "engine_record_beside"]
