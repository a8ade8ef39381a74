"""Latency measurement shared by benchmarks, builds and the INT8 guard (no heavy imports)."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeseg.errors import EdgesegError


@dataclass(frozen=True)
class LatencyStats:
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    fps: float  # frames per second at this batch size, from the median
    iterations: int


def latency_stats(samples_ms: Iterable[float], batch: int = 1) -> LatencyStats:
    """Mean and percentiles (linear interpolation, numpy's default) of per-iteration times."""
    s = np.asarray(list(samples_ms), dtype=np.float64)
    if s.size == 0 or (s < 0).any():
        raise EdgesegError(f"latency needs at least one non-negative sample, got {s.size} samples")
    p50, p90, p99 = np.percentile(s, [50, 90, 99])
    return LatencyStats(float(s.mean()), float(p50), float(p90), float(p99), batch * 1000.0 / float(p50), int(s.size))


def time_calls(fn: Callable[[], Any], min_iters: int = 50, min_seconds: float = 5.0, warmup: int = 5,
               max_iters: int = 100000) -> list[float]:
    """Milliseconds per call of ``fn`` after ``warmup`` calls, until both minimums are met."""
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    start = time.perf_counter()
    while (len(samples) < min_iters or time.perf_counter() - start < min_seconds) and len(samples) < max_iters:
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000.0)
    return samples




def interleaved_ms(fns: dict[str, Callable[[], Any]], rounds: int = 30, warmup: int = 3) -> dict[str, float]:
    """Median ms per call of each function, alternating between them every round so that machine
    noise (other processes on shared cores) hits all of them alike."""
    return {k: float(np.median(v)) for k, v in interleaved_samples(fns, rounds, warmup).items()}


def interleaved_samples(fns: dict[str, Callable[[], Any]], rounds: int = 30, warmup: int = 3) -> dict[str, list[float]]:
    """Per-call milliseconds of each function over ``rounds`` rounds, one call of each per round."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append((time.perf_counter() - t) * 1000.0)
    return times
