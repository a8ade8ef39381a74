"""What this machine has: Python, PyTorch/CUDA, GPU, TensorRT, pycuda, ONNX Runtime, DLA, JetPack.

Each fact is a doctor row; a missing optional piece is SKIPPED with the command that adds it, an
unusable one (a TensorRT edgeseg cannot build with) is FAIL. Nothing here needs a GPU to run.
"""
from __future__ import annotations

import importlib
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from edgeseg.doctor.report import Report, Skip

TEGRA_RELEASE = Path("/etc/nv_tegra_release")
# L4T release -> JetPack (NVIDIA's JetPack archive); anything else is reported as L4T only.
JETPACK_OF_L4T = {"35.3": "5.1.1", "35.4": "5.1.2", "35.5": "5.1.3", "35.6": "5.1.4", "36.2": "6.0 DP", "36.3": "6.0",
                  "36.4": "6.1 / 6.2"}


@dataclass
class Environment:
    trt: object | None = None  # the imported tensorrt module
    trt_version: str | None = None
    pycuda: bool = False
    gpu: str | None = None
    compute_capability: str | None = None
    dla_cores: int | None = None

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


def jetpack_release() -> str | None:
    """'L4T 36.4.0 (JetPack 6.1 / 6.2)' on a Jetson, None elsewhere."""
    if not TEGRA_RELEASE.is_file():
        return None
    text = TEGRA_RELEASE.read_text(errors="replace")
    import re

    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    if not m:
        return f"L4T ({text.splitlines()[0][:60] if text else 'unreadable'})"
    l4t = f"{m.group(1)}.{m.group(2)}"
    jp = JETPACK_OF_L4T.get(".".join(l4t.split(".")[:2]))
    try:  # the exact JetPack, where the meta package is installed
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "nvidia-jetpack"], capture_output=True,
                             text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            jp = out.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return f"L4T {l4t}" + (f" (JetPack {jp})" if jp else "")


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
    with report.check("JetPack") as row:
        release = jetpack_release()
        if release is None:
            raise Skip(f"not a Jetson (no {TEGRA_RELEASE})", "")
        row.detail = release
    return env


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
    """DLA cores this device has, and whether its TensorRT builds for DLA here (``trt_api.dla_support``)."""
    from edgeseg.backends import trt_api

    with report.check("DLA") as row:
        if env.trt is None or env.gpu is None:
            raise Skip("needs TensorRT and a GPU to count DLA cores", "")
        from edgeseg.backends import trt_env

        cores = int(env.trt.Builder(trt_env.logger(env.trt)).num_DLA_cores)  # the process's one logger
        env.dla_cores = cores
        support = trt_api.dla_support(env.trt_version, sys.platform, platform.machine())
        row.detail = f"{cores} DLA core(s); TensorRT {env.trt_version}: " + (support or "DLA supported")
        if cores == 0:
            raise Skip(row.detail, "DLA exists on Jetson AGX Orin / Orin NX only")
