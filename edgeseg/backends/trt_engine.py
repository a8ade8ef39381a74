"""TensorRT engine building (TensorRT 8.5 / 8.6 / 10.x / 11.x), and the TensorRT backend's bundle artifact hook.

    info = build_engine("model.onnx", "model.engine", precision="fp16", timing_cache_path="trt.cache")
    record = build_artifacts(request)      # the registry hook: the bundle's engine, from engine_source's ONNX

``tensorrt`` and ``pycuda`` are imported inside the functions that need them (through ``trt_env``), so
importing this module never needs them; a missing one raises EdgesegError naming the extra to install.
The version-specific decisions live in ``trt_api`` (pure, unit-tested); this module only makes the
calls, in the order of ../shared/docs/tensorrt-notes.md sections 1 and 3 ([S#] ids). Engines run in
``trt_runner``.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeseg.backends import trt_api, trt_env
from edgeseg.backends.trt_device import device_record, jetpack_here
from edgeseg.backends.artifacts import TIMING_CACHE, role_file
from edgeseg.errors import EdgesegError
from edgeseg.io_utils import atomic_path, ensure_parent

if TYPE_CHECKING:
    from edgeseg.backends.registry import ArtifactRequest

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- ONNX facts

@dataclass(frozen=True)
class OnnxSummary:
    precision: str  # what the graph carries: fp32 | fp16 | int8 (Q/DQ)
    node_names: list[str]  # in graph order, to name parser errors on 8.6
    shape_bounds: dict[str, Any]  # the export's edgeseg.shape_bounds (input name -> min/opt/max)
    fp16_qdq: bool = False  # Q/DQ with FP16 scales: the mixed INT8 + FP16 graph (strongly typed builds)


def summarize_onnx(model: Any) -> OnnxSummary:
    """Precision, node names and recorded shape bounds of an ``onnx.ModelProto`` (weights not needed);
    EdgesegError for edgeseg metadata that is not JSON."""
    import onnx

    from edgeseg.export.metadata import metadata_of

    fp16 = onnx.TensorProto.FLOAT16
    graph = model.graph
    has_qdq = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in graph.node)
    has_fp16 = (any(t.data_type == fp16 for t in graph.initializer)
                or any(v.type.tensor_type.elem_type == fp16 for v in (*graph.input, *graph.output, *graph.value_info))
                or any(n.op_type == "Cast" and any(a.name == "to" and a.i == fp16 for a in n.attribute)
                       for n in graph.node))
    scales = {n.input[1] for n in graph.node if n.op_type == "DequantizeLinear" and len(n.input) > 1}
    fp16_qdq = has_qdq and any(t.name in scales and t.data_type == fp16 for t in graph.initializer)
    bounds = metadata_of(model, "the ONNX").get("shape_bounds") or {}
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
    platform: dict[str, Any] = field(default_factory=dict)  # trt_device.platform_record of the build machine
    device: dict[str, Any] = field(default_factory=dict)  # trt_device.device_record: JetPack, power mode, clocks

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _attach_timing_cache(config: Any, path: Path | None, logger: Any, since: int) -> Any:
    """Attach a timing cache: the file's bytes when it exists, else a new one. A corrupt or foreign
    file makes ``create_timing_cache`` return None (the binding returns the C++ nullptr) after TensorRT
    logs a serialization assertion, or ``set_timing_cache(..., ignore_mismatch=False)`` return False:
    then that expected error is kept out of ``logger.last_error(since)``, a new cache is started and the
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
        raise EdgesegError(f"TensorRT cannot create an empty timing cache ({logger.last_error(since)}); check the "
                           "TensorRT install")
    return cache


def _input_shape(network: Any) -> tuple[str, tuple[int, ...]]:
    """Name and shape (-1 = dynamic) of the network's single input."""
    if network.num_inputs != 1:
        names = [network.get_input(i).name for i in range(network.num_inputs)]
        raise EdgesegError(f"edgeseg engines take one image input, the ONNX has {names}; re-export with edgeseg export")
    tensor = network.get_input(0)
    return tensor.name, tuple(int(d) for d in tensor.shape)


