"""Command line: parse, call one library function, print. User errors (EdgesegError) become one
line on stderr and exit code 2; ``--debug`` shows the traceback."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from edgeseg.errors import EdgesegError


def _size(value: str | None) -> tuple[int, int] | None:
    """'360x480' -> (360, 480)."""
    if value is None:
        return None
    try:
        h, w = (int(v) for v in value.lower().split("x"))
        if h < 1 or w < 1:
            raise ValueError
        return h, w
    except ValueError:
        raise click.BadParameter(f"expected HxW with positive integers (e.g. 360x480), got {value!r}") from None


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except EdgesegError as e:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"error: {e}", err=True)
            sys.exit(2)


@click.group(cls=_Group)
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """edgeseg: DeepLab v3+ and FCN segmentation from training to edge deployment."""
    ctx.obj = {"debug": debug}


@main.command("models")
@click.option("--input-size", default="360x480", show_default=True, help="HxW for the multiply-add count.")
@click.option("--num-classes", default=21, show_default=True)
@click.option("--filter", "pattern", default="", help="Only names containing this text.")
def models_cmd(input_size: str, num_classes: int, pattern: str) -> None:
    """List the models with parameters and multiply-adds."""
    from rich.console import Console
    from rich.table import Table

    from edgeseg.models import MODEL_NAMES, TORCHVISION_NAMES, ModelConfig, build_model, measure_complexity

    size = _size(input_size)
    table = Table(title=f"edgeseg models ({num_classes} classes, MACs at {size[0]}x{size[1]})")
    table.add_column("name", no_wrap=True)
    for col in ("OS", "params (M)", "GMACs", "torchvision"):
        table.add_column(col, justify="right")
    for name in MODEL_NAMES:
        if pattern not in name:
            continue
        cfg = ModelConfig(name, num_classes).resolved()
        c = measure_complexity(build_model(cfg), size)
        table.add_row(name, str(cfg.output_stride), f"{c.params / 1e6:.2f}", f"{c.macs / 1e9:.2f}",
                      "yes" if name in TORCHVISION_NAMES else "")
    Console().print(table)


@main.command("train")
@click.option("--model", "model_name", required=True, help="e.g. deeplabv3plus_mobilenet_v2 (see `edgeseg models`).")
@click.option("--data", required=True, help="Dataset spec KIND:PATH, e.g. camvid:/data/CamVid or synthetic.")
@click.option("--epochs", default=30, show_default=True)
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Folder for best.pt / last.pt.")
@click.option("--batch-size", default=8, show_default=True, help="Per process.")
@click.option("--lr", type=float, default=None, help="Base LR (default 0.01 SGD, 1e-3 AdamW), poly decay.")
@click.option("--optimizer", type=click.Choice(["sgd", "adamw"]), default="sgd", show_default=True)
@click.option("--weight-decay", default=1e-4, show_default=True)
@click.option("--crop", default=None, help="Training crop HxW (default: input size or frame size).")
@click.option("--input-size", default=None, help="Network input HxW at eval and deployment (default: frame size).")
@click.option("--class-weights", type=click.Choice(["none", "median"]), default="none", show_default=True)
@click.option("--output-stride", type=click.Choice(["8", "16"]), default=None)
@click.option("--width", default=1.0, show_default=True, help="MobileNet width multiplier.")
@click.option("--dense", is_flag=True, help="Dense (not depthwise separable) ASPP/decoder convs.")
@click.option("--workers", default=1, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--resume", is_flag=True, help="Continue from OUT/last.pt.")
@click.option("--max-train-samples", type=int, default=None, hidden=True)
@click.option("--max-val-samples", type=int, default=None, hidden=True)
def train_cmd(model_name: str, data: str, epochs: int, out: Path, batch_size: int, lr: float | None, optimizer: str,
              weight_decay: float, crop: str | None, input_size: str | None, class_weights: str,
              output_stride: str | None, width: float, dense: bool, workers: int, seed: int, device: str,
              resume: bool, max_train_samples: int | None, max_val_samples: int | None) -> None:
    """Train a model; runs unchanged under `torchrun --nproc_per_node N`."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from edgeseg.train import TrainConfig, train

    cfg = TrainConfig(model=model_name, data=data, out=out, epochs=epochs, batch_size=batch_size, lr=lr,
                      optimizer=optimizer, weight_decay=weight_decay, crop=_size(crop), input_size=_size(input_size),
                      class_weights=class_weights, output_stride=int(output_stride) if output_stride else None,
                      width=width, separable=False if dense else None, workers=workers, seed=seed, device=device,
                      resume=resume, max_train_samples=max_train_samples, max_val_samples=max_val_samples)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TextColumn("loss {task.fields[loss]:.4f}  {task.fields[speed]:.1f} img/s"), TimeRemainingColumn(),
                  transient=True, disable=not sys.stderr.isatty()) as bar:
        task = bar.add_task("train", total=1, loss=0.0, speed=0.0)

        def on_step(step: int, total: int, loss: float, speed: float) -> None:
            bar.update(task, completed=step, total=total, loss=loss, speed=speed)

        result = train(cfg, log=bar.console.print, progress=on_step)
    click.echo(f"best val mIoU {result.best_miou:.2f} -> {result.best_path} ({result.seconds / 60:.1f} min)")


