"""`edgeseg build`: checkpoint or ONNX -> artifact bundle for one precision.

    source (checkpoint | ONNX) -> model.onnx (fused, parity-checked, metadata)
      -> fp16: model.fp16.onnx | int8: calibration set -> statistics -> model.int8.onnx (cpu layout)
         + model.int8.trt.onnx / model.int8.trt16.onnx (TensorRT layout) + calibration.cache (implicit INT8)
      -> mIoU on the val split -> runtime paths timed and scored (CPU runtimes available here, see
         edgeseg.bundle.runtimes)
      -> each accelerator that can run here builds its artifacts (the registry's ``build_artifacts``
         hook; TensorRT: model.engine) -> manifest.json

File names come from ``edgeseg.backends.artifacts``. Everything is written into a staging folder that
replaces ``out`` only on success (edgeseg.out_dir: ``out`` may be missing, empty or an earlier edgeseg
bundle; anything else needs ``overwrite``; no input may lie inside it), once every option is checked
(``check_build``). ``finish_engine`` adds an accelerator's artifacts to a
bundle built elsewhere (`edgeseg build --from DIR --backend trt`, on the device).
"""
from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeseg.backends import registry
from edgeseg.backends.artifacts import CALIBRATION_MANIFEST, PRECISIONS, role_file
from edgeseg.bundle.manifest import Bundle, check_bundle_out, read_bundle, staging_dir, write_manifest
from edgeseg.errors import EdgesegError
from edgeseg.out_dir import check_inputs_outside, spec_path

BACKENDS = ("auto", *(b for b in registry.backend_names() if not registry.get_backend(b).reference))
LATENCY_RUNS = 20  # build-time latency figure: a quick median, not a benchmark (see edgeseg bench)


@dataclass
class BuildOptions:
    precision: str
    out: Path
    checkpoint: Path | None = None
    onnx: Path | None = None
    data: str | None = None  # dataset spec for calibration (train split) and mIoU (val split)
    backend: str = "auto"
    input_size: tuple[int, int] | None = None  # default: the checkpoint's preprocessing size or first frame size
    dynamic: str | None = None
    calib_count: int = 64
    calib_split: str = "train"
    calibrator: str = "entropy"
    max_miou_drop: float | None = None
    val_split: str = "val"
    val_limit: int | None = None
    trt_version_for_cache: str = "8.6.1"
    workspace_gb: float = 2.0  # accelerator builds: scratch-memory limit
    dla_core: int | None = None  # accelerator builds: the DLA core (TensorRT on a Jetson)
    overwrite: bool = False  # replace ``out`` even when it holds files that are not an edgeseg bundle's
    select_images: int = 16  # images of calib_split scoring each runtime path (never val_split: it reports)
    runtime_rounds: int = 20  # interleaved timing rounds per runtime path
    source: str | None = None  # what the manifest records as the source (default: the checkpoint or ONNX path)


@dataclass
class BuildResult:
    out: Path
    manifest: dict[str, Any]
    seconds: float
    notes: list[str] = field(default_factory=list)


def _export_checkpoint(opts: BuildOptions, stage: Path, log: Callable[[str], None]) -> tuple[Path, Any]:
    from edgeseg.data import open_dataset
    from edgeseg.export.onnx_export import export_onnx, parity_images_from_dataset
    from edgeseg.models.checkpoint import load_checkpoint

    ckpt = load_checkpoint(opts.checkpoint)
    size = opts.input_size or ckpt.preprocessing.size
    if size is None:
        if opts.data is None:
            raise EdgesegError("the checkpoint records no input size and no --data was given; pass --input-size HxW")
        size = tuple(open_dataset(opts.data, opts.val_split)[0][0].shape[:2])
    pre = ckpt.preprocessing
    parity = parity_images_from_dataset(opts.data, opts.val_split, 4, pre, size) if opts.data else None
    fp32 = stage / role_file("fp32")
    report = export_onnx(ckpt.build(), fp32, input_size=size, dynamic=opts.dynamic,
                         metadata=ckpt.export_metadata(), parity_images=parity)
    if not report.ok:
        raise EdgesegError(f"the exported ONNX does not match the PyTorch model ({report.parity}); report this bug")
    shutil.copyfile(opts.checkpoint, stage / role_file("checkpoint"))
    log(f"exported {ckpt.config.name} at {size[0]}x{size[1]} ({report.nodes} nodes, parity ok)")
    return fp32, ckpt


