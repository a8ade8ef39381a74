"""TensorRT version facts and version-specific decisions, as small pure functions.

This is the one module that knows TensorRT versions: it parses them (``version_tuple``), names the
release lines edgeseg supports (``release_line``), says where DLA exists (``dla_support``), whether
implicit INT8 exists (``has_implicit_int8``), which bundle ONNX an engine is built from
(``engine_source``) and how each version is driven. Every function takes the ``tensorrt`` module (or
a fake of it in tests) and/or a version string and returns plain values, so each branch can be
unit-tested without TensorRT and read against ../shared/docs/tensorrt-notes.md, whose source ids
([S1] etc.) the comments cite. Nothing here imports tensorrt, pycuda or a GPU library;
``trt_engine`` (build) and ``trt_runner`` (run) make the calls.

Supported: building and running with TensorRT 8.5 (JetPack 5.1), 8.6, 10.x and 11.x (12+ is treated like
11: strongly typed only). 8.5 has every call the default build and the runner use (tools/trt_surface/8.5.2.txt,
from the 8.5.2.2 wheel and release/8.5); what it lacks (version- and hardware-compatible plans, parser
``node_name``) is refused in one line or replaced (node names from the ONNX graph).
"""
from __future__ import annotations

import json
import platform
import re
import sys
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeseg.backends.artifacts import PRECISIONS, ROLE_FILES, role_file
from edgeseg.errors import EdgesegError

HARDWARE_LEVELS = ("none", "ampere_plus", "same_compute_capability")
REBUILD = "edgeseg build --from {dir} --backend trt"
Shape = tuple[int, int, int, int]

# Version-compatible plans run on a later runtime of the same major, or across exactly these
# major versions [S10; TensorRT 11.4.1 support matrix: "TensorRT 8 -> 10 and 10 -> 11, no other"].
_CROSS_MAJOR_VC = {(8, 10), (10, 11)}
_CALIBRATION_ALGORITHMS = {"EntropyCalibration2": "IInt8EntropyCalibrator2",
                           "MinMaxCalibration": "IInt8MinMaxCalibrator"}


# ----------------------------------------------------------------------------- versions

def version_tuple(version: str) -> tuple[int, ...]:
    """'10.3.0.26' -> (10, 3, 0, 26); '8.6' -> (8, 6). Non-numeric suffixes ('1.post1') are dropped."""
    parts = []
    for part in str(version).strip().split("."):
        m = re.match(r"\d+", part)
        if not m:
            break
        parts.append(int(m.group()))
    if not parts:
        raise EdgesegError(f"TensorRT version must look like 10.3.0, got {version!r}")
    return tuple(parts)


def trt_major(version: str) -> int:
    """'8.6.1' -> 8, '10.3.0' -> 10, '11.4.1' -> 11."""
    return version_tuple(version)[0]


def _padded(version: str, width: int = 3) -> tuple[int, ...]:
    """'10' -> (10, 0, 0): a version as the first release it names."""
    v = version_tuple(version)
    return v + (0,) * (width - len(v))


def _at_least(version: str, *minimum: int) -> bool:
    return _padded(version, len(minimum)) >= minimum


RELEASE_LINES = ("8.5", "8.6", "10", "11")  # what `edgeseg check --trt` names: 8.5 = JetPack 5.1, 8.6 = JetPack 6.0,
# 10 = 10.0-10.3 (JetPack 6.1), 11 = 11.x


def release_line(version: str) -> str:
    """The release line of a version: '8.5.2' -> '8.5'; '8.6', '8.6.1' -> '8.6'; '10', '10.3' -> '10'; '11.4'
    (and 12+) -> '11'."""
    major, minor = _padded(version, 2)[:2]
    if (major, minor) in ((8, 5), (8, 6)):
        return f"8.{minor}"
    if major >= 10:
        return "10" if major == 10 else "11"
    raise EdgesegError(f"unsupported TensorRT version {version!r}: expected one of {', '.join(RELEASE_LINES)} "
                       "(8.5 = JetPack 5.1, 8.6 = JetPack 6.0, 10 = 10.0-10.3 / JetPack 6.1, 11 = 11.x)")


def require_version_compatible(version: str) -> None:
    """Refuse a version-compatible build or plan on a TensorRT without them (BuilderFlag.VERSION_COMPATIBLE and
    Runtime.engine_host_code_allowed are 8.6+: absent from tools/trt_surface/8.5.2.txt) [S10]."""
    if not _at_least(version, 8, 6):
        raise EdgesegError(f"TensorRT {version} has no version-compatible plans (8.6+); drop version_compatible, or "
                           "build the engine on the device that runs it")


# ----------------------------------------------------------------------------- DLA
# Where DLA exists, per release and platform: the one table lint (trt_lint), build (require_build_support,
# builder_flags) and doctor (environment._dla_row) read. From NVIDIA's TensorRT documentation: "Working with
# DLA" and "Strongly Typed Networks for DLA" of 11.3.0, 11.4.0 and 11.4.1, the 11.4.1 release notes ("TensorRT
# 11.4.1 supports DLA on NVIDIA Jetson AGX Orin when using NVIDIA JetPack 7.2.2 or later ... DLA is not supported
# on Jetson Thor or for NVIDIA DriveOS deployments"; "DLA builds on NVIDIA Jetson AGX Orin use strongly typed
# networks"), and "Migrating TensorRT from 10.x to 11.x on Jetson/JetPack" of 11.4.1 ("Jetson Orin on NVIDIA
# JetPack 6.x is not supported in TensorRT 11.4.1"): 10.7 was the last 10.x release with DLA, 11.0-11.3 have
# none, 11.4.0 has it on Windows on ARM only (beta: no GPU fallback, batch 1). Before 11, DLA is a Jetson
# (Xavier, Orin; JetPack 5.x ships 8.5, JetPack 6.x 8.6 / 10.3) matter. The headers
# (../shared/third_party/tensorrt) and binding surfaces (tools/trt_surface) keep the whole DLA API in every
# release, so they cannot tell; ``builder.num_DLA_cores`` says whether this device has a DLA at all.
JETSON = ("linux", "aarch64")  # (sys.platform, machine) of a Jetson: the platform the lint assumes
_ANY, _JETSON, _WINDOWS_ARM = "any", "Jetson (L4T)", "Windows on ARM"


