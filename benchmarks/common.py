"""Shared helpers for the benchmark scripts: machine description, interleaved timing, result files."""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
REFERENCE_CKPT = REPO / "benchmarks" / "reference" / "deeplabv3plus_mobilenet_v2_camvid.pt"
CAMVID = REPO.parent / "shared" / "datasets" / "camvid"


def machine() -> dict:
    import onnxruntime
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    return {"cpu": cpu, "cores": os.cpu_count(), "avx512_vnni": "avx512_vnni" in flags, "amx": "amx_tile" in flags,
            "python": platform.python_version(), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "command": " ".join([Path(sys.executable).name] + sys.argv), "date": time.strftime("%Y-%m-%d %H:%M UTC",
                                                                                           time.gmtime())}


def interleaved_medians(fns: dict[str, callable], rounds: int = 30, warmup: int = 3) -> dict[str, float]:
    """Median ms per call of each function, alternating between them every round (edgeseg.timing)."""
    from edgeseg.timing import interleaved_ms

    return interleaved_ms(fns, rounds, warmup)


def write_results(name: str, data: dict, markdown: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=1, default=str))
    m = data["machine"]
    header = (f"Machine: {m['cpu']}, {m['cores']} cores (AVX-512 VNNI: {m['avx512_vnni']}, AMX: {m['amx']}); "
              f"torch {m['torch']}, onnxruntime {m['onnxruntime']}, Python {m['python']}; {m['date']}.\n\n"
              f"Command: `{m['command']}`\n\n")
    (RESULTS / f"{name}.md").write_text(header + markdown)
