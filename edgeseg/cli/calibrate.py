"""`edgeseg calibrate`: draw a calibration set, write its manifest, optionally compare calibrators."""
from __future__ import annotations

import tempfile
from pathlib import Path

import click

from edgeseg.cli.group import main
from edgeseg.cli.options import onnx_preprocessing
from edgeseg.errors import EdgesegError
from edgeseg.quantize.layouts import LAYOUT_NAMES


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
@click.option("--layout", type=click.Choice(LAYOUT_NAMES), default="cpu", show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace --out FILE.json even when it is not a calibration manifest.")
def calibrate_cmd(onnx_path: Path, data: str, split: str, count: int, seed: int, out: Path, mean: str | None,
                  std: str | None, scale: float | None, compare: bool, val_split: str, layout: str,
                  overwrite: bool) -> None:
    """Draw a class-stratified calibration set, write its manifest and check it for sets that would ruin INT8."""
    from edgeseg.quantize.calib_set import draw_calibration_set, iter_calibration_inputs
    from edgeseg.quantize.ptq import calibration_stats, compare_calibrators, miou_evaluator

    pre = onnx_preprocessing(onnx_path, mean, std, scale)
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