@dataclass(frozen=True)
class DlaFacts:
    """One row of the DLA table: releases ``first``..``last`` on ``platform``."""

    first: tuple[int, int, int]
    last: tuple[int, int, int]
    platform: str  # _JETSON, _WINDOWS_ARM or _ANY (before 11: builder.num_DLA_cores tells)
    devices: str  # what the row covers, for messages
    typing: str  # "weak or strong" (flags or the ONNX) | "strong" (the ONNX decides every tensor's type)
    gpu_fallback: bool  # BuilderFlag.GPU_FALLBACK runs layers DLA cannot on the GPU
    min_jetpack: tuple[int, ...] | None = None  # JetPack the release needs for DLA on a Jetson


DLA_TABLE = (
    DlaFacts((8, 5, 0), (10, 7, 999), _ANY, "Jetson Xavier / Orin (JetPack 5.1: 8.5, JetPack 6.x: 8.6 / 10.3)",
             "weak or strong", True),
    DlaFacts((11, 4, 0), (11, 4, 0), _WINDOWS_ARM, "Windows on ARM (beta; batch 1)", "strong", False),
    DlaFacts((11, 4, 1), (999, 0, 0), _JETSON, "Jetson AGX Orin with JetPack >= 7.2.2 (not Thor)", "strong", True,
             (7, 2, 2)),
    DlaFacts((11, 4, 1), (999, 0, 0), _WINDOWS_ARM, "Windows on ARM (beta; batch 1)", "strong", False),
)


def _platform_of(system: str, machine: str) -> str:
    arm = machine.lower() in ("arm64", "aarch64")
    return _JETSON if system.startswith("linux") and arm else _WINDOWS_ARM if system == "win32" and arm else "other"


def _jetpack_tuple(jetpack: str | None) -> tuple[int, ...] | None:
    """'7.2.2' -> (7, 2, 2); '7.2 EA' -> (7, 2, 0); None / unparsable -> None."""
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", jetpack or "")
    return (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)) if m else None


def dla_facts(version: str, system: str | None = None, machine: str | None = None) -> DlaFacts | None:
    """The ``DLA_TABLE`` row for TensorRT ``version`` on this platform (``sys.platform``, machine), or None. A
    version given as a line ('11') is its first release (11.0)."""
    system = sys.platform if system is None else system
    machine = platform.machine() if machine is None else machine
    v = _padded(version)[:3]  # '11.4.0.106' is release 11.4.0
    here = _platform_of(system, machine)
    return next((r for r in DLA_TABLE if r.first <= v <= r.last and r.platform in (here, _ANY)), None)


def dla_support(version: str, system: str | None = None, machine: str | None = None,
                jetpack: str | None = None) -> str | None:
    """None when TensorRT ``version`` builds for DLA on this platform (``sys.platform``, machine; ``jetpack``:
    the Jetson's JetPack when known, e.g. ``trt_device`` 's record), else the reason (one phrase)."""
    facts = dla_facts(version, system, machine)
    if facts is not None:
        have = _jetpack_tuple(jetpack)
        if facts.min_jetpack and have and have < facts.min_jetpack:
            need = ".".join(map(str, facts.min_jetpack))
            return (f"TensorRT {version} has DLA only on {facts.devices}, this Jetson has JetPack {jetpack} "
                    f"(JetPack < {need} must stay on TensorRT 10.x up to 10.7)")
        return None
    v = _padded(version)[:3]
    rows = [r for r in DLA_TABLE if r.first <= v <= r.last]
    if rows:
        where = " and ".join(r.devices for r in rows)
        return f"TensorRT {version} has DLA only on {where} (TensorRT docs, 'Working with DLA')"
    if v[0] == 10:
        return (f"TensorRT {version} has no DLA (10.7 was the last 10.x release with DLA; JetPack 6.1 ships "
                "TensorRT 10.3)")
    if v[0] >= 11:
        return (f"TensorRT {version}: no DLA in 11.0-11.3 (11.4.0 has it on Windows on ARM only, 11.4.1+ on "
                f"Jetson AGX Orin with JetPack >= 7.2.2 and Windows on ARM)")
    return f"TensorRT {version} has no DLA support in edgeseg (8.5+)"


def require_build_support(version: str, *, dla: bool = False, system: str | None = None,
                          machine: str | None = None, jetpack: str | None = None) -> None:
    """Refuse TensorRT versions edgeseg cannot build with (< 8.5, 9.x), and DLA where ``DLA_TABLE`` has none
    for this version, platform and JetPack (``dla_support``)."""
    if not _at_least(version, 8, 5) or trt_major(version) == 9:
        raise EdgesegError(f"edgeseg builds engines with TensorRT 8.5, 8.6, 10.x or 11.x, found {version}; upgrade "
                           "TensorRT (JetPack 5.1 ships 8.5, 6.0 ships 8.6, 6.1 ships 10.3) or use --backend ort")
    reason = dla_support(version, system, machine, jetpack) if dla else None
    if reason:
        raise EdgesegError(f"--dla-core cannot be used: {reason}; drop --dla-core, or build on a Jetson with "
                           "TensorRT 8.5-10.7 (JetPack 5.1-6.x) or 11.4.1+ (Jetson AGX Orin, JetPack >= 7.2.2)")


def require_dla_cores(dla_core: int, cores: int) -> None:
    """Refuse a DLA core this device lacks (``cores`` = builder.num_DLA_cores), before any parsing."""
    if cores <= 0:
        raise EdgesegError(f"--dla-core {dla_core} asked for but this device has no DLA (num_DLA_cores is 0; DLA "
                           "exists on Jetson AGX Orin and Orin NX); drop --dla-core")
    if not 0 <= dla_core < cores:
        raise EdgesegError(f"DLA core {dla_core} asked for but this device has {cores} DLA core(s); pass --dla-core "
                           f"0{' or 1' if cores > 1 else ''}, or drop the option")


