"""This machine as a GPU figure depends on it: the platform (OS, CPU architecture, Jetson or discrete GPU)
and, on a Jetson, JetPack / L4T, the nvpmodel power mode, jetson_clocks and the GPU and EMC clocks, plus the
TensorRT / CUDA / cuDNN versions. Engine manifests and bench results carry this record, so a plan is never
declared runnable on another platform and a latency is never compared across power modes by mistake
(``differences``).

Every fact is read from what a Jetson has, at the paths NVIDIA's tools and jetson_stats (rbonghi/jetson_stats,
jtop/core: jetson_variables.py, nvpmodel.py, gpu.py, memory.py, jetson_clocks.py) read:

  /etc/nv_tegra_release             "# R36 (release), REVISION: 4.0, GCID: ..." -> L4T 36.4.0
  dpkg nvidia-jetpack               the exact JetPack when the meta package is installed, else L4T -> JetPack
  `nvpmodel -q`                     "NV Power Mode: MAXN" then the mode id on the next line
  /var/lib/nvpmodel/status          "pmode:0000" (when nvpmodel cannot be run), names from /etc/nvpmodel.conf
                                    ("< POWER_MODEL ID=0 NAME=MAXN >")
  /sys/class/devfreq/*/             the GPU: device/of_node/name gv11b (Xavier), ga10b (Orin), gb10b / gpu-gpc-0
                                    (Thor); cur_freq, min_freq, max_freq in Hz
  /sys/kernel/debug/bpmp/debug/clk/emc/{rate,min_rate,max_rate}   EMC in Hz (root only; Thor: devfreq bwmgr)

jetson_clocks pins the GPU at its maximum: it is "on" when the GPU's min_freq equals its max_freq (jtop's
jetson_clocks_alive rule), and the EMC runs at its maximum. Readers take ``root`` (default "/") so tests run
them on fixture trees; nothing here needs TensorRT, a GPU or root (unreadable facts are None).
"""
from __future__ import annotations

import json
import platform as _platform
import re
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

# L4T release -> JetPack, from jetson_stats jtop/core/jetson_variables.py NVIDIA_JETPACK (JetPack 5-7)
JETPACK_OF_L4T = {
    "39.2.0": "7.2", "39.0.0": "7.2 EA", "38.4.0": "7.1", "38.2.2": "7.0", "38.2.1": "7.0", "38.2.0": "7.0",
    "36.5.0": "6.2.2", "36.4.7": "6.2.1", "36.4.4": "6.2.1", "36.4.3": "6.2", "36.4.2": "6.1", "36.4.0": "6.1",
    "36.3.0": "6.0", "36.2.0": "6.0 DP", "35.6.4": "5.1.6", "35.6.3": "5.1.5", "35.6.2": "5.1.5", "35.6.1": "5.1.5",
    "35.6.0": "5.1.4", "35.5.0": "5.1.3", "35.4.1": "5.1.2", "35.3.1": "5.1.1", "35.2.1": "5.1", "35.1.0": "5.0.2",
}
GPU_DEVFREQ_NAMES = ("gv11b", "gp10b", "ga10b", "gb10b", "gpu")  # jtop/core/gpu.py KNOWN_GPU_DEVICE_NAMES
TEGRA_RELEASE = "etc/nv_tegra_release"
Runner = Callable[[list[str]], str | None]  # argv -> stdout, None when the command cannot run


def _run(argv: list[str]) -> str | None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:  # absent, or root only (debugfs)
        return None


# ----------------------------------------------------------------------------- platform

def platform_record(root: Path = Path("/"), system: str | None = None, machine: str | None = None) -> dict[str, Any]:
    """{"os": "linux" | "win32" | ..., "arch": "x86_64" | "aarch64" | ..., "jetson": bool}: the platform a
    plan is tied to ("Serialized engines are not portable across platforms", TensorRT 8.5-10.x support matrix).
    A Jetson is an L4T system (``/etc/nv_tegra_release``); an aarch64 server with a discrete GPU is not."""
    system = sys.platform if system is None else system
    arch = (machine or _platform.machine()).lower()
    arch = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64"}.get(arch, arch)
    return {"os": "linux" if system.startswith("linux") else system, "arch": arch,
            "jetson": (root / TEGRA_RELEASE).is_file()}


def platform_text(record: Mapping[str, Any]) -> str:
    """'linux aarch64 (Jetson)' / 'linux x86_64 (discrete GPU)'."""
    return f"{record.get('os')} {record.get('arch')} ({'Jetson' if record.get('jetson') else 'discrete GPU'})"


# ----------------------------------------------------------------------------- JetPack / L4T

def l4t_version(text: str | None) -> str | None:
    """'# R36 (release), REVISION: 4.0, ...' -> '36.4.0' (jetson_stats get_nvidia_l4t)."""
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*(\d+)(?:\.(\d+))?", text or "")
    return f"{m.group(1)}.{m.group(2)}.{m.group(3) or 0}" if m else None