def check_build(opts: BuildOptions, demo: bool = False) -> None:
    """Refuse bad options before anything is written (an accelerator asked for where it cannot run, too), then
    apply the output-folder rule to ``opts.out``, whose inputs must lie outside it. ``demo``: the checkpoint is
    still to be trained (the demo build checks everything before its training)."""
    _check_options(opts, demo)
    check_bundle_out(opts.out, opts.overwrite)
    check_inputs_outside(opts.out, {"--checkpoint": opts.checkpoint, "--onnx": opts.onnx,
                                    f"--data {opts.data}": spec_path(opts.data)})


def _check_options(opts: BuildOptions, demo: bool) -> None:
    if opts.precision not in PRECISIONS:
        raise EdgesegError(f"--precision must be one of {', '.join(PRECISIONS)}, got {opts.precision!r}")
    if opts.backend not in BACKENDS:
        raise EdgesegError(f"--backend must be one of {', '.join(BACKENDS)}, got {opts.backend!r}")
    if (opts.checkpoint is None) == (opts.onnx is None) and not (demo and opts.onnx is None):
        raise EdgesegError("pass exactly one of --checkpoint CKPT or --onnx FILE (or neither flag for the demo)")
    if opts.backend != "auto":
        backend = registry.get_backend(opts.backend)
        why = backend.unavailable()
        if why and backend.accelerator:
            raise EdgesegError(f"--backend {opts.backend} needs {backend.title} ({why}); build with --backend auto "
                               f"here and finish on the device with `edgeseg build --from DIR --backend {opts.backend}`")
        if why:
            raise EdgesegError(f"--backend {opts.backend} needs {backend.title} ({why}); install it or build with "
                               "--backend auto")
    if opts.precision == "int8" and opts.data is None:
        raise EdgesegError("--precision int8 needs --data SPEC for the calibration images")
    if opts.val_limit is not None and opts.val_limit < 1:
        raise EdgesegError(f"--val-limit must be >= 1 (the val images the mIoU is measured on), got {opts.val_limit}; "
                           "drop it to measure on the whole split")
    if opts.calib_count < 1:
        raise EdgesegError(f"--calib-count must be >= 1, got {opts.calib_count}")


def build_bundle(opts: BuildOptions, log: Callable[[str], None] = print) -> BuildResult:
    """Build the bundle described by ``opts`` into ``opts.out``."""
    check_build(opts)
    t0 = time.time()
    notes: list[str] = []
    with staging_dir(opts.out) as stage:
        if opts.checkpoint is not None:
            fp32, _ = _export_checkpoint(opts, stage, log)
        else:
            fp32 = stage / role_file("fp32")
            shutil.copyfile(opts.onnx, fp32)
        manifest, pre = _base_manifest(opts, fp32)
        roles: dict[str, str] = {"fp32": fp32.name}
        if (stage / role_file("checkpoint")).is_file():
            roles["checkpoint"] = role_file("checkpoint")
        if opts.precision == "fp16":
            from edgeseg.quantize.fp16 import convert_fp16

            roles["fp16"] = convert_fp16(fp32, stage / role_file("fp16")).name
        elif opts.precision == "int8":
            manifest["calibration"] = _build_int8(opts, fp32, pre, stage, roles, log)
        if opts.precision != "fp32":
            from edgeseg.quantize.fp16 import fp32_islands_by_file

            manifest["fp32_ops"] = fp32_islands_by_file(stage, roles)  # what still computes FP32 in each FP16 ONNX
        manifest["metrics"] = _measure_miou(opts, stage, roles, pre, log)
        manifest["runtime"] = _measure_runtimes(opts, stage, dict(manifest, roles=roles), log)
        manifest.update(_accelerator_artifacts(opts, stage, roles, manifest, notes, log))
        manifest["roles"] = roles
        manifest["build"] = {"seconds": round(time.time() - t0, 1)}
        manifest = write_manifest(stage, manifest)
    return BuildResult(Path(opts.out), manifest, time.time() - t0, notes)


