"""TensorRT engine builder and runner (TensorRT 8.6 / 10.x / 11.x, pycuda).

    info = build_engine("model.onnx", "model.engine", precision="fp16", timing_cache_path="trt.cache")
    with TensorRTRunner("model.engine", engine_info=info.to_dict()) as runner:
        logits = runner.infer(batch)       # numpy in -> numpy out; torch CUDA tensor in -> torch CUDA tensor out

``tensorrt`` and ``pycuda`` are imported inside the functions that need them, so importing this
module never needs them; a missing one raises EdgesegError naming the extra to install. The
version-specific decisions live in ``edgeseg.backends.trt_api`` (pure, unit-tested); this module
only makes the calls, in the order of ../shared/docs/tensorrt-notes.md sections 1-3 ([S#] ids).
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.backends import trt_api
from edgeseg.backends.base import InputSpec, Runner
from edgeseg.errors import EdgesegError
from edgeseg.io_utils import atomic_path, ensure_parent

log = logging.getLogger(__name__)
EXTRA = "pip install 'edgeseg[trt]'"
_PACKAGES = {"tensorrt": "TensorRT (the tensorrt package)", "pycuda.driver": "pycuda"}


def tensorrt_available() -> bool:
    """TensorRT importable and a CUDA GPU visible."""
    if importlib.util.find_spec("tensorrt") is None:
        return False
    import torch

    return torch.cuda.is_available()


def require(module: str) -> Any:
    """Import ``module`` (tensorrt or pycuda.driver); EdgesegError naming the extra when it is missing."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        what = _PACKAGES.get(module, module)
        raise EdgesegError(f"{what} is needed for the TensorRT backend but cannot be imported ({e}); install it on "
                           f"the GPU machine with {EXTRA} (JetPack ships TensorRT) or use --backend ort") from None


# ----------------------------------------------------------------------------- logging and GPU facts

def _logger(trt: Any) -> Any:
    """A ``trt.ILogger`` that keeps error messages for our EdgesegErrors and forwards each distinct
    warning once (TensorRT repeats some, e.g. per inference call, which would flood the user's log)."""

    class Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []
            self.warnings: dict[str, int] = {}  # text -> times seen

        def log(self, severity: Any, msg: str) -> None:
            text = " ".join(str(msg).split())
            if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
                self.errors.append(text)
            elif severity == trt.ILogger.Severity.WARNING:
                seen = self.warnings.get(text, 0)
                self.warnings[text] = seen + 1
                if not seen:
                    log.warning("TensorRT: %s", text)

        def mark(self) -> int:
            """A position in the error list, for ``forget_since`` (errors that are expected)."""
            return len(self.errors)

        def forget_since(self, mark: int) -> list[str]:
            """Drop (and return) the errors logged since ``mark``: an expected failure, already handled."""
            dropped, self.errors[mark:] = self.errors[mark:], []
            return dropped

        def last_error(self) -> str:
            return self.errors[-1][:300] if self.errors else "no error logged"

    return Logger()


def runtime_info(device: int = 0) -> dict[str, str]:
    """This machine's side of ``trt_api.engine_compatibility``: trt_version, compute_capability, gpu."""
    trt, cuda = require("tensorrt"), require("pycuda.driver")
    try:
        cuda.init()
        dev = cuda.Device(device)
        major, minor = dev.compute_capability()
        name = dev.name()
    except cuda.Error as e:
        raise EdgesegError(f"no usable CUDA GPU {device} for TensorRT ({' '.join(str(e).split())}); check the driver "
                           "and CUDA_VISIBLE_DEVICES, or use --backend ort") from None
    return {"trt_version": trt.__version__, "compute_capability": f"{major}.{minor}", "gpu": name}


# ----------------------------------------------------------------------------- ONNX facts

@dataclass(frozen=True)
class OnnxSummary:
    precision: str  # what the graph carries: fp32 | fp16 | int8 (Q/DQ)
    node_names: list[str]  # in graph order, to name parser errors on 8.6
    shape_bounds: dict[str, Any]  # the export's edgeseg.shape_bounds (input name -> min/opt/max)
    fp16_qdq: bool = False  # Q/DQ with FP16 scales: the mixed INT8 + FP16 graph (strongly typed builds)