def _calibration_bytes(calibration_cache: str | Path | None) -> bytes | None:
    if calibration_cache is None:
        return None
    if not Path(calibration_cache).is_file():
        raise EdgesegError(f"calibration cache {calibration_cache} does not exist; run edgeseg quantize first")
    return Path(calibration_cache).read_bytes()


def _parse(trt: Any, builder: Any, logger: Any, since: int, onnx_path: Path, summary: OnnxSummary,
           plan: trt_api.PrecisionPlan) -> tuple[Any, Any]:
    """(network, parser) of ``onnx_path`` (the parser owns weights the network uses: keep it until the
    build is done); EdgesegError naming every node the parser refuses."""
    version = trt.__version__
    network = builder.create_network(trt_api.network_flags(trt, trt_api.trt_major(version), plan.strongly_typed))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):  # finds .onnx.data sidecars, unlike parse(bytes) [notes 7.7]
        errors = trt_api.parser_errors(parser, summary.node_names) or [logger.last_error(since)]
        raise EdgesegError(f"TensorRT {version} cannot parse {onnx_path}: {' | '.join(errors)}; fix or exclude those "
                           f"nodes (lint: edgeseg check {onnx_path} --trt {trt_api.release_line(version)}) and "
                           "re-export")
    return network, parser


def _add_profiles(builder: Any, config: Any, input_name: str, shapes: tuple, implicit_int8: bool) -> None:
    """A (min, opt, max) profile for a dynamic input, and for implicit INT8 a separate min = opt = max
    calibration profile, as samples/common/sampleEngines.cpp does."""
    lo, opt, hi = shapes
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, lo, opt, hi)
    config.add_optimization_profile(profile)
    if implicit_int8:
        calibration = builder.create_optimization_profile()
        calibration.set_shape(input_name, opt, opt, opt)
        config.set_calibration_profile(calibration)


def _set_precision_and_device(trt: Any, config: Any, plan: trt_api.PrecisionPlan, cache_bytes: bytes | None,
                              dla_core: int | None, version_compatible: bool, level: Any) -> None:
    major = trt_api.trt_major(trt.__version__)
    facts = trt_api.dla_facts(trt.__version__) if dla_core is not None else None
    for flag in trt_api.builder_flags(trt, major, plan.precision, strongly_typed=plan.strongly_typed,
                                      implicit_int8=plan.implicit_int8, dla=dla_core is not None,
                                      version_compatible=version_compatible,
                                      gpu_fallback=facts.gpu_fallback if facts else True):
        config.set_flag(flag)
    if plan.implicit_int8:  # 8.x / 10.x only; deprecated 10.1, removed 11 [notes 3]
        # the cache's first line is rewritten for this TensorRT (else it is ignored and calibration runs
        # afresh with no data) [notes 3]
        config.int8_calibrator = trt_api.cache_calibrator(trt, major, cache_bytes, dla=dla_core is not None)
    if dla_core is not None:  # [S1, S9]
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(dla_core)
    if level is not None:
        config.hardware_compatibility_level = level  # 8.6+ [S10]


def _serialize(trt: Any, builder: Any, network: Any, config: Any, logger: Any, since: int, onnx_path: Path,
               engine_path: Path, timing_cache_path: Path | None, implicit_int8: bool) -> float:
    """Build, write the plan and the timing cache atomically; the build's seconds."""
    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    if serialized is None:
        hint = " (the calibration cache may not match this network)" if implicit_int8 else ""
        raise EdgesegError(f"TensorRT {trt.__version__} failed to build {onnx_path}{hint}: "
                           f"{logger.last_error(since)}; check the workspace limit (workspace_bytes) and the shape "
                           "bounds, or build with --backend ort")
    with atomic_path(engine_path) as tmp:
        tmp.write_bytes(memoryview(serialized))
    if timing_cache_path is not None:
        with atomic_path(timing_cache_path) as tmp:
            tmp.write_bytes(memoryview(config.get_timing_cache().serialize()))
    return seconds


