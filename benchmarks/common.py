"""Shared helpers for the benchmark scripts: machine description, interleaved timing, result files."""
from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
REFERENCE_CKPT = REPO / "benchmarks" / "reference" / "deeplabv3plus_mobilenet_v2_camvid.pt"
CAMVID = REPO.parent / "shared" / "datasets" / "camvid"


def machine() -> dict:
    """CPU model, cores, ISA flags (VNNI, AMX, BF16) and the runtime versions of a result."""
    import importlib.metadata

    import onnxruntime
    import torch

    from edgeseg.backends.hardware import cpu_description

    cpu = cpu_description()
    isa = cpu["isa"]

    def version(dist: str) -> str | None:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {"cpu": cpu["cpu"], "cores": cpu["cores"], "avx512_vnni": isa["avx512_vnni"], "amx": isa["amx"],
            "bf16": isa["avx512_bf16"] or isa["amx_bf16"], "isa": isa, "python": platform.python_version(),
            "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "openvino": version("openvino"),
            "nncf": version("nncf"), "command": " ".join([Path(sys.executable).name] + sys.argv),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def interleaved_medians(fns: dict[str, callable], rounds: int = 30, warmup: int = 3) -> dict[str, float]:
    """Median ms per call of each function, alternating between them every round (edgeseg.timing)."""
    from edgeseg.timing import interleaved_ms

    return interleaved_ms(fns, rounds, warmup)


def write_results(name: str, data: dict, markdown: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=1, default=str))
    m = data["machine"]
    header = (f"Machine: {m['cpu']}, {m['cores']} cores (AVX-512 VNNI: {m['avx512_vnni']}, AMX: {m['amx']}, "
              f"BF16: {m.get('bf16')}); torch {m['torch']}, onnxruntime {m['onnxruntime']}, openvino {m.get('openvino')}, "
              f"nncf {m.get('nncf')}, Python {m['python']}; {m['date']}.\n\n"
              f"Command: `{m['command']}`\n\n")
    (RESULTS / f"{name}.md").write_text(header + markdown)