def summarize_onnx(model: Any) -> OnnxSummary:
    """Precision, node names and recorded shape bounds of an ``onnx.ModelProto`` (weights not needed)."""
    import onnx

    fp16 = onnx.TensorProto.FLOAT16
    graph = model.graph
    has_qdq = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in graph.node)
    has_fp16 = (any(t.data_type == fp16 for t in graph.initializer)
                or any(v.type.tensor_type.elem_type == fp16 for v in (*graph.input, *graph.output, *graph.value_info))
                or any(n.op_type == "Cast" and any(a.name == "to" and a.i == fp16 for a in n.attribute)
                       for n in graph.node))
    scales = {n.input[1] for n in graph.node if n.op_type == "DequantizeLinear" and len(n.input) > 1}
    fp16_qdq = has_qdq and any(t.name in scales and t.data_type == fp16 for t in graph.initializer)
    bounds: dict[str, Any] = {}
    for prop in model.metadata_props:
        if prop.key == "edgeseg.shape_bounds":
            try:
                bounds = json.loads(prop.value) or {}
            except json.JSONDecodeError:
                raise EdgesegError("the ONNX has unreadable edgeseg.shape_bounds metadata; re-export it") from None
    return OnnxSummary(trt_api.onnx_precision(has_qdq, has_fp16), [n.name for n in graph.node], bounds, fp16_qdq)


def _load_onnx_header(path: Path) -> Any:
    """The ONNX graph without external weights (TensorRT reads those itself via parse_from_file)."""
    import onnx

    if not path.is_file():
        raise EdgesegError(f"ONNX file {path} does not exist; check the path (edgeseg export writes it)")
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf DecodeError and friends
        raise EdgesegError(f"cannot read {path} as ONNX ({type(e).__name__}); re-export or re-copy it") from None


# ----------------------------------------------------------------------------- build

@dataclass(frozen=True)
class EngineInfo:
    """What a build produced; ``to_dict()`` goes into the bundle manifest and back into the runner."""

    engine: str
    trt_version: str
    compute_capability: str  # "8.7"
    gpu: str
    precision: str
    onnx_precision: str
    strongly_typed: bool
    implicit_int8: bool
    input_name: str
    profile: dict[str, list[int]]  # "min" / "opt" / "max" NCHW
    dla_core: int | None
    version_compatible: bool
    hardware_compatible: str  # "none" | "ampere_plus" | "same_compute_capability"
    workspace_bytes: int
    build_seconds: float
    typing: str = "weak"  # "strong" (the ONNX decides every layer's type) or "weak" (builder flags)
    precision_mix: str = ""  # what the layers run in, e.g. "int8 (Q/DQ) + fp16 (builder flags)"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _cli_version(major: int) -> str:
    return "8.6" if major == 8 else str(min(major, 11))


def _attach_timing_cache(config: Any, path: Path | None, logger: Any) -> Any:
    """Attach a timing cache: the file's bytes when it exists, else a new one. A corrupt or foreign
    file makes ``create_timing_cache`` return None (the binding returns the C++ nullptr) after TensorRT
    logs a serialization assertion, or ``set_timing_cache(..., ignore_mismatch=False)`` return False:
    then that expected error is kept out of ``logger.last_error()``, a new cache is started and the
    file is rewritten after the build [S1]."""
    previous = path.read_bytes() if path is not None and path.is_file() else b""
    if previous:
        mark = logger.mark()
        cache = config.create_timing_cache(previous)
        if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
            return cache
        logger.forget_since(mark)
        log.warning("timing cache %s is corrupt or from another TensorRT version or GPU; rebuilding it", path)
    cache = config.create_timing_cache(b"")
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        raise EdgesegError(f"TensorRT cannot create an empty timing cache ({logger.last_error()}); check the "
                           "TensorRT install")
    return cache


def _input_shape(network: Any) -> tuple[str, tuple[int, ...]]:
    """Name and shape (-1 = dynamic) of the network's single input."""
    if network.num_inputs != 1:
        names = [network.get_input(i).name for i in range(network.num_inputs)]
        raise EdgesegError(f"edgeseg engines take one image input, the ONNX has {names}; re-export with edgeseg export")
    tensor = network.get_input(0)
    return tensor.name, tuple(int(d) for d in tensor.shape)


