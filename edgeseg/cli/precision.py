"""`edgeseg calibrate` and `edgeseg quantize`: calibration sets, INT8 Q/DQ and FP16 ONNX."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import click

from edgeseg.cli.group import explicit_preprocessing, main
from edgeseg.errors import EdgesegError


def _preprocessing(onnx_path: Path, mean: str | None, std: str | None, scale: float | None):
    """The model's preprocessing from its ONNX metadata; --mean/--std/--scale only where it has none."""
    from edgeseg.export.metadata import read_preprocessing

    found = read_preprocessing(onnx_path)
    if found is not None:
        if mean or std:
            raise EdgesegError(f"{onnx_path} already records its preprocessing ({found.to_dict()}); drop --mean/--std "
                               "so calibration cannot drift from training")
        return found
    return explicit_preprocessing(f"{onnx_path} (no edgeseg metadata)", mean, std, scale)


@main.command("calibrate")
@click.option("--onnx", "onnx_path", required=True, type=click.Path(path_type=Path), help="FP32 ONNX (with metadata).")
@click.option("--data", required=True, help="Dataset spec KIND:PATH, or images:FOLDER for unlabelled images.")
@click.option("--split", default="train", show_default=True)
@click.option("--count", default=100, show_default=True, help="Images in the calibration set.")
@click.option("--seed", default=0, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("calibration"), show_default=True,
              help="Manifest file, or a folder to name it in.")