# ----------------------------------------------------------------------------- which bundle ONNX an engine comes from

def engine_role(precision: str, trt_version: str, available: Container[str] = ROLE_FILES) -> str:
    """The bundle role (among ``available``; default: every role) TensorRT ``trt_version`` builds a ``precision``
    engine from. FP32 / FP16: that precision's ONNX (FP16 from the FP16 ONNX on every version). INT8: the
    FP32-scale Q/DQ graph, weakly typed with FP16|INT8 flags, on 8.5 / 8.6 / 10.x; the FP16-scale Q/DQ graph
    (strongly typed INT8 + FP16) on 11.x, which has no precision flags. Either way unquantized layers run
    FP16. A bundle lacking the role falls back to its FP32 ONNX (the build then says what is missing)."""
    if precision != "int8":
        return precision if precision in available else "fp32"
    if trt_major(trt_version) >= 11 and "int8_trt_fp16" in available:
        return "int8_trt_fp16"
    return "int8_trt" if "int8_trt" in available else "fp32"


def engine_source(roles: Mapping[str, str], precision: str, trt_version: str) -> str:
    """The file name, in a bundle's ``roles``, that TensorRT ``trt_version`` builds a ``precision`` engine from."""
    return roles[engine_role(precision, trt_version, roles)]


# ----------------------------------------------------------------------------- precision

def onnx_precision(has_qdq: bool, has_fp16: bool) -> str:
    """The precision an ONNX carries by itself: "int8" (Q/DQ nodes), "fp16" (FP16 tensors) or "fp32"."""
    return "int8" if has_qdq else "fp16" if has_fp16 else "fp32"


@dataclass(frozen=True)
class PrecisionPlan:
    """How a build gets its precision: a strongly typed network (the ONNX decides) or builder flags."""

    precision: str  # what the user asked for: fp32 | fp16 | int8
    onnx_precision: str  # what the ONNX carries: fp32 | fp16 | int8
    strongly_typed: bool
    implicit_int8: bool  # INT8 builder flag + calibration cache (8.x / 10.x only)
    fp16_qdq: bool = False  # a Q/DQ graph with FP16 scales and FP16 compute between the pairs (mixed graph)

    @property
    def typing(self) -> str:
        return "strong" if self.strongly_typed else "weak"

    @property
    def precision_mix(self) -> str:
        """What the layers run in, for the manifest: e.g. "int8 (Q/DQ) + fp16 (builder flags)"."""
        if self.precision == "fp32":
            return "fp32"
        if self.precision == "fp16":
            return "fp16 (from the ONNX)" if self.onnx_precision == "fp16" else "fp16 (builder flag) + fp32 fallback"
        source = "int8 (calibration cache)" if self.implicit_int8 else "int8 (Q/DQ)"
        if not self.strongly_typed:
            return f"{source} + fp16 (builder flags)"
        return f"{source} + " + ("fp16 (FP16 graph)" if self.fp16_qdq else "fp32")


def precision_plan(major: int, precision: str, onnx: str, *, strongly_typed: bool | None = None,
                   has_calibration_cache: bool = False, fp16_qdq: bool = False) -> PrecisionPlan:
    """Resolve and validate how ``precision`` is obtained from an ONNX carrying ``onnx`` precision.

    The precision mix is the same on every version: unquantized layers of an INT8 engine run FP16.
    ``strongly_typed=None`` picks: always on 11+; on 10.x only when the ONNX carries FP16 itself (an
    FP16 ONNX, or a Q/DQ graph with FP16 scales, ``fp16_qdq``): a Q/DQ graph with FP32 scales is built
    weakly typed with FP16|INT8 flags, as on 8.6, because strongly typed it would run every
    unquantized layer in FP32 [S1, S2, notes 4]. On 11.x such a graph is refused unless
    ``strongly_typed=True`` is passed explicitly (INT8 + FP32). Never silently builds another
    precision than asked: mismatches raise EdgesegError.
    """
    if precision not in PRECISIONS:
        raise EdgesegError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if onnx not in PRECISIONS:
        raise EdgesegError(f"ONNX precision must be one of {', '.join(PRECISIONS)}, got {onnx!r}")
    fp16_qdq = bool(fp16_qdq and onnx == "int8")
    if fp16_qdq and major < 10:
        raise EdgesegError(f"TensorRT {major}.x parses opset <= 17 and FP16-scale Q/DQ graphs need opset 19; build "
                           f"from the FP32-scale Q/DQ graph ({role_file('int8_trt')}) instead")
    explicit = strongly_typed is not None
    if strongly_typed is None:
        strongly_typed = major >= 11 or (major == 10 and (onnx == "fp16" or fp16_qdq))
    if strongly_typed and major < 10:
        raise EdgesegError(f"TensorRT {major}.x has no strongly typed networks (STRONGLY_TYPED is 10.0+); "
                           "build without strongly_typed=True")
    if not strongly_typed and major >= 11:
        raise EdgesegError("TensorRT 11 networks are always strongly typed; drop strongly_typed=False")
    if major >= 11 and onnx == "int8" and not fp16_qdq and not explicit:
        raise EdgesegError(f"TensorRT 11 builds Q/DQ graphs strongly typed, so FP32 Q/DQ scales would run every "
                           "unquantized layer (Resize, head, Add/Concat) in FP32; build from the FP16-scale Q/DQ graph "
                           f"({role_file('int8_trt_fp16')}, or `edgeseg quantize --layout trt --fp16-scales` on an "
                           "opset >= 19 export), or pass strongly_typed=True to accept INT8 + FP32")
    implicit = precision == "int8" and onnx == "fp32"
    if implicit and major >= 11:
        raise EdgesegError("TensorRT 11 has no implicit INT8 calibration (no INT8 flag, no calibrators); build "
                           f"from the Q/DQ ONNX ({role_file('int8_trt_fp16')}, quantized with --layout trt "
                           "--fp16-scales) instead")
    if implicit and strongly_typed:
        raise EdgesegError("implicit INT8 (calibration cache) needs a weakly typed network; pass "
                           "strongly_typed=False or build from the Q/DQ ONNX")
    if implicit and not has_calibration_cache:
        raise EdgesegError("precision int8 from an ONNX without Q/DQ nodes needs a calibration cache "
                           "(calibration_cache=...); pass the cache `edgeseg quantize` wrote or build from the "
                           "Q/DQ ONNX")
    if has_calibration_cache and not implicit:
        raise EdgesegError(f"a calibration cache applies only to implicit INT8 (precision int8 from an FP32 ONNX); "
                           f"this build is precision {precision} from an {onnx.upper()} ONNX: drop calibration_cache")
    if onnx != precision and not implicit and (strongly_typed or onnx != "fp32"):
        where = "a strongly typed network takes its precision from the ONNX" if strongly_typed else \
            f"the ONNX already carries {onnx.upper()}"
        raise EdgesegError(f"precision {precision} asked but the ONNX is {onnx.upper()} ({where}); build from the "
                           f"{precision.upper()} ONNX of the bundle or ask for precision {onnx}")
    return PrecisionPlan(precision, onnx, strongly_typed, implicit, fp16_qdq)


