"""What this machine has: Python, PyTorch/CUDA, GPU, TensorRT, pycuda, ONNX Runtime, DLA, JetPack.

Each fact is a doctor row; a missing optional piece is SKIPPED with the command that adds it, an
unusable one (a TensorRT edgeseg cannot build with) is FAIL. Nothing here needs a GPU to run.
"""
from __future__ import annotations

import importlib
import platform
import sys
from dataclasses import dataclass, field

from edgeseg.doctor.report import Report, Skip


@dataclass
class Environment:
    trt: object | None = None  # the imported tensorrt module
    trt_version: str | None = None
    pycuda: bool = False
    gpu: str | None = None
    compute_capability: str | None = None
    dla_cores: int | None = None
    device: dict = field(default_factory=dict)  # trt_device.device_record of this machine

    @property
    def can_build(self) -> bool:
        return self.trt is not None and self.pycuda and self.gpu is not None

    def why_not(self) -> tuple[str, str]:
        """(reason, fix) when TensorRT checks cannot run here."""
        if self.trt is None:
            return ("TensorRT is not installed", "on the device: pip install 'edgeseg[trt]' (JetPack ships TensorRT)")
        if self.gpu is None:
            return ("no CUDA GPU visible to PyTorch", "check nvidia-smi (tegrastats on Jetson) and CUDA_VISIBLE_DEVICES")
        return ("pycuda is not installed", "pip install 'edgeseg[trt]' (pycuda builds against the CUDA toolkit)")


def _version(module: str) -> str | None:
    try:
        mod = importlib.import_module(module)
    except Exception:
        return None
    return str(getattr(mod, "__version__", getattr(mod, "VERSION_TEXT", "unknown")))


def survey(report: Report) -> Environment:
    """Add one row per fact to ``report``; return what the engine checks need."""
    env = Environment()
    with report.check("Python") as row:
        row.detail = f"{platform.python_version()} on {platform.system()} {platform.machine()}"
    with report.check("PyTorch / CUDA") as row:
        import torch

        cuda = torch.version.cuda or "none"
        row.detail = f"torch {torch.__version__}, CUDA build {cuda}, CUDA available: {torch.cuda.is_available()}"
    _gpu_row(report, env)
    _tensorrt_row(report, env)
    _pycuda_row(report, env)
    with report.check("ONNX Runtime") as row:
        import onnxruntime as ort

        row.detail = f"{ort.__version__}, providers {', '.join(ort.get_available_providers())}"
    _dla_row(report, env)
    _device_row(report, env)
    return env


def _device_row(report: Report, env: Environment) -> None:
    """JetPack / L4T, power mode, jetson_clocks and clocks (``trt_device.device_record``): what engine manifests
    and bench results record; a Jetson's figures depend on them."""
    from edgeseg.backends import trt_device

    with report.check("JetPack") as row:
        env.device = trt_device.device_record(trt_version=env.trt_version)
        if not env.device["platform"]["jetson"]:
            raise Skip(f"not a Jetson (no /{trt_device.TEGRA_RELEASE}): "
                       f"{trt_device.platform_text(env.device['platform'])}", "")
        row.detail = trt_device.setup_summary(env.device)


def _gpu_row(report: Report, env: Environment) -> None:
    with report.check("GPU") as row:
        import torch

        if not torch.cuda.is_available():
            raise Skip("no CUDA GPU visible to PyTorch",
                       "check nvidia-smi (tegrastats on Jetson), CUDA_VISIBLE_DEVICES and a CUDA build of torch")
        major, minor = torch.cuda.get_device_capability(0)
        env.gpu, env.compute_capability = torch.cuda.get_device_name(0), f"{major}.{minor}"
        row.detail = f"{env.gpu}, compute capability {env.compute_capability}"


def _tensorrt_row(report: Report, env: Environment) -> None:
    from edgeseg.backends import trt_api

    with report.check("TensorRT") as row:
        try:
            env.trt = importlib.import_module("tensorrt")
        except ImportError as e:
            raise Skip(f"not importable ({e})", "on the device: pip install 'edgeseg[trt]' (JetPack ships it)") from None
        env.trt_version = str(env.trt.__version__)
        trt_api.require_build_support(env.trt_version)
        row.detail = env.trt_version


def _pycuda_row(report: Report, env: Environment) -> None:
    with report.check("pycuda") as row:
        version = _version("pycuda")
        if version is None:
            raise Skip("not importable", "pip install 'edgeseg[trt]' (builds against the CUDA toolkit)")
        try:
            importlib.import_module("pycuda.driver")
        except ImportError as e:
            raise Skip(f"pycuda {version} installed but pycuda.driver fails ({e})", "reinstall pycuda") from None
        env.pycuda = True
        row.detail = version


def _dla_row(report: Report, env: Environment) -> None:
    """DLA cores this device has, and whether its TensorRT builds for DLA here: ``trt_api.DLA_TABLE`` (the
    table lint and build read) for this version, platform and JetPack."""
    from edgeseg.backends import trt_api, trt_device, trt_env

    with report.check("DLA") as row:
        if env.trt is None or env.gpu is None:
            raise Skip("needs TensorRT and a GPU to count DLA cores", "")
        cores = int(env.trt.Builder(trt_env.logger(env.trt)).num_DLA_cores)  # the process's one logger
        env.dla_cores = cores
        system, machine = sys.platform, platform.machine()
        support = trt_api.dla_support(env.trt_version, system, machine, trt_device.jetpack_here())
        facts = trt_api.dla_facts(env.trt_version, system, machine)
        row.detail = f"{cores} DLA core(s); TensorRT {env.trt_version}: " + (
            support or f"DLA supported ({facts.typing} typing, GPU fallback {'yes' if facts.gpu_fallback else 'no'})")
        if cores == 0:
            raise Skip(row.detail, "DLA exists on Jetson AGX Orin / Orin NX only")
        if support:
            raise Skip(row.detail, "build DLA engines with TensorRT 8.5-10.7, or 11.4.1+ on Jetson AGX Orin with "
                                   "JetPack >= 7.2.2")
