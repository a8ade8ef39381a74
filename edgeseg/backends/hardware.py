"""This machine's CPU as the runtimes see it: model name, core count and the ISA flags that decide
which kernels run (AVX-512 VNNI for INT8, AVX512_BF16 / AMX for BF16). Results and bundle manifests
record it, so a figure is never read as coming from another machine type."""
from __future__ import annotations

import os
import platform
from pathlib import Path

# /proc/cpuinfo flag -> the name results use
ISA_FLAGS = {"avx2": "avx2", "avx512f": "avx512", "avx_vnni": "avx_vnni", "avx512_vnni": "avx512_vnni",
             "avx512_bf16": "avx512_bf16", "amx_tile": "amx", "amx_int8": "amx_int8", "amx_bf16": "amx_bf16"}


def cpu_description(cpuinfo: str | None = None) -> dict:
    """{"cpu": model name, "cores": logical CPUs, "isa": {name: bool for every ISA_FLAGS entry}}."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text() if path.exists() else ""
    lines = cpuinfo.splitlines()
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "")
    flags = set(next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), []))
    return {"cpu": model or platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "isa": {name: flag in flags for flag, name in ISA_FLAGS.items()}}


def same_machine_type(a: dict, b: dict) -> bool:
    """Same CPU model, core count and ISA flags: build-time latency figures transfer between them."""
    return all(a.get(k) == b.get(k) for k in ("cpu", "cores", "isa"))


def isa_summary(description: dict) -> str:
    """'AVX-512 VNNI yes, AMX no, BF16 yes' for result headers."""
    isa = description["isa"]
    yes = lambda v: "yes" if v else "no"  # noqa: E731
    return (f"AVX-512 VNNI {yes(isa['avx512_vnni'])}, AMX {yes(isa['amx'])}, "
            f"BF16 {yes(isa['avx512_bf16'] or isa['amx_bf16'])}")
