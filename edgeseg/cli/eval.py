"""`edgeseg eval`: confusion matrix, per-class IoU, mIoU and pixel accuracy of a model on a split."""
from __future__ import annotations

import json
from pathlib import Path

import click

from edgeseg.cli.group import main
from edgeseg.errors import EdgesegError


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
