"""Accuracy guard: keep the most sensitive layers out of INT8 until the mIoU drop fits a budget.

Layers are excluded in sensitivity order, 1, 2, 4, 8 ... at a time (each try is one
re-quantization from the cached ranges plus one evaluation); the first model within budget is
kept. The report says which layers stayed in high precision and what that cost in latency.
"""
from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edgeseg.io_utils import atomic_path
from edgeseg.quantize.layouts import QuantLayout, get_layout
from edgeseg.quantize.qdq import quantize_qdq
from edgeseg.quantize.sensitivity import LayerSensitivity


@dataclass
class GuardReport:
    fp32_miou: float
    int8_miou: float  # everything quantized
    final_miou: float
    max_drop: float
    excluded: list[str] = field(default_factory=list)
    tries: list[dict] = field(default_factory=list)  # {"excluded": k, "miou": ...}
    fits: bool = False
    latency_ms: dict[str, float] = field(default_factory=dict)  # {"int8": ..., "mixed": ...}


def _exclusion_counts(layers: int) -> list[int]:
    """How many of the ranked layers each try keeps in float: 0, 1, 2, 4, 8 ... up to all ``layers``."""
    counts = [0]
    while counts[-1] < layers:
        counts.append(min(layers, max(1, counts[-1] * 2)))
    return counts


def quantize_with_guard(fp32_path: str | Path, out_path: str | Path, ranges: dict[str, tuple[float, float]],
                        layout: str | QuantLayout, miou_of: Callable[[Path], float], max_drop: float,
                        ranking: list[LayerSensitivity], fp32_miou: float | None = None,
                        latency_of: Callable[[Path], float] | None = None,
                        bias_shifts: dict | None = None) -> GuardReport:
    """Write to ``out_path`` the INT8 model with the fewest high-precision layers whose mIoU drop
    (``miou_of(fp32) - miou_of(candidate)``) is <= ``max_drop``; or the last try if none fits."""
    layout = get_layout(layout)
    fp32_miou = miou_of(Path(fp32_path)) if fp32_miou is None else fp32_miou
    counts = _exclusion_counts(len(ranking))
    with tempfile.TemporaryDirectory(prefix="edgeseg-guard-") as tmp:
        report = None
        for k in counts:
            excluded = [r.node for r in ranking[:k]]
            candidate = Path(tmp) / f"k{k}.onnx"
            quantize_qdq(fp32_path, candidate, ranges, layout, nodes_to_exclude=excluded, bias_shifts=bias_shifts)
            miou = miou_of(candidate)
            if report is None:
                report = GuardReport(fp32_miou, miou, miou, max_drop)
                full = candidate
            report.tries.append({"excluded": k, "miou": round(miou, 3)})
            report.final_miou, report.excluded = miou, excluded
            if fp32_miou - miou <= max_drop:
                report.fits = True
                break
        if latency_of is not None:
            report.latency_ms = {"int8": latency_of(full), "mixed": latency_of(candidate)}
        with atomic_path(out_path) as tmp:  # a unique temporary name, removed when the copy fails
            shutil.copyfile(candidate, tmp)
    return report