@click.option("--mean", default=None, help="Only for ONNX without metadata: R,G,B mean (0-1 units).")
@click.option("--std", default=None)
@click.option("--scale", type=float, default=None)
@click.option("--compare", is_flag=True, help="Try every calibrator and report INT8 mIoU on --val-split.")
@click.option("--val-split", default="val", show_default=True)
@click.option("--layout", type=click.Choice(["cpu", "trt"]), default="cpu", show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace --out FILE.json even when it is not a calibration manifest.")
def calibrate_cmd(onnx_path: Path, data: str, split: str, count: int, seed: int, out: Path, mean: str | None,
                  std: str | None, scale: float | None, compare: bool, val_split: str, layout: str,
                  overwrite: bool) -> None:
    """Draw a class-stratified calibration set, write its manifest and check it (calibration doctor)."""
    from edgeseg.quantize.calib_set import draw_calibration_set, iter_calibration_inputs
    from edgeseg.quantize.ptq import calibration_stats, compare_calibrators, miou_evaluator

    pre = _preprocessing(onnx_path, mean, std, scale)
    manifest, warnings = draw_calibration_set(data, split, count, pre, seed)
    from edgeseg.io_utils import ensure_parent, make_dirs

    if out.suffix == ".json":
        ensure_parent(out)
    else:
        make_dirs(out)
    path = manifest.save(out, overwrite)
    click.echo(f"calibration set: {manifest.count} images from {data} {split} -> {path} (sha256 {manifest.sha256[:12]})")
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    if compare:
        if data.startswith("images:"):
            raise EdgesegError("--compare needs labelled data to measure mIoU; use a dataset spec, not images:")
        stats, hit = calibration_stats(onnx_path, manifest, pre)
        click.echo(f"activation statistics: {'cache hit' if hit else 'collected'} ({len(stats)} tensors)")
        with tempfile.TemporaryDirectory() as tmp:
            rows = compare_calibrators(onnx_path, stats, layout, miou_evaluator(data, val_split, pre), tmp, pre,
                                       calib_inputs=lambda: iter_calibration_inputs(manifest, pre))
        for row in rows:
            click.echo(f"  {row['calibrator']:<10} mIoU {row['miou']:.2f}")
        best = max(rows[1:], key=lambda r: r["miou"])
        click.echo(f"best calibrator: {best['calibrator']} ({rows[0]['miou'] - best['miou']:+.2f} below FP32)")


@main.command("quantize")
@click.option("--onnx", "onnx_path", required=True, type=click.Path(path_type=Path), help="FP32 ONNX (with metadata).")
@click.option("--precision", type=click.Choice(["int8", "fp16"]), required=True)
@click.option("--out", required=True, type=click.Path(path_type=Path))
@click.option("--calib", type=click.Path(path_type=Path), default=None, help="Calibration manifest (int8).")
@click.option("--data", default=None, help="Dataset spec whose root holds the manifest's images (another machine).")
@click.option("--layout", type=click.Choice(["cpu", "trt"]), default="cpu", show_default=True)
@click.option("--calibrator", type=click.Choice(["entropy", "percentile", "mse", "minmax"]), default="entropy",
              show_default=True)
@click.option("--trt-cache", type=click.Path(path_type=Path), default=None, help="Also write a TensorRT calibration cache.")
@click.option("--trt-version", default="8.6.1", show_default=True)
@click.option("--fp16-scales", is_flag=True, help="trt layout: FP16 scales and graph (strongly typed TensorRT 10/11; "
              "needs an opset >= 19 export).")
@click.option("--max-miou-drop", type=float, default=None, help="Keep sensitive layers in float until the drop fits.")
@click.option("--val-data", default=None, help="Held-out data for the guard (default: the manifest's dataset).")
@click.option("--val-split", default="val", show_default=True)
@click.option("--allow-changed", is_flag=True, help="Use calibration images whose hash changed.")
@click.option("--no-bias-correction", is_flag=True, help="Keep the FP32 biases (default: shift each quantized "
              "Conv's bias so its output mean on the calibration set matches FP32).")
@click.option("--mean", default=None)
@click.option("--std", default=None)
@click.option("--scale", type=float, default=None)
@click.option("--json", "as_json", is_flag=True)
def quantize_cmd(onnx_path: Path, precision: str, out: Path, calib: Path | None, data: str | None, layout: str,
                 calibrator: str, trt_cache: Path | None, trt_version: str, fp16_scales: bool,
                 max_miou_drop: float | None,
                 val_data: str | None, val_split: str, allow_changed: bool, no_bias_correction: bool,
                 mean: str | None, std: str | None, scale: float | None, as_json: bool) -> None:
    """Write an INT8 Q/DQ (cpu or trt layout) or FP16 ONNX from an FP32 ONNX."""
    from edgeseg.io_utils import ensure_parent

    ensure_parent(out)
    if precision == "fp16":
        from edgeseg.quantize.fp16 import convert_fp16

        convert_fp16(onnx_path, out)
        click.echo(f"fp16 model -> {out}")
        return
    from edgeseg.quantize.calib_set import iter_calibration_inputs, load_manifest
    from edgeseg.quantize.ptq import SENSITIVITY_IMAGES, Int8Options, build_int8, calibration_stats, miou_evaluator

    if calib is None:
        raise EdgesegError("--precision int8 needs --calib MANIFEST (make one with `edgeseg calibrate`)")
    pre = _preprocessing(onnx_path, mean, std, scale)
    manifest = load_manifest(calib)
    if manifest.preprocessing != pre:
        click.echo(f"warning: the manifest was drawn for preprocessing {manifest.preprocessing.to_dict()} but the "
                   f"model uses {pre.to_dict()}; calibrating with the model's", err=True)
    root = data.split(":", 1)[1] if data and ":" in data else None
    stats, hit = calibration_stats(onnx_path, manifest, pre, root, allow_changed)
    miou_of = sens = None
    if max_miou_drop is not None:
        spec = val_data or data or manifest.source.get("spec")
        miou_of = miou_evaluator(spec, val_split, pre)
        sens = list(iter_calibration_inputs(manifest, pre, root, allow_changed))[:SENSITIVITY_IMAGES]
    size = pre.size
    report = build_int8(onnx_path, out, stats, layout=layout, calibrator=calibrator, stats_cache_hit=hit,
                        trt_cache=trt_cache, trt_version=trt_version, max_miou_drop=max_miou_drop, miou_of=miou_of,
                        sensitivity_inputs=sens, latency_shape=(1, 3, *size) if size else None,
                        fp16_scales=fp16_scales, preprocessing=pre,
                        options=Int8Options(bias_correction=not no_bias_correction),
                        calib_inputs=lambda: iter_calibration_inputs(manifest, pre, root, allow_changed))
    summary = {"out": str(out), "layout": layout, "calibrator": calibrator, "stats_cache_hit": hit,
               "trt_cache": str(report.trt_cache) if report.trt_cache else None}
    if report.guard is not None:
        g = report.guard
        summary.update(fp32_miou=g.fp32_miou, int8_miou=g.int8_miou, final_miou=g.final_miou, fits=g.fits,
                       kept_high_precision=g.excluded, tries=g.tries, latency_ms=g.latency_ms)
    if as_json:
        click.echo(json.dumps(summary))
        return
    click.echo(f"int8 ({layout}, {calibrator}) -> {out}  [statistics: {'cache hit' if hit else 'collected'}]")
    if report.trt_cache:
        click.echo(f"TensorRT calibration cache -> {report.trt_cache}")
    if report.guard is not None:
        g = report.guard
        click.echo(f"mIoU fp32 {g.fp32_miou:.2f}, int8 {g.int8_miou:.2f}, final {g.final_miou:.2f} "
                   f"({'within' if g.fits else 'NOT within'} {g.max_drop} points)")
        if g.excluded:
            click.echo(f"kept in high precision ({len(g.excluded)}): {', '.join(g.excluded)}")
        if g.latency_ms:
            click.echo(f"latency int8 {g.latency_ms['int8']:.1f} ms -> mixed {g.latency_ms['mixed']:.1f} ms")