def _load_model(checkpoint: Path | None, model_name: str | None, weights: Path | None, num_classes: int | None):
    """(model, preprocessing, classes) from an edgeseg checkpoint or torchvision weights."""
    from edgeseg.checkpoint import load_checkpoint
    from edgeseg.data import Preprocessing
    from edgeseg.models import load_torchvision_state_dict

    if checkpoint is not None:
        ckpt = load_checkpoint(checkpoint)
        return ckpt.build(), ckpt.preprocessing, ckpt.classes
    if model_name is None or weights is None:
        raise EdgesegError("expected --checkpoint CKPT, or --model NAME with --weights FILE; got neither; pass one")
    model = load_torchvision_state_dict(model_name, weights, num_classes)
    return model, Preprocessing(), None


@main.command("eval")
@click.option("--checkpoint", type=click.Path(path_type=Path), default=None)
@click.option("--model", "model_name", default=None, help="A torchvision name, with --weights.")
@click.option("--weights", type=click.Path(path_type=Path), default=None)
@click.option("--num-classes", type=int, default=None)
@click.option("--data", required=True, help="Dataset spec KIND:PATH.")
@click.option("--split", default="val", show_default=True)
@click.option("--batch-size", default=4, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def eval_cmd(checkpoint: Path | None, model_name: str | None, weights: Path | None, num_classes: int | None,
             data: str, split: str, batch_size: int, as_json: bool) -> None:
    """Confusion matrix, per-class IoU, mIoU and pixel accuracy on a split."""
    import torch

    from edgeseg.data import open_dataset
    from edgeseg.evaluate import evaluate

    model, preprocessing, classes = _load_model(checkpoint, model_name, weights, num_classes)
    dataset = open_dataset(data, split)
    with torch.no_grad():
        n_out = model(torch.zeros(1, 3, 32, 32)).shape[1] if classes is None else len(classes)
    if n_out != dataset.num_classes:
        raise EdgesegError(f"the model predicts {n_out} classes but {data} has {dataset.num_classes}; "
                           "evaluate on the dataset the model was trained for")
    cm = evaluate(model, dataset, preprocessing, batch_size=batch_size)
    summary = cm.summary(dataset.classes)
    summary.update(split=split, data=data, images=len(dataset))
    if as_json:
        click.echo(json.dumps(summary))
        return
    from rich.console import Console
    from rich.table import Table

    if summary["miou"] is None:
        raise EdgesegError(f"{data} {split} has no labelled pixels (all void); evaluate on a split with labels")
    table = Table(title=f"{data} {split}: mIoU {summary['miou']:.2f}  pixel acc {summary['pixel_acc']:.2f}")
    table.add_column("class")
    table.add_column("IoU", justify="right")
    for name, iou in summary["per_class_iou"].items():
        table.add_row(name, "-" if iou is None else f"{iou:.2f}")
    Console().print(table)


from edgeseg import cli_bench, cli_build, cli_deploy, cli_precision  # noqa: E402,F401  (register their commands)

def _export_source(checkpoint: Path | None, model_name: str | None, weights: Path | None,
                   num_classes: int | None):
    """(model, metadata, default input size) for export: an edgeseg checkpoint, torchvision weights,
    or an untrained ``--model NAME --num-classes N`` (for benchmarks)."""
    from edgeseg.data import Preprocessing

    if checkpoint is not None:
        from edgeseg.checkpoint import load_checkpoint

        ckpt = load_checkpoint(checkpoint)
        return ckpt.build(), ckpt.export_metadata(), ckpt.preprocessing.size
    if model_name is None:
        raise EdgesegError("expected --checkpoint CKPT, or --model NAME (with --weights FILE or --num-classes N); "
                           "got neither; pass one")
    if weights is not None:
        model, _, _ = _load_model(None, model_name, weights, num_classes)
        # torchvision weights: ImageNet preprocessing and generic class names
        return model, {"model": model_name, "preprocessing": Preprocessing(), "weights": "torchvision"}, None
    if num_classes is None:
        raise EdgesegError(f"--model {model_name} without --weights exports untrained weights and needs --num-classes N; "
                           "pass --weights FILE or --num-classes")
    from edgeseg.models import ModelConfig, build_model

    model = build_model(ModelConfig(model_name, num_classes)).eval()
    return model, {"model": model_name, "preprocessing": Preprocessing(), "weights": "untrained"}, None


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
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Output FILE.onnx (written atomically).")
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
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
def export_cmd(checkpoint: Path | None, model_name: str | None, weights: Path | None, num_classes: int | None,
               out: Path, input_size: str | None, batch: int, dynamic: str | None, min_size: str | None,
               max_size: str | None, max_batch: int | None, opset: int, argmax: bool, no_fuse: bool,
               fuse_strategy: str, parity_data: str | None, parity_split: str, parity_images: int,
               as_json: bool) -> None:
    """Fuse, export to ONNX (opset 17, TensorRT-parsable), simplify, and check parity with ONNX Runtime."""
    from edgeseg.export import default_bounds, export_onnx, parity_images_from_dataset
    from edgeseg.io_utils import ensure_parent

    ensure_parent(out)  # fail before any work
    model, meta, ckpt_size = _export_source(checkpoint, model_name, weights, num_classes)
    size = _size(input_size) or (tuple(ckpt_size) if ckpt_size else (360, 480))
    bounds = default_bounds(size, batch, dynamic)
    lo, hi = _size(min_size), _size(max_size)
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
    if not report.ok:
        click.echo("error: parity check failed (see above); the file was written for inspection", err=True)
        sys.exit(1)


@main.command("check")
@click.argument("onnx_path", type=click.Path(path_type=Path))
@click.option("--trt", "trt_version", type=click.Choice(["8.6", "10", "11"]), default="10", show_default=True,
              help="TensorRT version whose ONNX parser to check against.")
@click.option("--dla", is_flag=True, help="Also check DLA restrictions.")
@click.option("--json", "as_json", is_flag=True, help="Print findings as JSON.")
def check_cmd(onnx_path: Path, trt_version: str, dla: bool, as_json: bool) -> None:
    """Lint an ONNX file for the TensorRT parser on CPU; exit code 1 when errors are found."""
    from dataclasses import asdict

    from edgeseg.onnx_check import check_onnx

    findings = check_onnx(onnx_path, trt_version, dla=dla)
    errors = sum(f.severity == "error" for f in findings)
    if as_json:
        click.echo(json.dumps([asdict(f) for f in findings]))
    elif not findings:
        click.echo(f"{onnx_path}: no findings for TensorRT {trt_version}{' DLA' if dla else ''}")
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"{onnx_path}: TensorRT {trt_version}{' DLA' if dla else ''}: {errors} error(s), "
                            f"{len(findings) - errors} warning(s)")
        for col in ("severity", "rule", "node", "message", "fix"):
            table.add_column(col)
        for f in findings:
            table.add_row(f.severity, f.rule, f.node, f.message, f.fix)
        Console().print(table)
    if errors:
        sys.exit(1)


if __name__ == "__main__":
    main()