def _base_manifest(opts: BuildOptions, fp32: Path) -> tuple[dict[str, Any], Any]:
    """(the manifest's model, classes, preprocessing, precision, input and source; the preprocessing), from
    the FP32 ONNX's edgeseg metadata."""
    from edgeseg.export.metadata import read_onnx_metadata, read_preprocessing

    meta = read_onnx_metadata(fp32)
    pre = read_preprocessing(fp32)
    if pre is None or "classes" not in meta:
        raise EdgesegError(f"{opts.onnx} lacks edgeseg metadata (preprocessing, classes); export it with "
                           "`edgeseg export` so the bundle can stand on its own")
    manifest: dict[str, Any] = {
        "model": meta.get("model"), "classes": meta["classes"], "palette": meta["palette"],
        "preprocessing": pre.to_dict(), "precision": opts.precision, "input": {
            "name": "input", "shape_bounds": meta.get("shape_bounds"), "dynamic": meta.get("dynamic")},
        "output": meta.get("output", "logits"), "source": opts.source or str(opts.checkpoint or opts.onnx)}
    return manifest, pre


def _build_int8(opts: BuildOptions, fp32: Path, pre, stage: Path, roles: dict[str, str],
                log: Callable[[str], None]) -> dict[str, Any]:
    """The INT8 files (cpu-layout Q/DQ, trt-layout Q/DQ with FP32 and with FP16 scales, calibration cache)
    into ``stage`` and ``roles``; returns the manifest's calibration record."""
    from edgeseg.quantize.calib_set import draw_calibration_set, iter_calibration_inputs
    from edgeseg.quantize.ptq import SENSITIVITY_IMAGES, build_int8, calibration_stats, miou_evaluator

    calib, warnings = draw_calibration_set(opts.data, opts.calib_split, opts.calib_count, pre)
    calib.save(stage / CALIBRATION_MANIFEST)
    for warning in warnings:
        log(f"warning: {warning}")
    stats, hit = calibration_stats(fp32, calib, pre)
    log(f"calibration: {calib.count} images, statistics {'from cache' if hit else 'collected'} ({len(stats)} tensors)")
    guard = {}
    if opts.max_miou_drop is not None:
        guard = dict(max_miou_drop=opts.max_miou_drop,
                     miou_of=miou_evaluator(opts.data, opts.val_split, pre, opts.val_limit),
                     sensitivity_inputs=list(iter_calibration_inputs(calib, pre))[:SENSITIVITY_IMAGES])
    inputs = dict(preprocessing=pre, calib_inputs=lambda: iter_calibration_inputs(calib, pre))
    report = build_int8(fp32, stage / role_file("int8"), stats, layout="cpu", calibrator=opts.calibrator,
                        stats_cache_hit=hit, **inputs, **guard)
    roles["int8"] = role_file("int8")
    cache = _build_int8_trt_layout(opts, fp32, pre, stage, roles, stats, inputs, log)
    info: dict[str, Any] = {"manifest": CALIBRATION_MANIFEST, "manifest_sha256": calib.sha256, "count": calib.count,
                            "calibrator": opts.calibrator, "split": opts.calib_split, "trt_cache": cache,
                            "trt_weight_axes": _trt_weight_axes(stage, roles)}
    if report.guard is not None:
        g = report.guard
        info["guard"] = {"max_drop": g.max_drop, "fp32_miou": g.fp32_miou, "int8_miou": g.int8_miou,
                         "final_miou": g.final_miou, "fits": g.fits, "kept_high_precision": g.excluded}
        log(f"guard: kept {len(g.excluded)} layers in float, mIoU {g.int8_miou:.2f} -> {g.final_miou:.2f}")
    return info