# ----------------------------------------------------------------------------- network and builder flags

def network_flags(trt: Any, major: int, strongly_typed: bool) -> int:
    """``create_network`` flags: 8.6 needs EXPLICIT_BATCH for the ONNX parser; 10.x sets STRONGLY_TYPED
    when asked (EXPLICIT_BATCH is deprecated and ignored there); 11.x takes 0 (always strongly typed,
    EXPLICIT_BATCH removed) [S1, S2, notes 7.1-7.2]."""
    creation = trt.NetworkDefinitionCreationFlag
    if major >= 11:
        return 0
    if major == 10:
        return (1 << int(creation.STRONGLY_TYPED)) if strongly_typed else 0
    if strongly_typed:
        raise EdgesegError(f"TensorRT {major}.x has no STRONGLY_TYPED network flag (10.0+); build weakly typed")
    return 1 << int(creation.EXPLICIT_BATCH)


def builder_flags(trt: Any, major: int, precision: str, *, strongly_typed: bool, implicit_int8: bool = False,
                  dla: bool = False, version_compatible: bool = False, gpu_fallback: bool = True) -> list[Any]:
    """The ``trt.BuilderFlag`` members to set.

    Weakly typed (8.6, 10.x): FP16 for fp16; INT8 + FP16 for int8 (Q/DQ or implicit), so layers
    left unquantized run in FP16. Strongly typed (10.x opt-in, all of 11.x): no precision flags,
    the ONNX carries FP16 / Q/DQ; 11.x has no FP16/INT8 members at all [S1, S6]. DLA adds
    GPU_FALLBACK (where the platform has it: ``DlaFacts.gpu_fallback``, not Windows on ARM) and runs FP16/INT8
    only [S9]; VERSION_COMPATIBLE where asked (8.6+) [S10].
    """
    if precision not in PRECISIONS:
        raise EdgesegError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if implicit_int8 and (major >= 11 or strongly_typed or precision != "int8"):
        raise EdgesegError("implicit INT8 needs TensorRT 8.6/10.x (or 8.5), a weakly typed network and precision "
                           "int8; build from the Q/DQ ONNX instead")
    if dla and precision == "fp32":
        raise EdgesegError("DLA runs FP16 or INT8 only, got precision fp32; build with --precision fp16 or int8, "
                           "or drop --dla-core")
    flag = trt.BuilderFlag
    flags: list[Any] = []
    if not strongly_typed:
        if major >= 11:
            raise EdgesegError("TensorRT 11 networks are always strongly typed; precision comes from the ONNX")
        if precision in ("fp16", "int8"):
            flags.append(flag.FP16)
        if precision == "int8":
            flags.append(flag.INT8)
    if dla and gpu_fallback:
        flags.append(flag.GPU_FALLBACK)
    if version_compatible:
        flags.append(flag.VERSION_COMPATIBLE)
    return flags


# ----------------------------------------------------------------------------- optimization profile

def _shape(value: Any, what: str) -> Shape:
    try:
        shape = tuple(int(d) for d in value)
    except (TypeError, ValueError):
        raise EdgesegError(f"{what} must be 4 integers (N, C, H, W), got {value!r}; fix the shape bounds") from None
    if len(shape) != 4:
        raise EdgesegError(f"{what} must be 4 integers (N, C, H, W), got {shape}; fix the shape bounds")
    return shape  # type: ignore[return-value]


def profile_shapes(bounds: Mapping[str, Sequence[int]] | None, static_shape: Sequence[int] | None = None, *,
                   dla: bool = False) -> tuple[Shape, Shape, Shape]:
    """(min, opt, max) NCHW shapes for the optimization profile.

    ``bounds``: {"min": shape, "opt": shape, "max": shape} from the export's shape bounds, or None
    to use ``static_shape`` (the network input's shape; -1 marks a dynamic dim, which then needs
    bounds). Static dims of ``static_shape`` must agree with the bounds. DLA has no dynamic
    shapes, so it needs min = opt = max [S9, notes 7.12].
    """
    static = tuple(int(d) for d in static_shape) if static_shape is not None else None
    if bounds is None:
        if static is None or len(static) != 4 or any(d < 1 for d in static):
            raise EdgesegError(f"the ONNX input shape {static} has dynamic dims but no shape bounds were given; pass "
                               "bounds={'min': ..., 'opt': ..., 'max': ...} or re-export with edgeseg export")
        return static, static, static  # type: ignore[return-value]
    missing = [k for k in ("min", "opt", "max") if k not in bounds]
    if missing:
        raise EdgesegError(f"shape bounds need min, opt and max, missing {missing}; pass the input's entry of the "
                           "export's shape_bounds (e.g. meta['shape_bounds']['input'])")
    lo, opt, hi = (_shape(bounds[k], f"shape bound {k}") for k in ("min", "opt", "max"))
    if any(d < 1 for d in lo) or not all(a <= b <= c for a, b, c in zip(lo, opt, hi)):
        raise EdgesegError(f"shape bounds must satisfy 1 <= min <= opt <= max per dim, got min {lo}, opt {opt}, "
                           f"max {hi}; fix the bounds")
    if static is not None:
        if len(static) != 4:
            raise EdgesegError(f"the ONNX input has rank {len(static)}; edgeseg builds (N, 3, H, W) image models")
        clash = [i for i, d in enumerate(static) if d >= 1 and not lo[i] == opt[i] == hi[i] == d]
        if clash:
            raise EdgesegError(f"the ONNX input {tuple(static)} is static in dims {clash} but the bounds vary them "
                               f"(min {lo}, max {hi}); use the bounds the ONNX was exported with")
    if dla and not lo == opt == hi:
        raise EdgesegError(f"DLA has no dynamic shapes: min = opt = max is required, got min {lo}, opt {opt}, "
                           f"max {hi}; export with a static shape or pass equal bounds")
    return lo, opt, hi