def build_engine(onnx_path: str | Path, engine_path: str | Path, *, precision: str = "fp32",
                 bounds: Mapping[str, Sequence[int]] | None = None, workspace_bytes: int = 2 << 30,
                 timing_cache_path: str | Path | None = None, dla_core: int | None = None,
                 version_compatible: bool = False, hardware_compatible: bool | str = False,
                 calibration_cache: str | Path | None = None, strongly_typed: bool | None = None,
                 detailed_profile: bool = False) -> EngineInfo:
    """Build a serialized TensorRT engine from an edgeseg ONNX and write it atomically to ``engine_path``.

    ``precision`` must match what the ONNX carries on strongly typed networks (FP16 ONNX, Q/DQ
    ONNX); on 8.6/10.x an FP32 ONNX gets FP16/INT8 builder flags, INT8 then from
    ``calibration_cache`` (implicit INT8). ``bounds``: {"min","opt","max"} NCHW shapes; None takes
    the static input shape, or the export's recorded bounds for a dynamic input. The timing cache
    file is read when present and written back after the build. ``dla_core`` runs on that DLA
    core with GPU fallback (static shapes, FP16/INT8). ``version_compatible`` /
    ``hardware_compatible`` (True = "ampere_plus", or "same_compute_capability") make portable,
    slower plans. ``detailed_profile`` builds with ProfilingVerbosity.DETAILED, so the engine inspector
    (``TensorRTRunner.engine_layers``) tells each layer's precision (the doctor's INT8 check). Every refusal
    and failure is an EdgesegError.
    """
    trt = trt_env.require("tensorrt")
    version, dla = trt.__version__, dla_core is not None
    trt_api.require_build_support(version, dla=dla, jetpack=jetpack_here() if dla else None)
    if version_compatible:
        trt_api.require_version_compatible(version)  # 8.5 has no VERSION_COMPATIBLE
    onnx_path, engine_path = Path(onnx_path), ensure_parent(engine_path)
    timing_cache_path = Path(timing_cache_path) if timing_cache_path is not None else None
    summary = summarize_onnx(_load_onnx_header(onnx_path))
    cache_bytes = _calibration_bytes(calibration_cache)
    plan = trt_api.precision_plan(trt_api.trt_major(version), precision, summary.precision,
                                  strongly_typed=strongly_typed, has_calibration_cache=cache_bytes is not None,
                                  fp16_qdq=summary.fp16_qdq)
    gpu = trt_env.runtime_info()
    level = trt_api.hardware_level(trt, version, hardware_compatible, gpu["compute_capability"],
                                   jetson=bool(gpu.get("platform", {}).get("jetson")))

    logger = trt_env.logger(trt)
    since = logger.mark()  # this build's errors only: the logger is the process's one
    builder = trt.Builder(logger)
    if dla:  # before parsing: a device without DLA is refused at once [S1, S9]
        trt_api.require_dla_cores(dla_core, int(builder.num_DLA_cores))
    network, _parser = _parse(trt, builder, logger, since, onnx_path, summary, plan)
    input_name, static = _input_shape(network)
    if bounds is None and any(d < 0 for d in static):
        bounds = summary.shape_bounds.get(input_name)  # the export's recorded bounds
    shapes = trt_api.profile_shapes(bounds, static, dla=dla)

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    _attach_timing_cache(config, timing_cache_path, logger, since)
    if any(d < 0 for d in static):
        _add_profiles(builder, config, input_name, shapes, plan.implicit_int8)
    _set_precision_and_device(trt, config, plan, cache_bytes, dla_core, version_compatible, level)
    if detailed_profile:
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # 8.2+
    seconds = _serialize(trt, builder, network, config, logger, since, onnx_path, engine_path, timing_cache_path,
                         plan.implicit_int8)
    lo, opt, hi = shapes
    return EngineInfo(str(engine_path), version, gpu["compute_capability"], gpu["gpu"], precision,
                      plan.onnx_precision, plan.strongly_typed, plan.implicit_int8, input_name,
                      {"min": list(lo), "opt": list(opt), "max": list(hi)}, dla_core, bool(version_compatible),
                      trt_api.hardware_level_name(hardware_compatible), int(workspace_bytes), round(seconds, 3),
                      plan.typing, plan.precision_mix, gpu.get("platform", {}), device_record(trt_version=version))


