"""Benchmark records out: JSON (a list of records), CSV, the latency-vs-mIoU plot, the machine line.

Every record written carries the machine it was measured on (``machine_description``), including the device
record (``trt_device.device_record``: platform, JetPack / L4T, nvpmodel power mode, jetson_clocks, GPU and EMC
clocks, TensorRT / CUDA / cuDNN), and a flat ``device_setup`` line for the CSV; a plot refuses records
measured under different device setups (``require_one_device_setup``), so a figure is never compared
across power modes by mistake."""
from __future__ import annotations

import csv
import json
import os
import platform
from pathlib import Path
from typing import Any

from edgeseg.backends.trt_device import device_record, differences, setup_summary
from edgeseg.bench.measure import pareto_front
from edgeseg.errors import EdgesegError


def machine_description(device: dict[str, Any] | None = None) -> dict:
    """CPU model, cores, Python, torch, ONNX Runtime, GPU name and the device record (``device``, default
    this machine's): the machine of every result."""
    import onnxruntime
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "device": device if device is not None else device_record()}


def with_machine(records: list[dict], machine: dict | None = None) -> list[dict]:
    """The records, each with its ``machine`` (kept when it has one, else ``machine``, default this machine's)
    and the flat ``device_setup`` line (``trt_device.setup_summary``)."""
    here = None
    out = []
    for r in records:
        if not r.get("machine"):
            here = here or machine or machine_description()
            r = dict(r, machine=here)
        out.append(dict(r, device_setup=setup_summary(r["machine"].get("device") or {})))
    return out


def require_one_device_setup(records: list[dict]) -> None:
    """EdgesegError (one line) when records come from different device setups: another platform, JetPack,
    power mode, jetson_clocks, GPU / EMC clock or TensorRT / CUDA / cuDNN (``trt_device.differences``)."""
    devices = [(r.get("bundle"), (r.get("machine") or {}).get("device") or {}) for r in records]
    for bundle, device in devices[1:]:
        diff = differences(devices[0][1], device)
        if diff:
            raise EdgesegError(f"these records were measured under different device setups ({'; '.join(diff)}; "
                               f"{devices[0][0]} vs {bundle}); compare figures from one setup, or rerun edgeseg bench "
                               "with the same nvpmodel mode and jetson_clocks")


def write_plot(records: list[dict], path: Path) -> None:
    """Latency (p50) vs mIoU per backend/precision, Pareto front marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [r for r in records if r.get("miou") is not None and r.get("latency_ms_p50") is not None]
    if not pts:
        return
    require_one_device_setup(pts)
    front = set(pareto_front([(r["latency_ms_p50"], r["miou"]) for r in pts]))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, r in enumerate(pts):
        ax.scatter(r["latency_ms_p50"], r["miou"], s=60, marker="*" if i in front else "o")
        ax.annotate(f"{Path(r['bundle']).name}:{r['backend']}-{r['precision']} b{r['batch']}",
                    (r["latency_ms_p50"], r["miou"]), fontsize=7, xytext=(4, 4), textcoords="offset points")
    line = sorted((pts[i]["latency_ms_p50"], pts[i]["miou"]) for i in front)
    ax.plot([p[0] for p in line], [p[1] for p in line], "--", lw=1, label="Pareto front")
    ax.set_xlabel("latency p50 per batch (ms, model only)")
    ax.set_ylabel("mIoU")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_json(records: list[dict], path: Path, machine: dict | None = None) -> None:
    """A list of records, one per bundle x backend x precision x batch, each with its machine (``with_machine``)."""
    Path(path).write_text(json.dumps(with_machine(records, machine), indent=1))


def write_csv(records: list[dict], path: Path, machine: dict | None = None) -> None:
    """One row per record; nested fields (per-class IoU, machine) are left out, the device setup line is kept."""
    if not records:
        return
    records = with_machine(records, machine)
    with open(path, "w", newline="") as f:
        keys = [k for k in records[0] if not isinstance(records[0][k], dict)]
        writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(records)