# ----------------------------------------------------------------------------- portability

def hardware_level_name(value: bool | str) -> str:
    """Normalize the ``hardware_compatible`` argument: False -> "none", True -> "ampere_plus"."""
    if value is True:
        return "ampere_plus"
    if value is False or value is None:
        return "none"
    name = str(value).lower()
    if name not in HARDWARE_LEVELS:
        raise EdgesegError(f"hardware compatibility must be one of {', '.join(HARDWARE_LEVELS)} (or True/False), "
                           f"got {value!r}")
    return name


def _cc(value: Any) -> tuple[int, int]:
    """'8.7' or (8, 7) -> (8, 7)."""
    parts = value.split(".") if isinstance(value, str) else list(value)
    try:
        major, minor = (int(p) for p in parts)
    except (TypeError, ValueError):
        raise EdgesegError(f"compute capability must look like 8.7, got {value!r}") from None
    return major, minor


NO_HARDWARE_COMPATIBILITY_ON_JETSON = (
    "hardware-compatible plans are not supported on Jetson (TensorRT developer guide, 'Hardware Compatibility': "
    "supported only for Ampere and later GPUs, not on NVIDIA DRIVE OS or JetPack)")


def hardware_level(trt: Any, version: str, level: bool | str, compute_capability: str | None = None, *,
                   jetson: bool = False) -> Any:
    """The ``trt.HardwareCompatibilityLevel`` member for ``config.hardware_compatibility_level``, or
    None for the default (plan tied to this GPU). AMPERE_PLUS needs TensorRT 8.6+ and an Ampere or
    newer build GPU (compute capability >= 8.0); SAME_COMPUTE_CAPABILITY needs 10.9+ [S1, S10]; neither
    exists on a Jetson (``jetson``: the build machine is one)."""
    name = hardware_level_name(level)
    if name == "none":
        return None
    if jetson:
        raise EdgesegError(f"hardware compatibility {name} cannot be used: {NO_HARDWARE_COMPATIBILITY_ON_JETSON}; "
                           "drop the option (a Jetson plan runs on the Jetson model it was built on)")
    if name == "ampere_plus":
        if not _at_least(version, 8, 6):
            raise EdgesegError(f"hardware-compatible plans need TensorRT 8.6+, found {version}; drop the option")
        if compute_capability is not None and _cc(compute_capability) < (8, 0):
            raise EdgesegError(f"hardware compatibility ampere_plus needs an Ampere or newer build GPU (compute "
                               f"capability >= 8.0), this GPU is {compute_capability}; build on a newer GPU or "
                               "drop the option")
        return trt.HardwareCompatibilityLevel.AMPERE_PLUS
    if not _at_least(version, 10, 9):
        raise EdgesegError(f"hardware compatibility same_compute_capability needs TensorRT 10.9+, found {version}; "
                           "use ampere_plus or upgrade TensorRT")
    return trt.HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY


def _version_runs(built: str, runtime: str, version_compatible: bool) -> bool:
    b, r = version_tuple(built), version_tuple(runtime)
    width = max(len(b), len(r))
    b, r = b + (0,) * (width - len(b)), r + (0,) * (width - len(r))
    if b == r:
        return True
    if not version_compatible or b[:2] < (8, 6) or r < b:
        return False
    return b[0] == r[0] or (b[0], r[0]) in _CROSS_MAJOR_VC  # [S10]


def _platform_key(record: Mapping[str, Any]) -> tuple[Any, Any, bool]:
    return record.get("os"), record.get("arch"), bool(record.get("jetson"))


def platform_problems(built: Mapping[str, Any] | None, runtime: Mapping[str, Any] | None, level: str) -> list[str]:
    """Why a plan built on platform ``built`` (``trt_device.platform_record``: os, arch, jetson) with hardware
    compatibility ``level`` cannot run on platform ``runtime``. "Serialized engines are not portable across
    platforms" (TensorRT 8.5.3 / 8.6.1 / 10.x support matrix), whatever their compatibility level, and
    hardware-compatible plans do not exist on Jetson. A record without a platform (older manifests) is not
    compared, but a hardware-compatible plan is still refused on a Jetson."""
    from edgeseg.backends.trt_device import platform_text

    problems = []
    if built and runtime and _platform_key(built) != _platform_key(runtime):
        problems.append(f"built on {platform_text(built)}, this machine is {platform_text(runtime)} (plans are not "
                        "portable across platforms)")
    if level != "none" and runtime and runtime.get("jetson"):
        problems.append(f"the plan is hardware-compatible ({level}) and {NO_HARDWARE_COMPATIBILITY_ON_JETSON}")
    return problems


