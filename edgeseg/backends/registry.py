"""The one backend registry: each backend declares its name, whether it can run here (and why not),
which bundle files it runs and how to build its runner, and, for a backend with artifacts of its own
(an accelerator's compiled model), which roles it produces and the hook that builds them from the
staged ONNX files (Polygraphy keeps loaders apart from runners). ``bench``, ``edgeseg.load``,
``infer`` and ``build`` ask this module; nothing else compares backend names.

    for backend in BACKENDS.values(): backend.name, backend.unavailable(), backend.roles
    runner = make_runner(bundle, "openvino", "int8", RunnerOptions(threads=2, inference_precision="bf16"))
    for backend in artifact_builders(): manifest[backend.record] = backend.build_artifacts(request)

A bundle here is anything with ``root``, ``manifest``, ``precision`` and ``file(role)`` (the
bundle stage's ``Bundle``; this stage sits below it). Runtimes are imported when a runner is built,
builders when their hook runs.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from edgeseg.backends.artifacts import ONNX_ROLES
from edgeseg.backends.base import Runner
from edgeseg.errors import EdgesegError


class BundleFiles(Protocol):
    root: Path
    manifest: dict[str, Any]

    @property
    def precision(self) -> str: ...

    def file(self, role: str) -> Path | None: ...


@dataclass(frozen=True)
class RunnerOptions:
    """Runner settings; each backend takes the ones it knows.

    threads: intra-op threads (0: the runtime's default). spinning: ONNX Runtime's idle threads
    busy-wait (off when several runtimes share the cores, e.g. interleaved timing). device: the
    OpenVINO device (CPU, GPU, GPU.1, NPU). inference_precision: OpenVINO's f32 / bf16 / f16 hint
    (None: f32, exact; "device": the device's own default, bf16 on CPUs with AVX512_BF16 or AMX).
    cache_dir: OpenVINO's compiled-model cache folder (None: no cache)."""

    threads: int = 0
    spinning: bool = True
    device: str = "CPU"
    inference_precision: str | None = None
    cache_dir: Path | None = None


@dataclass(frozen=True)
class ArtifactRequest:
    """What a backend's ``build_artifacts`` hook gets: the staging folder of a bundle and what is staged there.

    The hook writes its files into ``stage``, adds their roles to ``roles`` (role -> file name, as
    ``artifacts.ROLE_FILES`` names them) and returns its manifest record. ``manifest``: the manifest so
    far (precision, input shape bounds, calibration). ``workspace_gb``: the build's scratch-memory limit.
    ``dla_core``: the DLA core to build for (TensorRT on a Jetson), None for the GPU. ``on_device``: True
    for ``edgeseg build --from DIR`` (finishing a bundle built elsewhere: the hook may first adapt staged
    files to this device's runtime, e.g. a calibration cache header)."""

    stage: Path
    roles: dict[str, str]
    manifest: dict[str, Any]
    precision: str
    workspace_gb: float = 2.0
    dla_core: int | None = None
    on_device: bool = False
    log: Callable[[str], None] = print


@dataclass(frozen=True)
class Backend:
    name: str  # what users type: --backend NAME, edgeseg.load(backend=NAME)
    title: str
    roles: tuple[str, ...]  # bundle files (manifest roles) it can run
    unavailable: Callable[[], str | None]  # why it cannot run on this machine, None when it can
    make: Callable[[Path, BundleFiles, RunnerOptions], Runner]  # (file, bundle, options) -> inactive runner
    default_role: Callable[[BundleFiles], str]  # the file it runs for a bundle when none is asked for
    cpu_runtime: bool = False  # timed by `edgeseg build --backend auto` and chosen by measurement on load
    accelerator: bool = False  # backend "auto" prefers it whenever it can run the bundle here
    reference: bool = False  # the PyTorch FP32 model: the parity reference of `edgeseg bench`
    fallback: bool = False  # runs any ONNX role everywhere: auto's choice when nothing was measured
    inference_precisions: Callable[[RunnerOptions], tuple[str | None, ...]] = lambda o: (None,)
    refusals: Callable[[BundleFiles], list[str]] = lambda bundle: []  # bundle-specific reasons it cannot run it
    refusal_message: Callable[[BundleFiles, list[str]], str] = lambda bundle, problems: "; ".join(problems)
    missing_file: str = "the bundle has no file for this backend"
    produces: tuple[str, ...] = ()  # bundle roles it builds itself (an accelerator's compiled model)
    record: str | None = None  # the manifest key of its build record (None in a bundle it did not build)
    build_artifacts: Callable[[ArtifactRequest], dict[str, Any]] | None = None  # builds ``produces`` (see above)


def precision_of(role: str, bundle: BundleFiles) -> str:
    """The model precision a bundle file carries: fp32 / fp16 / int8 (an engine: the bundle's precision)."""
    return role if role in ONNX_ROLES else "fp32" if role == "checkpoint" else bundle.precision


# ----------------------------------------------------------------------------- the backends

def _torch_runner(path: Path, bundle: BundleFiles, options: RunnerOptions) -> Runner:
    import torch

    from edgeseg.backends.torch_runner import TorchRunner
    from edgeseg.models.checkpoint import load_checkpoint

    if options.threads:
        torch.set_num_threads(options.threads)
    return TorchRunner(load_checkpoint(path).build())


def _ort_runner(path: Path, bundle: BundleFiles, options: RunnerOptions) -> Runner:
    from edgeseg.backends.onnxruntime import OrtRunner

    return OrtRunner(path, threads=options.threads, spinning=options.spinning)


def _openvino_runner(path: Path, bundle: BundleFiles, options: RunnerOptions) -> Runner:
    from edgeseg.backends.openvino import OpenVinoRunner

    precision = None if options.inference_precision == "device" else options.inference_precision or "f32"
    return OpenVinoRunner(path, device=options.device, threads=options.threads, inference_precision=precision,
                          cache_dir=options.cache_dir)


def _openvino_missing() -> str | None:
    from edgeseg.backends.openvino import openvino_missing

    return openvino_missing()


def _openvino_precisions(options: RunnerOptions) -> tuple[str | None, ...]:
    """f32 always; bf16 / f16 where the device computes them natively (measured by builds)."""
    from edgeseg.backends.openvino import PRECISIONS, device_capabilities, require_openvino

    capabilities = device_capabilities(require_openvino().Core(), options.device)
    return tuple(p for p, needed in PRECISIONS.items() if needed in capabilities)


def _trt_missing() -> str | None:
    from edgeseg.backends.trt_env import tensorrt_available

    return None if tensorrt_available() else "TensorRT or a CUDA GPU is not available on this machine"


def _trt_runner(path: Path, bundle: BundleFiles, options: RunnerOptions) -> Runner:
    from edgeseg.backends.trt_runner import TensorRTRunner

    return TensorRTRunner(path, engine_info=bundle.manifest.get("engine"))


def _trt_artifacts(request: ArtifactRequest) -> dict[str, Any]:
    from edgeseg.backends.trt_engine import build_artifacts

    return build_artifacts(request)


def _engine_problems(bundle: BundleFiles) -> list[str]:
    """Why this machine cannot run the bundle's engine (other TensorRT version or GPU); [] when it can."""
    from edgeseg.backends.trt_api import engine_compatibility
    from edgeseg.backends.trt_env import runtime_info

    return engine_compatibility(bundle.manifest["engine"], runtime_info())


def _engine_message(bundle: BundleFiles, problems: list[str]) -> str:
    from edgeseg.backends.trt_api import incompatibility_message

    return incompatibility_message(problems, str(bundle.file("engine")), str(bundle.root))


def _ort_default_role(bundle: BundleFiles) -> str:
    return "int8" if bundle.precision == "int8" else "fp32"  # an FP16 ONNX brings no speed in ONNX Runtime CPU


def _precision_role(bundle: BundleFiles) -> str:
    return bundle.precision if bundle.precision in ONNX_ROLES and bundle.file(bundle.precision) else "fp32"


BACKENDS: dict[str, Backend] = {b.name: b for b in (
    Backend("torch", "PyTorch eager", ("checkpoint",), lambda: None, _torch_runner, lambda b: "checkpoint",
            reference=True, missing_file="the bundle has no checkpoint (built from ONNX); build it from "
                                         "--checkpoint to run the torch backend"),
    Backend("ort", "ONNX Runtime", ONNX_ROLES, lambda: None, _ort_runner, _ort_default_role, cpu_runtime=True,
            fallback=True),
    Backend("openvino", "OpenVINO", ONNX_ROLES, _openvino_missing, _openvino_runner, _precision_role,
            cpu_runtime=True, inference_precisions=_openvino_precisions),
    Backend("trt", "TensorRT", ("engine",), _trt_missing, _trt_runner, lambda b: "engine", accelerator=True,
            refusals=_engine_problems, refusal_message=_engine_message,
            missing_file="the bundle has no TensorRT engine; on the device run `edgeseg build --from DIR --backend trt`",
            produces=("engine",), record="engine", build_artifacts=_trt_artifacts),
)}


def backend_names(cpu_runtime: bool | None = None) -> tuple[str, ...]:
    """Every backend name, or only CPU runtimes (True) / the others (False)."""
    return tuple(n for n, b in BACKENDS.items() if cpu_runtime is None or b.cpu_runtime == cpu_runtime)


def get_backend(name: str) -> Backend:
    if name not in BACKENDS:
        raise EdgesegError(f"unknown backend {name!r}: expected one of {', '.join(BACKENDS)}")
    return BACKENDS[name]


def reference_backend() -> Backend:
    """The PyTorch FP32 model: what parity is measured against."""
    return next(b for b in BACKENDS.values() if b.reference)


def fallback_backend() -> Backend:
    """The runtime that runs every ONNX role on any machine (ONNX Runtime CPU)."""
    return next(b for b in BACKENDS.values() if b.fallback)


def accelerators() -> list[Backend]:
    return [b for b in BACKENDS.values() if b.accelerator]


def artifact_builders() -> list[Backend]:
    """The backends that build bundle artifacts of their own (``produces``), in registry order."""
    return [b for b in BACKENDS.values() if b.build_artifacts is not None]


def cannot_run(bundle: BundleFiles, name: str, role: str | None = None) -> str | None:
    """Why backend ``name`` cannot run the bundle's ``role`` file (default: its default role) here; None when it can."""
    backend = get_backend(name)
    role = role or backend.default_role(bundle)
    if role not in backend.roles:
        return f"{backend.title} does not run {role} files (it runs {', '.join(backend.roles)})"
    if bundle.file(role) is None:
        return backend.missing_file.replace("DIR", str(bundle.root))
    why = backend.unavailable()
    if why:
        return why
    problems = backend.refusals(bundle)
    return backend.refusal_message(bundle, problems) if problems else None


def make_runner(bundle: BundleFiles, name: str, role: str | None = None,
                options: RunnerOptions = RunnerOptions()) -> Runner:
    """The (inactive) runner of backend ``name`` on the bundle's ``role`` file; EdgesegError saying why not."""
    backend = get_backend(name)
    role = role or backend.default_role(bundle)
    why = cannot_run(bundle, name, role)
    if why:
        raise EdgesegError(f"{bundle.root}: {why}")
    return backend.make(bundle.file(role), bundle, options)


def runners(bundle: BundleFiles, name: str, options: RunnerOptions = RunnerOptions()) -> list[tuple[str, Runner | str]]:
    """(precision, runner) for every file of the bundle that backend ``name`` runs here, or (precision, why not).
    The precision is the model's; a runner computing in another precision says so once active."""
    backend = get_backend(name)
    roles = [r for r in backend.roles if bundle.file(r) is not None]
    if not roles:
        return [(precision_of(backend.default_role(bundle), bundle), backend.missing_file.replace("DIR", str(bundle.root)))]
    out: list[tuple[str, Runner | str]] = []
    for role in roles:
        why = cannot_run(bundle, name, role)
        out.append((precision_of(role, bundle), why if why else backend.make(bundle.file(role), bundle, options)))
    return out


def with_precision(options: RunnerOptions, inference_precision: str | None) -> RunnerOptions:
    return replace(options, inference_precision=inference_precision)


def precision_label(precision: str, inference_precision: str | None) -> str:
    """"fp32", or "fp32@bf16" for an FP32 model computed in bf16: a BF16 run is never called FP32."""
    return precision if inference_precision in (None, "f32") else f"{precision}@{inference_precision}"
