"""`edgeseg train`: train a model (single process or under torchrun)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from edgeseg.cli.group import main
from edgeseg.cli.options import parse_size
from edgeseg.train.config import CLASS_WEIGHTS, OPTIMIZERS, TrainConfig


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
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default="sgd", show_default=True)
@click.option("--weight-decay", default=1e-4, show_default=True)
@click.option("--crop", default=None, help="Training crop HxW (default: input size or frame size).")
@click.option("--input-size", default=None, help="Network input HxW at eval and deployment (default: frame size).")
@click.option("--class-weights", type=click.Choice(CLASS_WEIGHTS), default="none", show_default=True)
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

    from edgeseg.train.loop import train

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