def engine_compatibility(built: Mapping[str, Any], runtime: Mapping[str, Any]) -> list[str]:
    """Human-readable reasons a plan built as ``built`` cannot run on ``runtime``; empty = compatible.

    Both dicts hold ``trt_version`` and ``compute_capability`` ("8.7"); ``built`` also
    ``version_compatible`` (bool) and ``hardware_compatible`` (False/True or a level name), and
    either may hold ``gpu`` (the device name) and ``platform`` (``platform_problems``). A plan runs
    only on the TensorRT version, GPU and platform it was built on, unless built version / hardware
    compatible [S10, notes 7.13]; hardware compatibility never crosses platforms.
    """
    for record, what in ((built, "engine record"), (runtime, "runtime record")):
        missing = [k for k in ("trt_version", "compute_capability") if not record.get(k)]
        if missing:
            raise EdgesegError(f"the {what} lacks {', '.join(missing)}; rebuild the engine so its manifest records them")
    problems = []
    b_ver, r_ver = str(built["trt_version"]), str(runtime["trt_version"])
    vc = bool(built.get("version_compatible", False))
    if not _version_runs(b_ver, r_ver, vc):
        why = ("version-compatible plans run only on the same or a later TensorRT of the same major, or 8 -> 10 "
               "and 10 -> 11" if vc else "the plan is not version-compatible")
        problems.append(f"built with TensorRT {b_ver}, this runtime is TensorRT {r_ver} ({why})")
    level = hardware_level_name(built.get("hardware_compatible", False))
    b_cc, r_cc = _cc(built["compute_capability"]), _cc(runtime["compute_capability"])
    if level == "ampere_plus":
        if r_cc < (8, 0):
            problems.append(f"built for Ampere or newer GPUs (compute capability >= 8.0), this GPU is "
                            f"{r_cc[0]}.{r_cc[1]}")
    elif b_cc != r_cc:
        problems.append(f"built for compute capability {b_cc[0]}.{b_cc[1]}, this GPU is {r_cc[0]}.{r_cc[1]}")
    elif level == "none" and built.get("gpu") and runtime.get("gpu") and built["gpu"] != runtime["gpu"]:
        problems.append(f"built on {built['gpu']}, this GPU is {runtime['gpu']} (the plan is not hardware-compatible)")
    return problems + platform_problems(built.get("platform"), runtime.get("platform"), level)


def incompatibility_message(problems: Sequence[str], engine: str, bundle_dir: str) -> str:
    """One line: which engine, every difference, and the command that rebuilds it on this device."""
    return (f"engine {engine} cannot run here: {'; '.join(problems)}; rebuild it on this device with "
            f"`{REBUILD.format(dir=bundle_dir)}`")


def require_compatible(built: Mapping[str, Any], runtime: Mapping[str, Any], engine: str, bundle_dir: str) -> None:
    """Raise EdgesegError naming every difference (see ``engine_compatibility``) and the rebuild command."""
    problems = engine_compatibility(built, runtime)
    if problems:
        raise EdgesegError(incompatibility_message(problems, engine, bundle_dir))


# ----------------------------------------------------------------------------- I/O types

_NUMPY_TYPES = {"FLOAT": "float32", "HALF": "float16", "INT8": "int8", "INT32": "int32", "INT64": "int64",
                "BOOL": "bool", "UINT8": "uint8"}


def numpy_dtype(trt_dtype: Any) -> np.dtype:
    """numpy dtype of a ``trt.DataType`` (by member name, so fakes and every version work alike).

    ``trt.nptype`` would do for the types it knows (the real 8.6.1, 10.3, 10.16 and 11.4 wheels'
    __init__.py all map ``bool: np.bool_``, which every numpy has; an earlier comment here claimed
    8.x used the removed ``np.bool``: wrong); it lacks INT64 and raises a TypeError for the rest.
    The names are checked against each version's DataType in tools/trt_surface."""
    name = getattr(trt_dtype, "name", str(trt_dtype))
    if name not in _NUMPY_TYPES:
        raise EdgesegError(f"engine I/O type {name} has no numpy equivalent; rebuild from an ONNX with float32, "
                           "float16 or int32 inputs and outputs")
    return np.dtype(_NUMPY_TYPES[name])


# ----------------------------------------------------------------------------- parser errors

def _call(obj: Any, method: str) -> Any:
    """``obj.method()`` where the binding has it (node_name / node_operator are 10.x+ [S4]), else None."""
    fn = getattr(obj, method, None)
    return fn() if callable(fn) else None


def parser_errors(parser: Any, node_names: Sequence[str] | None = None) -> list[str]:
    """One line per ``parser.get_error(i)``: node index, name and operator, error code, description [S4].

    ``node_names`` (the ONNX graph's node names in order) names nodes where the binding has no
    ``node_name()`` (8.6). A node index of -1 means the error is not tied to a node.
    """
    lines = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        node = int(err.node())
        name = _call(err, "node_name") or (node_names[node] if node_names and 0 <= node < len(node_names) else "")
        op = _call(err, "node_operator") or ""
        where = "model" if node < 0 else f"node {node}" + (f" {name!r}" if name else "") + (f" ({op})" if op else "")
        lines.append(f"{where}: {err.code()}: {' '.join(str(err.desc()).split())}")
    return lines


# ----------------------------------------------------------------------------- implicit INT8 (8.x / 10.x)

NO_IMPLICIT_INT8 = ("TensorRT {version} has no implicit INT8 calibration (no INT8 flag, no calibrators, no calibration "
                    "cache since 11.0); build from the Q/DQ model instead (the bundle's " + role_file("int8_trt_fp16")
                    + ", or `edgeseg quantize --layout trt --fp16-scales`)")
JETPACK_6_1_TRT = "10.3.0"  # the TensorRT JetPack 6.1 / 6.2 ship: the cache header when none is installed here


def has_implicit_int8(version: str) -> bool:
    """True for TensorRT 8.5 / 8.6 / 10.x (INT8 builder flag, calibrators, calibration caches); removed in 11.0."""
    return trt_major(version) < 11


def require_implicit_int8(version: str) -> None:
    """EdgesegError naming the Q/DQ graph to build from when TensorRT ``version`` has no implicit INT8."""
    if not has_implicit_int8(version):
        raise EdgesegError(NO_IMPLICIT_INT8.format(version=version))