# ----------------------------------------------------------------------------- the bundle's engine (registry hook)

def retarget_cache_file(src: str | Path, dst: str | Path, trt_version: str) -> str:
    """Copy the calibration cache ``src`` to ``dst`` with its first line rewritten for ``trt_version``; returns
    the header (EdgesegError on 11.x: no implicit INT8)."""
    data = trt_api.retarget_calibration_cache(Path(src).read_bytes(), trt_version)
    with atomic_path(dst) as tmp:
        tmp.write_bytes(data)
    return data.split(b"\n", 1)[0].decode()


def retarget_bundle_cache(root: Path, roles: Mapping[str, str], trt_version: str,
                          log: Callable[[str], None] = print) -> str | None:
    """Rewrite the bundle's calibration cache first line for TensorRT ``trt_version`` (8.6 / 10.x), so
    trtexec --calib, nvinfer or an implicit-INT8 build on this device replays it; 11.x has no implicit INT8:
    the cache stays as written. Returns the new header (None: no cache, or kept)."""
    if "calibration_cache" not in roles:
        return None
    name = roles["calibration_cache"]
    if not trt_api.has_implicit_int8(trt_version):
        log(f"TensorRT {trt_version} has no implicit INT8: {name} is kept for TensorRT 8.6 / 10.x")
        return None
    header = retarget_cache_file(root / name, root / name, trt_version)
    log(f"{name} header for TensorRT {trt_version}: {header}")
    return header


def _retarget_weight_axes(request: ArtifactRequest, source: str, version: str) -> None:
    """A trt-layout Q/DQ source made for another TensorRT gets the ConvTranspose weight axis this one takes
    (``trt_api.weight_axes``), rewritten in the staging folder; the manifest's ``calibration.trt_weight_axes``
    record follows."""
    from edgeseg.backends.trt_lint import retarget_weight_axes_file

    if request.precision != "int8" or not retarget_weight_axes_file(request.stage / source, version):
        return
    axes = (request.manifest.get("calibration") or {}).get("trt_weight_axes")
    if isinstance(axes, dict):
        axes[source] = {"trt_target": version, "axes": trt_api.weight_axes(version)}
    request.log(f"{source}: ConvTranspose weight Q/DQ retargeted to the axis TensorRT {version} takes")


def build_artifacts(request: ArtifactRequest) -> dict[str, Any]:
    """The TensorRT backend's artifact hook (``registry.Backend.build_artifacts``): ``model.engine`` in the
    staging folder, from the ONNX ``trt_api.engine_source`` names for this TensorRT, with the bundle's shape
    bounds; on the device (``edgeseg build --from DIR``) the calibration cache is retargeted first. Adds the
    ``engine`` role; returns the manifest's ``engine`` record (which typing and precision mix were used)."""
    version = trt_env.require("tensorrt").__version__
    stage, roles = request.stage, request.roles
    source = trt_api.engine_source(roles, request.precision, version)
    if request.on_device:
        retarget_bundle_cache(stage, roles, version, request.log)
        _retarget_weight_axes(request, source, version)
    bounds = (request.manifest.get("input") or {}).get("shape_bounds") or None
    engine = role_file("engine")
    info = build_engine(stage / source, stage / engine, precision=request.precision,
                        bounds=bounds.get("input") if bounds else None,
                        workspace_bytes=int(request.workspace_gb * (1 << 30)), dla_core=request.dla_core,
                        timing_cache_path=stage / TIMING_CACHE)
    roles["engine"] = engine
    request.log(f"TensorRT {info.trt_version} engine for compute capability {info.compute_capability} -> {engine} "
                f"({info.typing}ly typed, {info.precision_mix})")
    return dict(info.to_dict(), file=engine, source=source)


__all__ = ["EngineInfo", "OnnxSummary", "build_artifacts", "build_engine", "retarget_bundle_cache",
           "retarget_cache_file", "summarize_onnx"]
