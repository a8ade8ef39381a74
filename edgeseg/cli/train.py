"""`edgeseg models`, `train`, `eval`."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from edgeseg.cli.group import main, parse_size
from edgeseg.errors import EdgesegError


@main.command("models")
@click.option("--input-size", default="360x480", show_default=True, help="HxW for the multiply-add count.")
@click.option("--num-classes", default=21, show_default=True)
@click.option("--filter", "pattern", default="", help="Only names containing this text.")
def models_cmd(input_size: str, num_classes: int, pattern: str) -> None:
    """List the models with parameters and multiply-adds."""
    from rich.console import Console
    from rich.table import Table

    from edgeseg.models import MODEL_NAMES, TORCHVISION_NAMES, ModelConfig, build_model, measure_complexity, split_name
    from edgeseg.models.backbones import BACKBONE_SPECS

    size = parse_size(input_size)
    table = Table(title=f"edgeseg models ({num_classes} classes, MACs at {size[0]}x{size[1]})")
    table.add_column("name", no_wrap=True)
    for col in ("OS", "params (M)", "GMACs", "torchvision"):
        table.add_column(col, justify="right")
    table.add_column("ImageNet weights (--pretrained imagenet)", overflow="fold")
    for name in MODEL_NAMES:
        if pattern not in name:
            continue
        cfg = ModelConfig(name, num_classes).resolved()
        c = measure_complexity(build_model(cfg), size)
        backbone = split_name(name)[1]
        table.add_row(name, str(cfg.output_stride), f"{c.params / 1e6:.2f}", f"{c.macs / 1e9:.2f}",
                      "yes" if name in TORCHVISION_NAMES else "",
                      BACKBONE_SPECS[backbone].imagenet if backbone else "-")
    Console().print(table)


@main.command("train")
@click.option("--model", "model_name", required=True, help="e.g. deeplabv3plus_mobilenet_v2 (see `edgeseg models`).")
@click.option("--data", required=True, multiple=True,
              help="Dataset spec KIND:PATH, e.g. camvid:/data/CamVid or synthetic; repeat to train on several "
                   "datasets with the same classes.")
@click.option("--train-split", default="train", show_default=True, help="Training split(s), e.g. train+val.")
@click.option("--val-split", default="val", show_default=True,
              help="Split that picks best.pt; none: no validation (best.pt = last epoch).")
@click.option("--pretrained", default="none", show_default=True,
              help="Backbone start: imagenet (torchvision / timm weights, cached or downloaded), a classification "
                   "state_dict FILE (.pth / .safetensors), or none.")
@click.option("--init", "init", type=click.Path(path_type=Path), default=None,
              help="Fine-tune from an edgeseg checkpoint or segmentation state_dict; the classifier is "
                   "re-initialised when the class count differs.")
@click.option("--freeze-backbone", default=0, show_default=True, help="Epochs with the backbone frozen.")
@click.option("--ema", type=float, default=None, help="EMA decay of the weights (e.g. 0.999); best_ema.pt.")
@click.option("--no-sync-bn", is_flag=True, help="Per-process BatchNorm statistics under torchrun.")
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
@click.option("--overwrite", is_flag=True,
              help="Replace OUT even when it holds files other than an earlier run's best.pt / last.pt.")
@click.option("--max-train-samples", type=int, default=None, hidden=True)
@click.option("--max-val-samples", type=int, default=None, hidden=True)
def train_cmd(model_name: str, data: tuple[str, ...], train_split: str, val_split: str, pretrained: str,
              init: Path | None, freeze_backbone: int, ema: float | None, no_sync_bn: bool, epochs: int, out: Path, batch_size: int, lr: float | None, optimizer: str,
              weight_decay: float, crop: str | None, input_size: str | None, class_weights: str,
              output_stride: str | None, width: float, dense: bool, workers: int, seed: int, device: str,
              resume: bool, overwrite: bool, max_train_samples: int | None, max_val_samples: int | None) -> None:
    """Train a model; runs unchanged under `torchrun --nproc_per_node N`."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from edgeseg.train.loop import TrainConfig, train

    cfg = TrainConfig(model=model_name, data=data[0] if len(data) == 1 else list(data), out=out, epochs=epochs, batch_size=batch_size, lr=lr,
                      optimizer=optimizer, weight_decay=weight_decay, crop=parse_size(crop), input_size=parse_size(input_size),
                      class_weights=class_weights, output_stride=int(output_stride) if output_stride else None,
                      width=width, separable=False if dense else None, workers=workers, seed=seed, device=device,
                      resume=resume, overwrite=overwrite, max_train_samples=max_train_samples, max_val_samples=max_val_samples,
                      train_split=train_split, val_split=val_split, pretrained=pretrained, init=init,
                      freeze_backbone=freeze_backbone, ema=ema, sync_bn=not no_sync_bn)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TextColumn("loss {task.fields[loss]:.4f}  {task.fields[speed]:.1f} img/s"), TimeRemainingColumn(),
                  transient=True, disable=not sys.stderr.isatty()) as bar:
        task = bar.add_task("train", total=1, loss=0.0, speed=0.0)

        def on_step(step: int, total: int, loss: float, speed: float) -> None:
            bar.update(task, completed=step, total=total, loss=loss, speed=speed)

        result = train(cfg, log=bar.console.print, progress=on_step)
    if os.environ.get("RANK", "0") == "0":  # every rank returns the same result; one prints it
        score = "no validation" if result.best_miou is None else f"best val mIoU {result.best_miou:.2f}"
        click.echo(f"{score} -> {result.best_path} ({result.seconds / 60:.1f} min)")
        if result.best_ema_path is not None:
            click.echo(f"EMA: {result.best_ema_path}"
                       + (f" (val mIoU {result.best_ema_miou:.2f})" if result.best_ema_miou is not None else ""))