def version_code(version: str) -> int:
    """NV_TENSORRT_VERSION of a release, the number in a calibration cache's first line.

    8.x: MAJOR*1000+MINOR*100+PATCH (release/8.6 include/NvInferRuntimeBase.h kNV_TENSORRT_VERSION_IMPL:
    8.6.1 -> 8601); 10.x and later: MAJOR*10000+MINOR*100+PATCH (NV_TENSORRT_VERSION_INT in
    release/10.3, 10.16 and 11.1: 10.3.0 -> 100300, as in NGC's TrafficCamNet cache). The formula of
    each release is recorded in tools/trt_surface/<version>.txt, which the tests compare with."""
    major, minor, patch = (version_tuple(version) + (0, 0))[:3]
    return major * (10000 if major >= 10 else 1000) + minor * 100 + patch


def calibration_cache_header(version: str, algorithm: str) -> str:
    """``TRT-<version code>-<Algorithm>``: the first line TensorRT ``version`` expects [S14]. 11.x refused."""
    require_implicit_int8(version)
    if algorithm not in _CALIBRATION_ALGORITHMS:
        raise EdgesegError(f"calibration cache algorithm must be one of {', '.join(_CALIBRATION_ALGORITHMS)}, got "
                           f"{algorithm!r}")
    return f"TRT-{version_code(version)}-{algorithm}"


def calibration_algorithm(cache: bytes) -> str:
    """The algorithm named in a cache's header ``TRT-<version code>-<Algorithm>`` [S14]; EdgesegError if
    the header is not one edgeseg can replay (EntropyCalibration2, MinMaxCalibration)."""
    header = cache.split(b"\n", 1)[0].decode("ascii", "replace").strip()
    m = re.fullmatch(r"TRT-\d+-(\w+)", header)
    if not m or m.group(1) not in _CALIBRATION_ALGORITHMS:
        raise EdgesegError(f"calibration cache header must be TRT-<version>-EntropyCalibration2 or "
                           f"-MinMaxCalibration, got {header[:60]!r}; rewrite it with edgeseg quantize")
    return m.group(1)


def retarget_calibration_cache(cache: bytes, version: str) -> bytes:
    """``cache`` with its first line rewritten for TensorRT ``version`` (same algorithm, same table).

    TensorRT ignores a table whose header names another version or algorithm and then calibrates
    afresh, which fails without data [notes 3]; so a cache is retargeted to the TensorRT that reads it."""
    algorithm = calibration_algorithm(cache)
    table = cache.split(b"\n", 1)[1] if b"\n" in cache else b""
    return (calibration_cache_header(version, algorithm) + "\n").encode() + table


def cache_calibrator(trt: Any, major: int, cache: bytes, *, dla: bool = False) -> Any:
    """An ``IInt8EntropyCalibrator2`` (or ``IInt8MinMaxCalibrator``, per the cache header) that replays
    ``cache`` with its header rewritten for ``trt.__version__``: ``get_batch`` returns None, so
    TensorRT runs no GPU calibration pass [S1, notes 3]. TensorRT 8.x / 10.x only (calibrators are
    removed in 11); DLA requires EntropyCalibration2."""
    if major >= 11:
        raise EdgesegError(NO_IMPLICIT_INT8.format(version=getattr(trt, "__version__", major)))
    algorithm = calibration_algorithm(cache)
    if dla and algorithm != "EntropyCalibration2":
        raise EdgesegError(f"DLA needs an EntropyCalibration2 cache, got {algorithm}; recalibrate with the entropy "
                           "method")
    replay = retarget_calibration_cache(cache, trt.__version__)
    base = getattr(trt, _CALIBRATION_ALGORITHMS[algorithm])

    class CacheCalibrator(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)  # pybind11 trampolines need the base initializer
            self.cache = replay  # kept alive: TensorRT reads the buffer during the build

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: list[str]) -> None:
            return None

        def read_calibration_cache(self) -> bytes:
            return self.cache

        def write_calibration_cache(self, cache: Any) -> None:
            return None

    return CacheCalibrator()


# ----------------------------------------------------------------------------- engine inspector

# Words of the inspector's "Format/Datatype" strings -> precision ("Row major linear FP32", "Thirty-two wide
# channel vectorized row major Int8 format", "Channel major FP16 format where channel % 8 == 0", and the bare
# kernel-generator names "Int8", "Half", "Float"), as NVIDIA's trt-engine-explorer reads them
# (tools/experimental/trt-engine-explorer/trex/activations.py, release/8.5-10.16).
_FORMAT_PRECISIONS = (("int8", ("Int8", "INT8")), ("fp16", ("FP16", "Half")), ("bf16", ("BFloat16", "BF16")),
                      ("fp8", ("FP8",)), ("fp32", ("FP32", "Float")), ("int32", ("Int32", "INT32")))


@dataclass(frozen=True)
class LayerPrecision:
    """One engine layer as the engine inspector describes it."""

    name: str  # the fused layer's name: the ONNX nodes it holds, joined with " + "
    kind: str  # ParameterType and LayerType, e.g. "Convolution CaskConvolution", "ConvActPool ConvActPool"
    precision: str  # of its first input ("int8", "fp16", ...; "" when the inspector does not say)
    weights: str  # the weights' type ("Int8", "Half", "Float"; "" for layers without weights)

    @property
    def convolution(self) -> bool:
        return "onv" in self.kind  # Convolution, Deconvolution, ConvActPool; Cask(De)Convolution*, ...

    @property
    def transposed(self) -> bool:
        return "Deconv" in self.kind or "ConvTranspose" in self.name

    @property
    def int8(self) -> bool:
        return self.precision == "int8" or self.weights.lower() == "int8"


def tensor_precision(fmt: str) -> str:
    """'Thirty-two wide channel vectorized row major Int8 format' -> 'int8'; '' when no known word is in it."""
    words = set(re.findall(r"[A-Za-z0-9]+", fmt))
    return next((p for p, names in _FORMAT_PRECISIONS if words & set(names)), "")