def _trt_weight_axes(stage: Path, roles: dict[str, str]) -> dict[str, Any]:
    """Each trt-layout Q/DQ file -> the TensorRT it targets and its per-channel weight axes (ConvTranspose: 0 on
    8.x, 1 on 10.x / 11.x; retarget with edgeseg.backends.trt_lint.retarget_weight_axes_file)."""
    from edgeseg.export.metadata import read_onnx_metadata

    records = {}
    for role in ("int8_trt", "int8_trt_fp16"):
        meta = read_onnx_metadata(stage / roles[role])
        records[roles[role]] = {"trt_target": meta.get("qdq_trt_target"), "axes": meta.get("qdq_weight_axes")}
    return records


def _build_int8_trt_layout(opts: BuildOptions, fp32: Path, pre, stage: Path, roles: dict[str, str], stats,
                           inputs: dict[str, Any], log: Callable[[str], None]) -> str | None:
    """The trt-layout Q/DQ graphs (FP32 scales; FP16 scales, opset 19, for strongly typed builds) and the
    implicit-INT8 calibration cache; returns the cache's file name (None: the calibrator has no replayable
    table)."""
    from edgeseg.quantize.ptq import build_int8, int8_ranges
    from edgeseg.quantize.qdq import fp16_qdq_graph
    from edgeseg.quantize.trt_cache import ALGORITHMS

    # the implicit-INT8 calibrators replay only entropy / minmax tables
    cache = stage / role_file("calibration_cache") if opts.calibrator in ALGORITHMS else None
    build_int8(fp32, stage / role_file("int8_trt"), stats, layout="trt", calibrator=opts.calibrator,
               trt_cache=cache, trt_version=opts.trt_version_for_cache, **inputs)
    roles["int8_trt"] = role_file("int8_trt")
    if cache is not None:
        roles["calibration_cache"] = cache.name
    else:
        log(f"note: no {role_file('calibration_cache')}: TensorRT has no {opts.calibrator} calibrator to replay it "
            "(entropy and minmax only); the engine is built from the Q/DQ ONNX")
    fp16_qdq_graph(fp32, stage / role_file("int8_trt_fp16"), int8_ranges(fp32, stats, opts.calibrator, "trt", pre))
    roles["int8_trt_fp16"] = role_file("int8_trt_fp16")
    return cache.name if cache is not None else None


def _measure_miou(opts: BuildOptions, stage: Path, roles: dict[str, str], pre, log) -> dict[str, Any]:
    if opts.data is None:
        return {}
    import numpy as np

    from edgeseg.backends.onnxruntime import OrtRunner
    from edgeseg.data import open_dataset
    from edgeseg.timing import time_calls
    from edgeseg.train.evaluate import evaluate

    dataset = open_dataset(opts.data, opts.val_split)
    images = len(dataset) if opts.val_limit is None else min(len(dataset), opts.val_limit)
    if images == 0:
        raise EdgesegError(f"{opts.data} has no {opts.val_split} images to measure the mIoU on; give the dataset a "
                           f"{opts.val_split} split")
    result: dict[str, Any] = {"data": opts.data, "split": opts.val_split, "images": images, "miou": {},
                              "latency_ms_median": {}, "latency_runs": LATENCY_RUNS}
    for precision in dict.fromkeys(["fp32", opts.precision]):
        with OrtRunner(stage / roles[precision]) as runner:  # one session for accuracy and latency
            cm = evaluate(runner, dataset, pre, batch_size=1, limit=opts.val_limit)
            x = np.random.default_rng(0).standard_normal(runner.input_spec.min_shape, dtype=np.float32)
            latency = float(np.median(time_calls(lambda: runner.infer(x), LATENCY_RUNS, 0.0, warmup=3)))
        miou = cm.miou()  # NaN when no pixel of the images is labelled: recorded as null, never as NaN
        result["miou"][precision] = round(miou, 3) if np.isfinite(miou) else None
        result["latency_ms_median"][precision] = round(latency, 2)
        log(f"mIoU {precision} (ONNX Runtime CPU, {opts.val_split}): "
            + (f"{miou:.2f}" if np.isfinite(miou) else f"none (no labelled pixel in {images} images)"))
    return result