def jetpack_version(l4t: str | None, run: Runner = _run) -> str | None:
    """The installed nvidia-jetpack package's version ('6.1+b123' -> '6.1'), else the JetPack of this L4T."""
    out = run(["dpkg-query", "-W", "-f=${Version}", "nvidia-jetpack"])
    if out and out.strip():
        return out.strip().split("+")[0].split("-")[0]
    return JETPACK_OF_L4T.get(l4t or "")


def jetpack_here(root: Path = Path("/"), run: Runner = _run) -> str | None:
    """This Jetson's JetPack (None elsewhere, or when neither the package nor the L4T release tells)."""
    text = _read(root / TEGRA_RELEASE)
    return jetpack_version(l4t_version(text), run) if text is not None else None


# ----------------------------------------------------------------------------- nvpmodel

def power_modes(conf: str | None) -> dict[int, str]:
    """{id: name} from /etc/nvpmodel.conf's '< POWER_MODEL ID=0 NAME=MAXN >' lines."""
    return {int(i): n for i, n in re.findall(r"<\s*POWER_MODEL\s+ID=(\d+)\s+NAME=(\S+?)\s*>", conf or "")}


def power_mode(root: Path = Path("/"), run: Runner = _run) -> dict[str, Any] | None:
    """{"id": 0, "name": "MAXN"}: `nvpmodel -q` ("NV Power Mode: MAXN" then the id, jtop nvpmodel_query), else
    /var/lib/nvpmodel/status ("pmode:0000") named by /etc/nvpmodel.conf; None when neither is there."""
    out = run(["nvpmodel", "-q"])
    m = re.search(r"NV Power Mode:\s*(\S+)\s*\n\s*(\d+)", out or "")
    if m:
        return {"id": int(m.group(2)), "name": m.group(1)}
    m = re.search(r"pmode:\s*(\d+)", _read(root / "var/lib/nvpmodel/status") or "")
    if not m:
        return None
    mode = int(m.group(1))
    return {"id": mode, "name": power_modes(_read(root / "etc/nvpmodel.conf")).get(mode)}


# ----------------------------------------------------------------------------- clocks

def _clock_mhz(folder: Path, cur: str, lo: str, hi: str) -> dict[str, float] | None:
    values = {k: _read(folder / name) for k, name in (("cur", cur), ("min", lo), ("max", hi))}
    if not all(v and v.isdigit() for v in values.values()):
        return None
    return {k: round(int(v) / 1e6, 1) for k, v in values.items()}  # Hz -> MHz


def gpu_clock(root: Path = Path("/")) -> dict[str, float] | None:
    """The integrated GPU's devfreq clocks in MHz (cur / min / max), found as jtop's find_igpu finds it."""
    devfreq = root / "sys/class/devfreq"
    for entry in sorted(devfreq.glob("*")) if devfreq.is_dir() else []:
        name = (_read(entry / "device/of_node/name") or "").lower()
        if name in GPU_DEVFREQ_NAMES or "gpu" in name or entry.name.startswith("gpu-gpc"):
            clock = _clock_mhz(entry, "cur_freq", "min_freq", "max_freq")
            if clock:
                return clock
    return None


def emc_clock(root: Path = Path("/")) -> dict[str, float] | None:
    """The memory controller (EMC) clocks in MHz: BPMP debugfs (Xavier, Orin; root only), else Thor's
    devfreq bwmgr (jtop/core/memory.py read_emc)."""
    return (_clock_mhz(root / "sys/kernel/debug/bpmp/debug/clk/emc", "rate", "min_rate", "max_rate")
            or _clock_mhz(root / "sys/class/devfreq/bwmgr", "cur_freq", "min_freq", "max_freq"))


def jetson_clocks_on(gpu: Mapping[str, float] | None, emc: Mapping[str, float] | None) -> bool | None:
    """jetson_clocks pins the GPU (min = max) and runs the EMC at its maximum; None when the GPU clock is unknown."""
    if not gpu:
        return None
    return gpu["min"] == gpu["max"] and (not emc or emc["cur"] == emc["max"])


# ----------------------------------------------------------------------------- versions

def cudnn_text(code: int | None) -> str | None:
    """CUDNN_VERSION as text: 90300 -> '9.3.0' (cuDNN 9: major*10000 + minor*100 + patch), 8907 -> '8.9.7'
    (cuDNN 8: major*1000 + minor*100 + patch)."""
    if not code:
        return None
    major, rest = divmod(int(code), 10000 if code >= 10000 else 1000)
    return f"{major}.{rest // 100}.{rest % 100}"