def engine_layers(info_json: str) -> list[LayerPrecision]:
    """The layers of ``IEngineInspector.get_engine_information(LayerInformationFormat.JSON)``: {"Layers": [...],
    "Bindings": [...]} (8.5 and later; trex/parser.py read_graph_file), each layer a dict with "Name",
    "LayerType", "ParameterType", "Inputs" / "Outputs" ({"Name", "Dimensions", "Format/Datatype"}) and, for
    convolutions, "Weights" or "ConvWeights" {"Type"}, when the engine was built with ProfilingVerbosity.DETAILED;
    otherwise "Layers" holds names only, which is refused here."""
    try:
        data = json.loads(info_json)
    except ValueError:
        raise EdgesegError("the engine inspector returned no JSON; build the engine with detailed profiling") from None
    layers = data.get("Layers") if isinstance(data, dict) else data
    if not isinstance(layers, list) or not layers or not all(isinstance(layer, dict) for layer in layers):
        raise EdgesegError("the engine inspector lists layer names only: build the engine with detailed profiling "
                           "(ProfilingVerbosity.DETAILED) to see each layer's precision")
    out = []
    for layer in layers:
        inputs = layer.get("Inputs") or [{}]
        weights = layer.get("Weights") or layer.get("ConvWeights") or {}
        out.append(LayerPrecision(str(layer.get("Name", "")),
                                  f"{layer.get('ParameterType', '')} {layer.get('LayerType', '')}".strip(),
                                  tensor_precision(str(inputs[0].get("Format/Datatype", ""))),
                                  str(weights.get("Type", "")) if isinstance(weights, dict) else ""))
    return out


# ----------------------------------------------------------------------------- I/O addresses

ADDRESS_ALIGNMENT = 256  # bytes: "The pointer must have at least 256-byte alignment" (NvInferRuntime.h,
# IExecutionContext::setTensorAddress, release/8.5, 8.6, 10.3 and 11.1 headers)


def is_aligned(address: int) -> bool:
    """True when a device address meets TensorRT's I/O alignment (``ADDRESS_ALIGNMENT``)."""
    return int(address) % ADDRESS_ALIGNMENT == 0


# ----------------------------------------------------------------------------- streams

DEFAULT_STREAM_HANDLES = (0, 1, 2)  # the null stream, cudaStreamLegacy, cudaStreamPerThread


def is_default_stream(handle: int) -> bool:
    """True for a CUDA default-stream handle (what torch.cuda.current_stream() is unless the caller
    set another): TensorRT warns on every enqueueV3 there and adds synchronisation [notes 2]."""
    return int(handle) in DEFAULT_STREAM_HANDLES


__all__ = ["ADDRESS_ALIGNMENT", "DLA_TABLE", "DlaFacts", "HARDWARE_LEVELS", "JETPACK_6_1_TRT", "JETSON",
           "LayerPrecision", "NO_HARDWARE_COMPATIBILITY_ON_JETSON", "NO_IMPLICIT_INT8", "PRECISIONS", "PrecisionPlan",
           "RELEASE_LINES", "builder_flags", "cache_calibrator", "calibration_algorithm", "calibration_cache_header",
           "dla_facts", "dla_support", "engine_compatibility", "engine_layers", "engine_role", "engine_source",
           "hardware_level", "hardware_level_name", "has_implicit_int8", "incompatibility_message", "is_aligned",
           "is_default_stream", "network_flags", "numpy_dtype", "onnx_precision", "parser_errors", "platform_problems",
           "precision_plan", "profile_shapes", "release_line", "require_build_support", "require_compatible",
           "require_dla_cores", "require_implicit_int8", "require_version_compatible", "retarget_calibration_cache",
           "tensor_precision", "trt_major", "version_code", "version_tuple"]


# ----------------------------------------------------------------------------- INT8 weight axes per version
# ConvTranspose weights are [C_in, C_out/g, kh, kw] (Conv: [C_out, C_in/g, kh, kw]). Which axis TensorRT's INT8
# deconvolution kernels take per-channel scales on:
# * 8.x: per INPUT channel, axis 0. NVIDIA on TensorRT#2380 (2022-12): "since we use per-output-channel quant for
#   Convs, the kernels assume per-input-channel quant for ConvTranspose", "We don't support per-output-channel
#   quant for ConvTranspose"; TensorRT#1694 (8.2): "quantization toolkit misaligned with TRT implementation for
#   convTranspose ... try quant axis 0". pytorch-quantization's QUANT_DESC_8BIT_CONVTRANSPOSE2D_WEIGHT_PER_CHANNEL
#   (tools/pytorch-quantization/pytorch_quantization/tensor_quant.py) is axis 0 on release/8.4, 8.5, 8.6 (commit
#   "use axis 0 as default for deconv", 2022-02).
# * 10.x, 11.x: per OUTPUT channel, axis 1: the same descriptor is axis 1 on release/9.2, 9.3 and 10.2 through 11.1
#   ("10.2 GA updates" changed it back), and ModelOpt 0.47 (NVIDIA's quantizer for TensorRT 10+) passes
#   QDQOpTypePerChannelSupportToAxis {"Conv": 0, "ConvTranspose": 1} ("Cout axis"). UNVERIFIED: release/10.0 and
#   10.1 still carry axis 0 (their copy predates the change); no 10.0 / 10.1 kernel was run here.
# A per-tensor weight scale (one value) is valid on every version: TensorRT ignores the axis then (NvInfer.h).


def convtranspose_weight_axis(trt_version: str) -> int:
    """The per-channel axis of a ConvTranspose weight's Q/DQ that TensorRT ``trt_version`` takes: 0 on 8.x, 1 on
    10.x / 11.x (sources above). EdgesegError for a version edgeseg does not build for (before 8.5, or 9.x)."""
    release = version_tuple(str(trt_version))
    major = release[0]
    if major == 9 or release[:2] < (8, 5):
        raise EdgesegError(f"unsupported TensorRT version {trt_version!r} for INT8 weight axes: expected 8.5, 8.6, "
                           "10.x or 11.x")
    return 0 if major < 10 else 1


def weight_axes(trt_version: str) -> dict[str, int]:
    """Per-channel weight axis by op type for TensorRT ``trt_version`` (the trt layout's and trt_lint's table)."""
    return {"Conv": 0, "ConvTranspose": convtranspose_weight_axis(trt_version)}
