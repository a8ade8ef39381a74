"""Benchmark records out: JSON (a list of records), CSV, the latency-vs-mIoU plot, the machine line."""
from __future__ import annotations

import csv
import json
import os
import platform
from pathlib import Path

from edgeseg.bench.measure import pareto_front


def machine_description() -> dict:
    """CPU model, cores, Python, torch, ONNX Runtime and GPU name: the machine line of every result."""
    import onnxruntime
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__, "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def write_plot(records: list[dict], path: Path) -> None:
    """Latency (p50) vs mIoU per backend/precision, Pareto front marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [r for r in records if r.get("miou") is not None and r.get("latency_ms_p50") is not None]
    if not pts:
        return
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


def write_json(records: list[dict], path: Path) -> None:
    """A list of records, one per bundle x backend x precision x batch."""
    Path(path).write_text(json.dumps(records, indent=1))


def write_csv(records: list[dict], path: Path) -> None:
    """One row per record; nested fields (per-class IoU, machine) are left out."""
    if not records:
        return
    with open(path, "w", newline="") as f:
        keys = [k for k in records[0] if not isinstance(records[0][k], dict)]
        writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(records)