def library_versions(trt_version: str | None = None) -> dict[str, str | None]:
    """TensorRT (``trt_version`` when the caller has the module, else the importable one), CUDA and cuDNN as
    PyTorch sees them (the CUDA toolkit's version.json when PyTorch has no CUDA)."""
    if trt_version is None:
        import importlib.util

        if importlib.util.find_spec("tensorrt") is not None:
            try:
                import tensorrt

                trt_version = str(tensorrt.__version__)
            except Exception:  # a broken install is reported by the doctor, not here
                trt_version = None
    cuda = cudnn = None
    try:
        import torch

        cuda = torch.version.cuda
        cudnn = cudnn_text(torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None)
    except ImportError:
        pass
    if cuda is None:
        try:
            cuda = json.loads(Path("/usr/local/cuda/version.json").read_text())["cuda"]["version"]
        except (OSError, ValueError, KeyError):
            pass
    return {"tensorrt": trt_version, "cuda": cuda, "cudnn": cudnn}


# ----------------------------------------------------------------------------- the record

def device_record(root: Path = Path("/"), run: Runner = _run, trt_version: str | None = None,
                  versions: Mapping[str, str | None] | None = None) -> dict[str, Any]:
    """The device record of engine manifests and bench results (the module doc says what each fact is read from)."""
    record: dict[str, Any] = {"platform": platform_record(root)}
    if record["platform"]["jetson"]:
        l4t = l4t_version(_read(root / TEGRA_RELEASE))
        gpu, emc = gpu_clock(root), emc_clock(root)
        record.update(l4t=l4t, jetpack=jetpack_version(l4t, run), power_mode=power_mode(root, run),
                      jetson_clocks=jetson_clocks_on(gpu, emc), gpu_clock_mhz=gpu, emc_clock_mhz=emc)
    record.update(versions if versions is not None else library_versions(trt_version))
    return record


# What a figure depends on, with the words that name it; compared by ``differences``.
_SETUP = (("platform", "platform"), ("jetpack", "JetPack"), ("l4t", "L4T"), ("power_mode", "nvpmodel power mode"),
          ("jetson_clocks", "jetson_clocks"), ("tensorrt", "TensorRT"), ("cuda", "CUDA"), ("cudnn", "cuDNN"))


def _text(key: str, value: Any) -> str:
    if key == "platform" and isinstance(value, Mapping):
        return platform_text(value)
    if key == "power_mode" and isinstance(value, Mapping):
        return f"{value.get('name')} ({value.get('id')})"
    if key == "jetson_clocks" and value is not None:
        return "on" if value else "off"
    return str(value)


def differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """Why figures measured under device record ``a`` and ``b`` are not comparable: one phrase per differing
    platform, JetPack / L4T, power mode, jetson_clocks, GPU / EMC maximum clock or library version. A fact
    one record lacks is not compared (older records); empty = comparable."""
    out = []
    for key, words in _SETUP:
        va, vb = a.get(key), b.get(key)
        if va is not None and vb is not None and va != vb:
            out.append(f"{words} {_text(key, va)} vs {_text(key, vb)}")
    for key, words in (("gpu_clock_mhz", "GPU"), ("emc_clock_mhz", "EMC")):
        ca, cb = a.get(key) or {}, b.get(key) or {}
        if ca.get("max") is not None and cb.get("max") is not None and ca["max"] != cb["max"]:
            out.append(f"{words} max clock {ca['max']} vs {cb['max']} MHz")
    return out


def setup_summary(record: Mapping[str, Any]) -> str:
    """One line for tables: 'Jetson JetPack 6.1 (L4T 36.4.0), nvpmodel MAXN (0), jetson_clocks on, GPU 1300.5 MHz,
    EMC 3199.0 MHz, TensorRT 10.3.0, CUDA 12.6, cuDNN 9.3.0'."""
    parts = []
    plat = record.get("platform") or {}
    if plat.get("jetson"):
        parts.append(f"Jetson JetPack {record.get('jetpack') or '?'} (L4T {record.get('l4t') or '?'})")
        if record.get("power_mode"):
            parts.append(f"nvpmodel {_text('power_mode', record['power_mode'])}")
        if record.get("jetson_clocks") is not None:
            parts.append(f"jetson_clocks {_text('jetson_clocks', record['jetson_clocks'])}")
        for key, words in (("gpu_clock_mhz", "GPU"), ("emc_clock_mhz", "EMC")):
            if record.get(key):
                parts.append(f"{words} {record[key]['cur']} MHz")
    elif plat:
        parts.append(platform_text(plat))
    parts += [f"{words} {record[key]}" for key, words in (("tensorrt", "TensorRT"), ("cuda", "CUDA"),
                                                          ("cudnn", "cuDNN")) if record.get(key)]
    return ", ".join(parts)


__all__ = ["GPU_DEVFREQ_NAMES", "JETPACK_OF_L4T", "cudnn_text", "device_record", "differences", "emc_clock",
           "gpu_clock", "jetpack_here", "jetpack_version", "jetson_clocks_on", "l4t_version", "library_versions",
           "platform_record", "platform_text", "power_mode", "power_modes", "setup_summary"]
