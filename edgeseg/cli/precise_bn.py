"""`edgeseg precise-bn`: recompute a checkpoint's BatchNorm statistics (PreciseBN)."""
from __future__ import annotations

from pathlib import Path

import click

from edgeseg.cli.group import main
from edgeseg.errors import EdgesegError


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
