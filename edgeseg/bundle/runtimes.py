"""Which runtime path runs a bundle here: measured at build time, chosen at load time.

A path is (backend, bundle file, inference precision), e.g. ``openvino:int8@bf16``: OpenVINO on the
INT8 Q/DQ model with its float layers in bf16. ``edgeseg build`` times every CPU runtime available
on the build machine for the requested precision, interleaved in one loop on a real image, and
scores each path's mIoU on the selection split (the calibration split, never the split the build
reports); ``manifest["runtime"]`` records the figures with the CPU model and ISA flags.

``select_runner(bundle, "auto")`` then takes, in order:
1. an accelerator backend (TensorRT) that can run the bundle's engine here;
2. the fastest recorded path within the bundle's mIoU budget (drop vs FP32 on the selection split)
   whose backend and precision this machine has, when this is the machine type that measured them;
3. on another machine type, the same eligible paths timed here (a few interleaved rounds);
4. bundles without runtime figures: ONNX Runtime on the bundle's precision (as before).
It always says which path it took and why (``Choice.reason``).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeseg.backends import registry
from edgeseg.backends.base import Runner
from edgeseg.backends.hardware import cpu_description, same_machine_type
from edgeseg.backends.registry import RunnerOptions
from edgeseg.bundle.manifest import Bundle
from edgeseg.timing import interleaved_ms

BACKEND_CHOICES = ("auto", *registry.backend_names())  # what select_runner, edgeseg.load and `infer --backend` take
DEFAULT_MAX_MIOU_DROP = 0.5  # the budget when the build was given no --max-miou-drop
SELECTION_IMAGES = 16
TIMING_ROUNDS = 20  # build time
LOAD_TIMING_ROUNDS = 8  # load time, on a machine type the build did not measure
REDUCED = ("bf16", "f16")  # compute precisions below FP32: candidates only for reduced-precision bundles


@dataclass(frozen=True)
class RuntimePath:
    backend: str
    role: str  # the bundle file: fp32 / fp16 / int8
    inference_precision: str | None = None  # OpenVINO's hint; None: the model's own types

    @property
    def key(self) -> str:
        return f"{self.backend}:{self.role}" + (f"@{self.inference_precision}" if self.inference_precision else "")

    def options(self, base: RunnerOptions) -> RunnerOptions:
        return registry.with_precision(base, self.inference_precision)

    def runner(self, bundle: Any, base: RunnerOptions) -> Runner:
        return registry.make_runner(bundle, self.backend, self.role, self.options(base))

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> "RuntimePath":
        return cls(rec["backend"], rec["role"], rec.get("inference_precision"))


def candidate_paths(bundle: Any, backends: list[str], options: RunnerOptions) -> tuple[list[RuntimePath], list[dict]]:
    """Paths of the bundle's precision on each of ``backends`` that can run here, and {backend, skipped} for the rest.
    Reduced compute precisions (bf16, f16) only for fp16 / int8 bundles: an fp32 bundle stays exact."""
    role = bundle.precision if bundle.precision in registry.ONNX_ROLES else "fp32"
    paths, skipped = [], []
    for name in backends:
        why = registry.cannot_run(bundle, name, role)
        if why:
            skipped.append({"backend": name, "role": role, "skipped": why})
            continue
        precisions = registry.get_backend(name).inference_precisions(options)
        paths += [RuntimePath(name, role, p) for p in precisions if role != "fp32" or p not in REDUCED]
    return paths, skipped


def _timing_options(options: RunnerOptions) -> RunnerOptions:
    """``options`` for runners timed side by side: they share the cores, so ONNX Runtime's threads do not
    spin; each path sets its own inference precision (RuntimePath.options)."""
    return RunnerOptions(threads=options.threads, spinning=False, device=options.device, cache_dir=options.cache_dir)


def _time_paths(runners: dict[str, Runner], x: np.ndarray, rounds: int) -> dict[str, float]:
    return interleaved_ms({k: (lambda r=r: r.infer(x)) for k, r in runners.items()}, rounds=rounds, warmup=3)


def measure_paths(bundle: Any, paths: list[RuntimePath], data: str, split: str, limit: int = SELECTION_IMAGES,
                  max_miou_drop: float = DEFAULT_MAX_MIOU_DROP, options: RunnerOptions = RunnerOptions(),
                  rounds: int = TIMING_ROUNDS, log: Callable[[str], None] = print) -> dict[str, Any]:
    """``manifest["runtime"]``: every path's median latency (interleaved, batch 1, a real image) and mIoU on
    ``limit`` images of ``split``, with the FP32 reference mIoU (ONNX Runtime) on the same images."""
    from edgeseg.data import open_dataset
    from edgeseg.train.evaluate import evaluate

    dataset = open_dataset(data, split)
    options = _timing_options(options)
    pre = bundle.preprocessing

    def miou(runner: Runner) -> float:
        return round(evaluate(runner, dataset, pre, batch_size=1, limit=limit).miou(), 3)

    with registry.make_runner(bundle, registry.fallback_backend().name, "fp32", options) as ref:
        fp32_miou = miou(ref)
    runners = {p.key: p.runner(bundle, options) for p in paths}
    records: list[dict[str, Any]] = []
    try:
        for path in paths:
            runner = runners[path.key].activate()
            score = miou(runner)
            records.append({"path": path.key, "backend": path.backend, "role": path.role,
                            "inference_precision": path.inference_precision,
                            "computed_in": runner.inference_precision, "miou": score,
                            "miou_drop": round(fp32_miou - score, 3)})
        x = pre(dataset[0][0])[None]
        latency = _time_paths(runners, x, rounds)
    finally:
        for runner in runners.values():
            runner.deactivate()
    for rec in records:
        rec["latency_ms_median"] = round(latency[rec["path"]], 3)
        log(f"runtime {rec['path']}: {rec['latency_ms_median']:.2f} ms, mIoU {rec['miou']:.2f} on {split} "
            f"({-rec['miou_drop']:+.2f} vs FP32)")
    return {"machine": cpu_description(), "threads": options.threads,
            "selection": {"data": data, "split": split, "images": min(limit, len(dataset)), "fp32_miou": fp32_miou,
                          "max_miou_drop": max_miou_drop, "timing": f"median of {rounds} interleaved rounds, batch 1"},
            "paths": records}


@dataclass
class Choice:
    runner: Runner
    path: str  # e.g. "openvino:int8@bf16", or "trt:engine"
    reason: str


def _eligible(bundle: Bundle, runtime: dict[str, Any], options: RunnerOptions) -> tuple[list[dict], str]:
    """Recorded paths this machine can run that meet the budget (else the most accurate ones), and how."""
    budget = runtime["selection"]["max_miou_drop"]
    precisions: dict[str, tuple[str | None, ...]] = {}
    runnable = []
    for rec in runtime["paths"]:
        path = RuntimePath.from_record(rec)
        if registry.cannot_run(bundle, path.backend, path.role) is not None:
            continue
        if path.backend not in precisions:
            precisions[path.backend] = registry.get_backend(path.backend).inference_precisions(options)
        if path.inference_precision in precisions[path.backend]:
            runnable.append(rec)
    if not runnable:
        return [], ""
    within = [r for r in runnable if r["miou_drop"] <= budget]
    if within:
        return within, f"within the bundle's mIoU budget ({budget} below FP32 on {runtime['selection']['split']})"
    best = max(r["miou"] for r in runnable)
    return ([r for r in runnable if r["miou"] == best],
            f"no path meets the mIoU budget {budget}: the most accurate ({best:.2f} on {runtime['selection']['split']})")


def select_runner(bundle: Bundle, backend: str = "auto", options: RunnerOptions = RunnerOptions()) -> Choice:
    """The runner for ``backend`` ("auto": see the module docstring), inactive, with the reason."""
    if backend != "auto":
        b = registry.get_backend(backend)
        role = b.default_role(bundle)
        runner = registry.make_runner(bundle, backend, role, options)
        return Choice(runner, f"{backend}:{role}", f"{b.title} on {bundle.file(role).name} (asked for)")
    for b in registry.accelerators():
        if registry.cannot_run(bundle, b.name) is None:
            role = b.default_role(bundle)
            return Choice(registry.make_runner(bundle, b.name, role, options), f"{b.name}:{role}",
                          f"{b.title} on {bundle.file(role).name}: an accelerator that runs this bundle here")
    runtime = bundle.manifest.get("runtime") or {}
    eligible, why = _eligible(bundle, runtime, options) if runtime.get("paths") else ([], "")
    if not eligible:
        fallback = registry.fallback_backend()
        role = fallback.default_role(bundle)
        note = ("no runtime measurements in the manifest" if not runtime.get("paths")
                else "none of the measured runtimes runs here")
        return Choice(registry.make_runner(bundle, fallback.name, role, options), f"{fallback.name}:{role}",
                      f"{fallback.title} on {bundle.file(role).name} ({note})")
    here = cpu_description()
    if same_machine_type(runtime["machine"], here):
        best = min(eligible, key=lambda r: r["latency_ms_median"])
        others = ", ".join(f"{r['path']} {r['latency_ms_median']:.1f} ms" for r in eligible if r is not best)
        reason = (f"fastest measured at build time on this machine type ({here['cpu']}): {best['path']} "
                  f"{best['latency_ms_median']:.1f} ms{', vs ' + others if others else ''}; {why}")
        return Choice(RuntimePath.from_record(best).runner(bundle, options), best["path"], reason)
    latency = _measure_here(bundle, eligible, options)
    best = min(eligible, key=lambda r: latency[r["path"]])
    figures = ", ".join(f"{k} {v:.1f} ms" for k, v in sorted(latency.items(), key=lambda kv: kv[1]))
    reason = (f"measured here ({here['cpu']}; the build measured on {runtime['machine']['cpu']}): {figures}; "
              f"{best['path']} is the fastest {why}")
    return Choice(RuntimePath.from_record(best).runner(bundle, options), best["path"], reason)


def _measure_here(bundle: Bundle, eligible: list[dict], options: RunnerOptions) -> dict[str, float]:
    """Median latency of each eligible path on this machine, interleaved, on one random image."""
    runners = {r["path"]: RuntimePath.from_record(r).runner(bundle, _timing_options(options)) for r in eligible}
    try:
        for r in runners.values():
            r.activate()
        shape = next(iter(runners.values())).input_spec.min_shape
        x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
        return _time_paths(runners, x, LOAD_TIMING_ROUNDS)
    finally:
        for r in runners.values():
            r.deactivate()
