"""`edgeseg quantize`: an INT8 Q/DQ or FP16 ONNX from an FP32 ONNX."""
from __future__ import annotations

import json
from pathlib import Path

import click

from edgeseg.backends.artifacts import PRECISIONS
from edgeseg.cli.group import main
from edgeseg.cli.options import onnx_preprocessing
from edgeseg.errors import EdgesegError
from edgeseg.quantize.calibrators import CALIBRATOR_NAMES
from edgeseg.quantize.layouts import LAYOUT_NAMES

QUANTIZE_PRECISIONS = tuple(p for p in PRECISIONS if p != "fp32")  # what quantize writes from an FP32 ONNX


@main.command("quantize")
@click.option("--onnx", "onnx_path", required=True, type=click.Path(path_type=Path), help="FP32 ONNX (with metadata).")
@click.option("--precision", type=click.Choice(QUANTIZE_PRECISIONS), required=True)
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="Output FILE.onnx. Replaces an earlier edgeseg INT8/FP16 ONNX; any other file is refused unless "
                   "--overwrite.")
@click.option("--overwrite", is_flag=True, help="Replace --out (and --trt-cache) even when it is not an earlier output "
              "of this command.")
@click.option("--calib", type=click.Path(path_type=Path), default=None, help="Calibration manifest (int8).")
@click.option("--data", default=None, help="Dataset spec whose root holds the manifest's images (another machine).")
@click.option("--layout", type=click.Choice(LAYOUT_NAMES), default="cpu", show_default=True)
@click.option("--calibrator", type=click.Choice(CALIBRATOR_NAMES), default="entropy",
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
def quantize_cmd(onnx_path: Path, precision: str, out: Path, overwrite: bool, calib: Path | None, data: str | None,
                 layout: str, calibrator: str, trt_cache: Path | None, trt_version: str, fp16_scales: bool,
                 max_miou_drop: float | None, val_data: str | None, val_split: str, allow_changed: bool,
                 no_bias_correction: bool,
                 mean: str | None, std: str | None, scale: float | None, as_json: bool) -> None:
    """Write an INT8 Q/DQ (cpu or trt layout) or FP16 ONNX from an FP32 ONNX."""
    if trt_cache is not None and precision != "int8":
        raise EdgesegError(f"--trt-cache is an INT8 calibration table; --precision {precision} writes none; drop "
                           "--trt-cache or quantize with --precision int8")
    _check_outputs(onnx_path, calib, out, trt_cache, overwrite)
    if precision == "fp16":
        from edgeseg.quantize.fp16 import convert_fp16

        convert_fp16(onnx_path, out)
        click.echo(f"fp16 model -> {out}")
        return
    from edgeseg.quantize.calib_set import iter_calibration_inputs, load_manifest
    from edgeseg.quantize.ptq import SENSITIVITY_IMAGES, Int8Options, build_int8, calibration_stats, miou_evaluator

    if calib is None:
        raise EdgesegError("--precision int8 needs --calib MANIFEST (make one with `edgeseg calibrate`)")
    pre = onnx_preprocessing(onnx_path, mean, std, scale)
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
    if as_json:
        click.echo(json.dumps(_summary(report, out, layout, calibrator, hit)))
    else:
        _print_report(report, out, layout, calibrator, hit)


def _is_calibration_cache(path: Path) -> bool:
    """A TensorRT calibration cache edgeseg can replay (its first line ``TRT-<version>-<Algorithm>``)."""
    from edgeseg.backends import trt_api

    try:
        with open(path, "rb") as f:
            trt_api.calibration_algorithm(f.read(256))
    except (OSError, EdgesegError):
        return False
    return True


def _check_outputs(onnx_path: Path, calib: Path | None, out: Path, trt_cache: Path | None, overwrite: bool) -> None:
    """The output rule (edgeseg.out_dir) for --out and --trt-cache, before any work: each missing or this
    command's earlier output of its kind, two different files, and neither one an input."""
    from edgeseg.export.onnx_export import edgeseg_onnx_precision
    from edgeseg.out_dir import check_inputs_outside, check_out_file

    check_out_file(out, lambda p: edgeseg_onnx_precision(p) in ("int8", "fp16"),
                   "an INT8 or FP16 ONNX written by edgeseg quantize", overwrite=overwrite)
    check_inputs_outside(out, {"--onnx": onnx_path, "--calib": calib})
    if trt_cache is not None:
        check_out_file(trt_cache, _is_calibration_cache, "a TensorRT calibration cache", overwrite=overwrite,
                       flag="--trt-cache")
        check_inputs_outside(trt_cache, {"--onnx": onnx_path, "--calib": calib}, flag="--trt-cache")
        if trt_cache.resolve() == out.resolve():
            raise EdgesegError(f"--trt-cache {trt_cache} is --out {out}: the two outputs would replace each other; "
                               "choose another --trt-cache")


def _summary(report, out: Path, layout: str, calibrator: str, hit: bool) -> dict:
    """What --json prints: the output, how it was calibrated, and the mIoU guard's figures when it ran."""
    summary = {"out": str(out), "layout": layout, "calibrator": calibrator, "stats_cache_hit": hit,
               "trt_cache": str(report.trt_cache) if report.trt_cache else None}
    if report.guard is not None:
        g = report.guard
        summary.update(fp32_miou=g.fp32_miou, int8_miou=g.int8_miou, final_miou=g.final_miou, fits=g.fits,
                       kept_high_precision=g.excluded, tries=g.tries, latency_ms=g.latency_ms)
    return summary


def _print_report(report, out: Path, layout: str, calibrator: str, hit: bool) -> None:
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