def build_engine(onnx_path: str | Path, engine_path: str | Path, *, precision: str = "fp32",
                 bounds: Mapping[str, Sequence[int]] | None = None, workspace_bytes: int = 2 << 30,
                 timing_cache_path: str | Path | None = None, dla_core: int | None = None,
                 version_compatible: bool = False, hardware_compatible: bool | str = False,
                 calibration_cache: str | Path | None = None, strongly_typed: bool | None = None) -> EngineInfo:
    """Build a serialized TensorRT engine from an edgeseg ONNX and write it atomically to ``engine_path``.

    ``precision`` must match what the ONNX carries on strongly typed networks (FP16 ONNX, Q/DQ
    ONNX); on 8.6/10.x an FP32 ONNX gets FP16/INT8 builder flags, INT8 then from
    ``calibration_cache`` (implicit INT8). ``bounds``: {"min","opt","max"} NCHW shapes; None takes
    the static input shape, or the export's recorded bounds for a dynamic input. The timing cache
    file is read when present and written back after the build. ``dla_core`` runs on that DLA
    core with GPU fallback (static shapes, FP16/INT8). ``version_compatible`` /
    ``hardware_compatible`` (True = "ampere_plus", or "same_compute_capability") make portable,
    slower plans. Every refusal and failure is an EdgesegError.
    """
    trt = require("tensorrt")
    version = trt.__version__
    major = trt_api.trt_major(version)
    trt_api.require_build_support(version, dla=dla_core is not None)
    onnx_path, engine_path = Path(onnx_path), ensure_parent(engine_path)
    summary = summarize_onnx(_load_onnx_header(onnx_path))
    cache_bytes = None
    if calibration_cache is not None:
        if not Path(calibration_cache).is_file():
            raise EdgesegError(f"calibration cache {calibration_cache} does not exist; run edgeseg quantize first")
        cache_bytes = Path(calibration_cache).read_bytes()
    plan = trt_api.precision_plan(major, precision, summary.precision, strongly_typed=strongly_typed,
                                  has_calibration_cache=cache_bytes is not None, fp16_qdq=summary.fp16_qdq)
    gpu = runtime_info()
    level = trt_api.hardware_level(trt, version, hardware_compatible, gpu["compute_capability"])

    logger = _logger(trt)
    builder = trt.Builder(logger)
    if dla_core is not None:  # before parsing: a device without DLA is refused at once [S1, S9]
        trt_api.require_dla_cores(dla_core, int(builder.num_DLA_cores))
    network = builder.create_network(trt_api.network_flags(trt, major, plan.strongly_typed))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):  # finds .onnx.data sidecars, unlike parse(bytes) [notes 7.7]
        errors = trt_api.parser_errors(parser, summary.node_names) or [logger.last_error()]
        raise EdgesegError(f"TensorRT {version} cannot parse {onnx_path}: {' | '.join(errors)}; fix or exclude those "
                           f"nodes (lint: edgeseg check {onnx_path} --trt {_cli_version(major)}) and re-export")
    input_name, static = _input_shape(network)
    if bounds is None and any(d < 0 for d in static):
        bounds = summary.shape_bounds.get(input_name)  # the export's recorded bounds
    lo, opt, hi = trt_api.profile_shapes(bounds, static, dla=dla_core is not None)
    dynamic = any(d < 0 for d in static)

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    timing_cache_path = Path(timing_cache_path) if timing_cache_path is not None else None
    _attach_timing_cache(config, timing_cache_path, logger)
    profile = None
    if dynamic:
        profile = builder.create_optimization_profile()
        profile.set_shape(input_name, lo, opt, hi)
        config.add_optimization_profile(profile)
    for flag in trt_api.builder_flags(trt, major, precision, strongly_typed=plan.strongly_typed,
                                      implicit_int8=plan.implicit_int8, dla=dla_core is not None,
                                      version_compatible=version_compatible):
        config.set_flag(flag)
    if plan.implicit_int8:  # 8.6 / 10.x only; deprecated 10.1, removed 11 [notes 3]
        # the cache's first line is rewritten for this TensorRT (else it is ignored and calibration runs
        # afresh with no data) [notes 3]
        config.int8_calibrator = trt_api.cache_calibrator(trt, major, cache_bytes, dla=dla_core is not None)
        if profile is not None:  # a separate min = opt = max profile, as samples/common/sampleEngines.cpp does
            calibration = builder.create_optimization_profile()
            calibration.set_shape(input_name, opt, opt, opt)
            config.set_calibration_profile(calibration)
    if dla_core is not None:  # [S1, S9]
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(dla_core)
    if level is not None:
        config.hardware_compatibility_level = level  # 8.6+ [S10]

    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    if serialized is None:
        hint = " (the calibration cache may not match this network)" if plan.implicit_int8 else ""
        raise EdgesegError(f"TensorRT {version} failed to build {onnx_path}{hint}: {logger.last_error()}; check the "
                           "workspace limit (workspace_bytes) and the shape bounds, or build with --backend ort")
    with atomic_path(engine_path) as tmp:
        tmp.write_bytes(memoryview(serialized))
    if timing_cache_path is not None:
        with atomic_path(timing_cache_path) as tmp:
            tmp.write_bytes(memoryview(config.get_timing_cache().serialize()))
    return EngineInfo(str(engine_path), version, gpu["compute_capability"], gpu["gpu"], precision,
                      plan.onnx_precision, plan.strongly_typed, plan.implicit_int8, input_name,
                      {"min": list(lo), "opt": list(opt), "max": list(hi)}, dla_core, bool(version_compatible),
                      trt_api.hardware_level_name(hardware_compatible), int(workspace_bytes), round(seconds, 3),
                      plan.typing, plan.precision_mix)


# ----------------------------------------------------------------------------- runner

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


