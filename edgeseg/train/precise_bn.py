"""Precise BatchNorm statistics (Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021; fvcore's
update_bn_stats): replace the running mean/variance that training left behind, an exponential average
of the last few mini-batches of augmented crops, by the average over many frames as deployment sees
them (the model's own preprocessing at its input size, no augmentation).

Only the statistics change: weights are untouched and every other layer runs in eval mode (dropout
off), so the frames flow through the network exactly as at inference.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader

from edgeseg.data.base import SegmentationDataset
from edgeseg.data.preprocess import Preprocessing
from edgeseg.errors import EdgesegError
from edgeseg.train.evaluate import _as_lists, _EvalSamples


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recompute_bn_statistics(model: nn.Module, dataset: SegmentationDataset, preprocessing: Preprocessing, *,
                            images: int | None = None, batch_size: int = 8, device: str | torch.device = "cpu",
                            log: Callable[[str], None] = print) -> int:
    """Set every BatchNorm's running statistics to the equally weighted average of the batch statistics
    over the first ``images`` frames of ``dataset`` (all when None) in batches of ``batch_size``, as
    training computes them (a last partial batch is dropped); returns the number of frames used. Frames
    must share one size after preprocessing (a BatchNorm after global pooling needs >= 2 per batch).
    The model is left in eval mode."""
    layers = batchnorm_layers(model)
    if not layers:
        raise EdgesegError("the model has no BatchNorm layer with running statistics; there is nothing to recompute")
    count = len(dataset) if images is None else min(images, len(dataset))
    batch_size = min(batch_size, count)
    if batch_size < 2:
        raise EdgesegError(f"expected at least 2 images and a batch size >= 2 to recompute BatchNorm statistics, "
                           f"got {count} image(s) and batch size {batch_size}; pass more --images or a larger "
                           "--batch-size")
    loader = DataLoader(_EvalSamples(dataset, preprocessing, count), batch_size=batch_size, shuffle=False,
                        drop_last=True, collate_fn=_as_lists)
    momenta = [m.momentum for m in layers]
    model.eval()
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: every batch counts the same
        m.train()
    seen = 0
    try:
        for batch, _ in loader:
            if any(b.shape != batch[0].shape for b in batch):
                raise EdgesegError(f"BatchNorm statistics need frames of one size per batch, got "
                                   f"{sorted({tuple(b.shape[1:]) for b in batch})}; give the model a fixed input "
                                   "size (train/export --input-size) or use a dataset whose frames share one size")
            model(torch.stack(batch).to(device))
            seen += len(batch)
            log(f"BatchNorm statistics: {seen}/{count} images")
    finally:
        for m, momentum in zip(layers, momenta):
            m.momentum = momentum
        model.eval()
    return seen
