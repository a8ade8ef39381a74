"""`edgeseg export`: fuse, export to ONNX and check parity with ONNX Runtime."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from edgeseg.cli.group import main
from edgeseg.cli.options import explicit_preprocessing, parse_size
from edgeseg.data.resize import RESIZE_METHODS
from edgeseg.errors import EdgesegError


def _export_source(checkpoint: Path | None, model_name: str | None, weights: Path | None,
                   num_classes: int | None, preprocessing=None):
    """(model, metadata, default input size) for export: an edgeseg checkpoint, torchvision weights,
    or an untrained ``--model NAME --num-classes N`` (for benchmarks). The last two record no
    preprocessing: ``preprocessing()`` builds the one the user states (or refuses)."""
    if checkpoint is not None:
        from edgeseg.models.checkpoint import load_checkpoint

        ckpt = load_checkpoint(checkpoint)
        return ckpt.build(), ckpt.export_metadata(), ckpt.preprocessing.size
    if model_name is None:
        raise EdgesegError("expected --checkpoint CKPT, or --model NAME (with --weights FILE or --num-classes N); "
                           "got neither; pass one")
    if weights is not None:
        from edgeseg.models import load_torchvision_state_dict

        pre = preprocessing(f"--weights {weights}")  # before loading: a missing flag fails fast
        model = load_torchvision_state_dict(model_name, weights, num_classes)
        return model, {"model": model_name, "preprocessing": pre, "weights": "torchvision"}, None
    if num_classes is None:
        raise EdgesegError(f"--model {model_name} without --weights exports untrained weights and needs --num-classes N; "
                           "pass --weights FILE or --num-classes")
    from edgeseg.models import ModelConfig, build_model

    pre = preprocessing(f"--model {model_name} without --weights (untrained)")
    model = build_model(ModelConfig(model_name, num_classes)).eval()
    return model, {"model": model_name, "preprocessing": pre, "weights": "untrained"}, None


def _print_fusion(console, fusion) -> None:
    from rich.table import Table

    b, a = fusion.before, fusion.after
    console.print(f"fusion ({fusion.strategy}; cost model {fusion.cost_model}): {fusion.folded_bn} BatchNorms folded, "
                  f"{fusion.collapsed}/{len(fusion.blocks)} separable blocks collapsed; params "
                  f"{b.params / 1e6:.3f}M -> {a.params / 1e6:.3f}M, GMACs {b.macs / 1e9:.3f} -> {a.macs / 1e9:.3f} "
                  f"at {fusion.input_size[0]}x{fusion.input_size[1]}, layers {b.layers} -> {a.layers}")
    if fusion.unfolded_bn:
        console.print(f"  BatchNorms left unfolded (not after a conv in a known chain): {', '.join(fusion.unfolded_bn)}")
    if fusion.blocks:
        table = Table(title="depthwise-separable blocks")
        for col in ("block", "C->O", "k", "dil", "MMACs before", "MMACs after", "choice", "reason"):
            table.add_column(col, justify="right" if col.startswith(("k", "dil", "MMACs")) else "left")
        for d in fusion.blocks:
            table.add_row(d.name, f"{d.in_channels}->{d.out_channels}", str(d.kernel_size), str(d.dilation),
                          f"{d.macs_before / 1e6:.2f}", f"{d.macs_after / 1e6:.2f}", d.choice, d.reason)
        console.print(table)


@main.command("export")
@click.option("--checkpoint", type=click.Path(path_type=Path), default=None, help="An edgeseg checkpoint.")
@click.option("--model", "model_name", default=None, help="Model name: a torchvision name with --weights, or any "
              "name with --num-classes for untrained weights.")
@click.option("--weights", type=click.Path(path_type=Path), default=None, help="torchvision state_dict file.")
@click.option("--num-classes", type=int, default=None)
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="Output FILE.onnx (written atomically). Replaces an earlier edgeseg export; any other file is "
                   "refused unless --overwrite.")
@click.option("--overwrite", is_flag=True, help="Replace --out even when it is not an earlier edgeseg ONNX export.")
@click.option("--input-size", default=None, help="HxW (default: the checkpoint's input size, else 360x480).")
@click.option("--batch", default=1, show_default=True, help="Batch size (the opt batch when --dynamic batch).")
@click.option("--dynamic", type=click.Choice(["batch", "hw", "both"]), default=None, help="Dynamic dims (default static).")
@click.option("--min-size", default=None, help="Smallest HxW for --dynamic hw/both (default half the input size).")
@click.option("--max-size", default=None, help="Largest HxW for --dynamic hw/both (default twice the input size).")
@click.option("--max-batch", type=int, default=None, help="Largest batch for --dynamic batch/both (default max(8, batch)).")
@click.option("--opset", default=17, show_default=True, help="ONNX opset (TensorRT 8.6 parses up to 17).")
@click.option("--argmax", is_flag=True, help="Output int32 class labels (N,H,W) named 'labels' instead of logits.")
@click.option("--no-fuse", is_flag=True, help="Export the module as is (BatchNorm kept), to compare.")
@click.option("--fuse-strategy", type=click.Choice(["auto", "keep", "collapse"]), default="auto", show_default=True,
              help="Depthwise-separable blocks: cost model, keep all, collapse all.")
@click.option("--parity-data", default=None, help="Dataset spec KIND:PATH for parity on real frames (default random).")
@click.option("--parity-split", default="val", show_default=True)
@click.option("--parity-images", default=8, show_default=True)
@click.option("--imagenet-preprocessing", is_flag=True, help="With --weights or --num-classes: record torchvision's "
              "ImageNet mean/std (a checkpoint carries its own; these models carry none).")
@click.option("--mean", default=None, help="With --weights or --num-classes: R,G,B mean in 0-1 units.")
@click.option("--std", default=None, help="With --weights or --num-classes: R,G,B std in 0-1 units.")
@click.option("--scale", type=float, default=None, help="With --mean/--std: pixel scale (default 1/255).")
@click.option("--resize", type=click.Choice(RESIZE_METHODS), default=None,
              help="With --weights or --num-classes: the resize definition to record (default bilinear).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
def export_cmd(checkpoint: Path | None, model_name: str | None, weights: Path | None, num_classes: int | None,
               out: Path, overwrite: bool, input_size: str | None, batch: int, dynamic: str | None,
               min_size: str | None, max_size: str | None, max_batch: int | None, opset: int, argmax: bool,
               no_fuse: bool,
               fuse_strategy: str, parity_data: str | None, parity_split: str, parity_images: int,
               imagenet_preprocessing: bool, mean: str | None, std: str | None, scale: float | None,
               resize: str | None, as_json: bool) -> None:
    """Fuse, export to ONNX (opset 17, TensorRT-parsable), simplify, and check parity with ONNX Runtime."""
    from edgeseg.export.onnx_export import (
        default_bounds,
        edgeseg_onnx_precision,
        export_onnx,
        parity_images_from_dataset,
    )
    from edgeseg.out_dir import check_inputs_outside, check_out_file

    check_out_file(out, lambda p: edgeseg_onnx_precision(p) == "fp32", "an FP32 ONNX written by edgeseg export",
                   overwrite=overwrite)  # before any work
    check_inputs_outside(out, {"--checkpoint": checkpoint, "--weights": weights})
    if checkpoint is not None and (imagenet_preprocessing or mean or std or scale or resize):
        raise EdgesegError("--checkpoint records its own preprocessing; drop --imagenet-preprocessing/--mean/--std/"
                           "--scale/--resize so the export cannot drift from training")
    model, meta, ckpt_size = _export_source(
        checkpoint, model_name, weights, num_classes,
        lambda what: explicit_preprocessing(what, mean, std, scale, imagenet_preprocessing, resize))
    size = parse_size(input_size) or (tuple(ckpt_size) if ckpt_size else (360, 480))
    bounds = default_bounds(size, batch, dynamic)
    lo, hi = parse_size(min_size), parse_size(max_size)
    if (lo or hi) and "height" not in bounds:
        raise EdgesegError("--min-size/--max-size need --dynamic hw or both; add it or drop them")
    if max_batch is not None and "batch" not in bounds:
        raise EdgesegError("--max-batch needs --dynamic batch or both; add it or drop it")
    if lo:
        bounds["height"], bounds["width"] = (lo[0],) + bounds["height"][1:], (lo[1],) + bounds["width"][1:]
    if hi:
        bounds["height"], bounds["width"] = bounds["height"][:2] + (hi[0],), bounds["width"][:2] + (hi[1],)
    if max_batch is not None:
        bounds["batch"] = bounds["batch"][:2] + (max_batch,)
    images = None
    if parity_data is not None:
        images = parity_images_from_dataset(parity_data, parity_split, parity_images, meta["preprocessing"], size)
    report = export_onnx(model, out, input_size=size, batch=batch, dynamic=dynamic, bounds=bounds, opset=opset,
                         argmax=argmax, metadata=meta, fuse=not no_fuse, fuse_strategy=fuse_strategy,
                         parity_images=images)
    if as_json:
        click.echo(json.dumps(report.to_dict(), default=str))
    else:
        _print_report(report)
    if not report.ok:
        click.echo("error: parity check failed (see above); the file was written for inspection", err=True)
        sys.exit(1)


def _print_report(report) -> None:
    """Fusion, parity per input shape, and the file written."""
    from rich.console import Console

    console = Console()
    if report.fusion is not None:
        _print_fusion(console, report.fusion)
    for p in report.parity:
        diff = ("labels only" if p.max_abs_diff is None else
                f"max |logit diff| {p.max_abs_diff:.2e} (tolerance {p.tolerance:.0e}, max |logit| {p.logit_scale:.3g})")
        console.print(f"parity {p.input_hw[0]}x{p.input_hw[1]} batch {p.batch} ({p.images} {p.source} inputs): "
                      f"{diff}, argmax agreement {p.argmax_agreement:.4f}% -> {'ok' if p.ok else 'FAILED'}")
    console.print(f"wrote {report.path} ({report.size_bytes / 1e6:.1f} MB, opset {report.opset}, "
                  f"{report.nodes} nodes, input {report.input_shape}, output {report.output_name}, "
                  f"{report.seconds:.1f} s)")