BUNDLE_MANIFEST = "manifest.json"  # what edgeseg.bundle writes next to model.engine (read here as plain JSON)


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
        trt, cuda = require("tensorrt"), require("pycuda.driver")
        if not self.engine_path.is_file():
            raise EdgesegError(f"engine {self.engine_path} does not exist; build it with `{self._rebuild}`")
        if self.engine_info.get("trt_version"):
            trt_api.require_compatible(self.engine_info, runtime_info(self.device), str(self.engine_path),
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
        self._cuda = cuda
        self._logger = _logger(trt)
        self._runtime = trt.Runtime(self._logger)
        if self.engine_info.get("dla_core") is not None:
            self._runtime.DLA_core = int(self.engine_info["dla_core"])  # [S1, S9]
        if self.engine_info.get("version_compatible"):
            self._runtime.engine_host_code_allowed = True  # runs the lean runtime the plan carries (8.6+) [S10]
        engine = self._runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if engine is None:
            vc = "" if self.engine_info.get("version_compatible") else (
                " (a plan built version-compatible needs version_compatible=True when no bundle manifest sits next "
                "to it)")
            raise EdgesegError(f"TensorRT {trt.__version__} cannot load {self.engine_path} "
                               f"({self._logger.last_error()}); the file is corrupt or was built for another TensorRT "
                               f"version or GPU{vc}; rebuild it with `{self._rebuild}`")
        self._engine = engine
        self._context = engine.create_execution_context()
        ios = {trt.TensorIOMode.INPUT: [], trt.TensorIOMode.OUTPUT: []}
        for i in range(engine.num_io_tensors):  # name-based I/O API, 8.5+ [S1]
            name = engine.get_tensor_name(i)
            ios[engine.get_tensor_mode(name)].append(
                _Tensor(name, trt_api.numpy_dtype(engine.get_tensor_dtype(name)),
                        tuple(int(d) for d in engine.get_tensor_shape(name))))
        inputs, outputs = ios[trt.TensorIOMode.INPUT], ios[trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1 or len(inputs[0].shape) != 4:
            raise EdgesegError(f"{self.engine_path} has inputs {[t.name for t in inputs]} and outputs "
                               f"{[t.name for t in outputs]}; edgeseg engines have one (N, 3, H, W) input and one "
                               "output: rebuild from an edgeseg ONNX")
        self._input, self._output = inputs[0], outputs[0]
        if any(d < 0 for d in self._input.shape):
            lo, _, hi = engine.get_tensor_profile_shape(self._input.name, 0)
            lo, hi = tuple(int(d) for d in lo), tuple(int(d) for d in hi)
        else:
            lo = hi = self._input.shape
        self._spec = InputSpec(self._input.name, self._input.dtype, lo, hi)
        self._stream = cuda.Stream()
        self._buffers = {self._input.name: _Buffer(), self._output.name: _Buffer()}

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

    @property
    def input_spec(self) -> InputSpec:
        if self._spec is None:
            raise EdgesegError("the TensorRT runner is not active; use `with runner:` or call activate() first")
        return self._spec

    # -- inference -------------------------------------------------------------------
    def _set_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Set the input shape; return the output shape it resolves to."""
        if not self._context.set_input_shape(self._input.name, shape):
            raise EdgesegError(f"TensorRT refused input shape {shape} ({self._logger.last_error()}); use a shape "
                               f"between {self._spec.min_shape} and {self._spec.max_shape}")
        return tuple(int(d) for d in self._context.get_tensor_shape(self._output.name))

    def _run(self, stream_handle: int) -> None:
        if not self._context.execute_async_v3(stream_handle):
            raise EdgesegError(f"TensorRT inference failed ({self._logger.last_error()}); check the input and the GPU "
                               "memory, or rebuild the engine")

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
            self._context.set_tensor_address(self._input.name, int(src.device))
            self._context.set_tensor_address(self._output.name, int(dst.device))
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
        x = x.contiguous()
        self._ctx.push()
        try:
            out_shape = self._set_shape(tuple(x.shape))
            out_dtype = torch.from_numpy(np.empty(0, self._output.dtype)).dtype
            out = torch.empty(out_shape, dtype=out_dtype, device=x.device)
            current, stream = self._torch_stream(torch, x.device)
            if stream is not current:
                stream.wait_stream(current)  # x (and out's allocation) are ready on the caller's stream first
            self._context.set_tensor_address(self._input.name, x.data_ptr())
            self._context.set_tensor_address(self._output.name, out.data_ptr())
            self._run(stream.cuda_stream)
            stream.synchronize()  # like TorchRunner: the latency covers the work, and x may be freed after
            return out
        finally:
            self._cuda.Context.pop()


__all__ = ["BUNDLE_MANIFEST", "EXTRA", "EngineInfo", "OnnxSummary", "TensorRTRunner", "build_engine",
           "engine_record_beside", "require", "runtime_info", "summarize_onnx", "tensorrt_available"]
