"""Evaluate a model on a dataset split at the labels' native resolution.

Each frame goes through the model's own ``Preprocessing``; logits are resized (bilinear) back to
the label size before the argmax, so a model with a fixed input size is scored the standard way.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, Union

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from edgeseg.data.base import SegmentationDataset
from edgeseg.data.preprocess import Preprocessing
from edgeseg.metrics import ConfusionMatrix
from edgeseg.postprocess import labels_from_logits


class _EvalSamples(Dataset):
    def __init__(self, dataset: SegmentationDataset, preprocessing: Preprocessing, limit: int | None) -> None:
        self.dataset, self.preprocessing = dataset, preprocessing
        self.length = len(dataset) if limit is None else min(limit, len(dataset))

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.dataset[i]
        return torch.from_numpy(self.preprocessing(image)), torch.from_numpy(mask.astype(np.int64))


def _as_lists(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    return [b[0] for b in batch], [b[1] for b in batch]


Predictor = Union[nn.Module, Callable[[torch.Tensor], Any]]  # (N,3,H,W) -> (N,C,H,W) logits (tensor or array)


@torch.no_grad()
def predict_labels(model: Predictor, images: list[torch.Tensor], sizes: list[tuple[int, int]]) -> list[np.ndarray]:
    """Class maps (H, W) at ``sizes`` for preprocessed (3, h, w) images; same-shape images run as one batch."""
    if all(im.shape == images[0].shape for im in images):
        logits = list(torch.as_tensor(model(torch.stack(images))).cpu())
    else:
        logits = [torch.as_tensor(model(im[None]))[0].cpu() for im in images]
    return [labels_from_logits(lg[None], size)[0] for lg, size in zip(logits, sizes)]


def evaluate(model: Predictor, dataset: SegmentationDataset, preprocessing: Preprocessing, *,
             device: str | torch.device = "cpu", batch_size: int = 4, workers: int = 0,
             limit: int | None = None, on_batch: Callable[[int], None] | None = None) -> ConfusionMatrix:
    """Confusion matrix of ``model`` over ``dataset``. A torch module runs in eval mode on ``device``;
    any other predictor (e.g. an ONNX Runtime session wrapper) gets CPU tensors."""
    is_module = isinstance(model, nn.Module)
    was_training = is_module and model.training
    if is_module:
        model.eval()
    loader = DataLoader(_EvalSamples(dataset, preprocessing, limit), batch_size=batch_size, shuffle=False,
                        num_workers=workers, collate_fn=_as_lists)
    cm = ConfusionMatrix(dataset.num_classes, dataset.ignore_index)
    for images, masks in loader:
        images = [im.to(device) for im in images]
        preds = predict_labels(model, images, [tuple(m.shape) for m in masks])
        for pred, mask in zip(preds, masks):
            cm.update(pred, mask.numpy())
        if on_batch is not None:
            on_batch(len(masks))
    if is_module:
        model.train(was_training)
    return cm