def _measure_runtimes(opts: BuildOptions, stage: Path, manifest: dict[str, Any], log) -> dict[str, Any] | None:
    """Time and score the CPU runtime paths for the bundle's precision: every CPU runtime available here
    (--backend auto or an accelerator), or only the one asked for."""
    from edgeseg.bundle.runtimes import DEFAULT_MAX_MIOU_DROP, candidate_paths, measure_paths

    if opts.data is None:
        return None
    cpu = registry.get_backend(opts.backend).cpu_runtime if opts.backend != "auto" else False
    names = [opts.backend] if cpu else list(registry.backend_names(cpu_runtime=True))
    staged = {f.name: {} for f in stage.iterdir() if f.is_file()}  # just written here: no hashes to check yet
    bundle = Bundle(stage, dict(manifest, files=staged), check_hashes=False)
    paths, skipped = candidate_paths(bundle, names, registry.RunnerOptions())
    for s in skipped:
        log(f"runtime {s['backend']}: not measured ({s['skipped']})")
    budget = DEFAULT_MAX_MIOU_DROP if opts.max_miou_drop is None else opts.max_miou_drop
    runtime = measure_paths(bundle, paths, opts.data, opts.calib_split, opts.select_images, budget,
                            rounds=opts.runtime_rounds, log=log)
    runtime["skipped"] = skipped
    return runtime


def _accelerator_artifacts(opts: BuildOptions, stage: Path, roles: dict[str, str], manifest: dict[str, Any],
                           notes: list[str], log: Callable[[str], None]) -> dict[str, Any]:
    """Each accelerator's manifest record: built by its registry hook when it is asked for (``--backend auto``
    or its name) and can run here, else None (with a note saying how to finish on the device)."""
    records: dict[str, Any] = {}
    for backend in registry.artifact_builders():
        records[backend.record] = None
        if opts.backend not in ("auto", backend.name):
            continue
        why = backend.unavailable()
        if why:
            notes.append(f"{why}: the bundle holds the ONNX files for the CPU runtimes. On the device run: "
                         f"edgeseg build --from {opts.out} --backend {backend.name}")
            continue
        request = registry.ArtifactRequest(stage, roles, manifest, opts.precision, opts.workspace_gb,
                                           opts.dla_core, log=log)
        records[backend.record] = backend.build_artifacts(request)
    return records


def finish_engine(bundle_dir: Path, workspace_gb: float = 2.0, dla_core: int | None = None,
                  log: Callable[[str], None] = print, backend: str | None = None) -> BuildResult:
    """`edgeseg build --from DIR --backend trt`: add an accelerator's artifacts (TensorRT: the engine) to an
    existing bundle, on the device. ``backend``: the accelerator (default: every one that builds artifacts
    and can run here; none is an EdgesegError naming what is missing)."""
    from edgeseg.bundle.manifest import verify_bundle

    builders = [registry.get_backend(backend)] if backend else registry.artifact_builders()
    usable = [b for b in builders if b.build_artifacts is not None and b.unavailable() is None]
    if not usable:
        why = "; ".join(f"{b.title}: {b.unavailable() or 'builds no artifacts'}" for b in builders)
        raise EdgesegError(f"no accelerator can build its artifacts here ({why}); run this on the device, with "
                           "the accelerator's runtime installed")
    t0 = time.time()
    bundle = read_bundle(bundle_dir)
    verify_bundle(bundle)
    with staging_dir(Path(bundle_dir)) as stage:
        for name in bundle.manifest["files"]:
            shutil.copyfile(bundle.member(name), stage / name)
        manifest = dict(bundle.manifest)
        roles = dict(manifest["roles"])
        for b in usable:
            request = registry.ArtifactRequest(stage, roles, manifest, bundle.precision, workspace_gb, dla_core,
                                               on_device=True, log=log)
            manifest[b.record] = b.build_artifacts(request)
        manifest["roles"] = roles
        manifest = write_manifest(stage, manifest)
    return BuildResult(Path(bundle_dir), manifest, time.time() - t0)