def _load_model(checkpoint: Path | None, model_name: str | None, weights: Path | None, num_classes: int | None):
    """(model, preprocessing, classes) from an edgeseg checkpoint or torchvision weights."""
    from edgeseg.data import Preprocessing
    from edgeseg.models import load_torchvision_state_dict
    from edgeseg.models.checkpoint import load_checkpoint

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
    from edgeseg.train.evaluate import evaluate

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


@main.command("precise-bn")
@click.option("--checkpoint", type=click.Path(path_type=Path), required=True, help="edgeseg checkpoint to read.")
@click.option("--data", required=True, help="Dataset spec KIND:PATH (the training data).")
@click.option("--split", default="train", show_default=True, help="Split whose frames give the statistics.")
@click.option("--images", type=int, default=None, help="First N frames of the split (default: all).")
@click.option("--batch-size", default=8, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="New checkpoint file.")
@click.option("--overwrite", is_flag=True, help="Replace --out when it exists.")
def precise_bn_cmd(checkpoint: Path, data: str, split: str, images: int | None, batch_size: int, out: Path,
                   overwrite: bool) -> None:
    """Recompute BatchNorm statistics over frames as deployment sees them (PreciseBN); weights unchanged."""
    import dataclasses

    from edgeseg.data import open_dataset
    from edgeseg.io_utils import ensure_parent
    from edgeseg.models.checkpoint import load_checkpoint, save_checkpoint
    from edgeseg.train.precise_bn import recompute_bn_statistics

    if out.resolve() == checkpoint.resolve():
        raise EdgesegError(f"--out {out} is the checkpoint being read; expected a new file; choose another --out")
    if out.exists() and not overwrite:
        raise EdgesegError(f"--out {out} exists and writing it would replace it; choose another --out or pass "
                           "--overwrite")
    ensure_parent(out)
    ckpt = load_checkpoint(checkpoint)
    dataset = open_dataset(data, split)
    if dataset.num_classes != len(ckpt.classes):
        raise EdgesegError(f"{checkpoint} predicts {len(ckpt.classes)} classes but {data} has {dataset.num_classes}; "
                           "use the dataset the model was trained on")
    model = ckpt.build()
    used = recompute_bn_statistics(model, dataset, ckpt.preprocessing, images=images, batch_size=batch_size,
                                   log=lambda s: click.echo(s, err=True))
    meta = dict(ckpt.meta, bn_statistics={"data": data, "split": split, "images": used, "batch_size": batch_size,
                                          "from": checkpoint.name})
    ensure_parent(out, create=True)
    save_checkpoint(out, dataclasses.replace(ckpt, state_dict=model.state_dict(), meta=meta, train_state=None))
    click.echo(f"wrote {out}: BatchNorm statistics of {used} {split} frames ({data}); training state not kept")
