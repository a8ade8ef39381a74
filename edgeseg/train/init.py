"""Where a training run's weights start: random (``--pretrained none``), an ImageNet backbone
(``--pretrained imagenet``), a classification checkpoint for the backbone (``--pretrained FILE``),
or another segmentation model (``--init CKPT``, fine-tuning with a new class count).

Returns the normalisation the weights were trained with, so preprocessing follows them.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from edgeseg.data.preprocess import Preprocessing
from edgeseg.errors import EdgesegError
from edgeseg.models.init_weights import load_for_finetuning, read_init_weights
from edgeseg.models.pretrained import file_weights, imagenet_weights, load_backbone_weights
from edgeseg.models.registry import ModelConfig, split_name


@dataclass(frozen=True)
class Normalization:
    mean: tuple[float, ...]
    std: tuple[float, ...]
    scale: float = 1.0 / 255.0
    channel_order: str = "RGB"

    def preprocessing(self, size: tuple[int, int] | None) -> Preprocessing:
        return Preprocessing(mean=tuple(self.mean), std=tuple(self.std), scale=self.scale,
                             channel_order=self.channel_order, size=size)


def initialise(model: nn.Module, config: ModelConfig, pretrained: str, init: Path | None,
               log: Callable[[str], None]) -> Normalization | None:
    """Load the starting weights into ``model``; None when the default (ImageNet) normalisation applies."""
    if init is not None and pretrained != "none":
        raise EdgesegError(f"--init {init} and --pretrained {pretrained} both set the starting weights; pass one")
    if init is not None:
        state, prep = read_init_weights(init)
        log("init " + load_for_finetuning(model, config, state, str(init)).summary())
        return None if prep is None else Normalization(prep.mean, prep.std, prep.scale, prep.channel_order)
    if pretrained == "none":
        return None
    _, backbone = split_name(config.name)
    if backbone is None:
        raise EdgesegError(f"{config.name} has no backbone for --pretrained; use a unet_BACKBONE model or "
                           "--pretrained none")
    weights = imagenet_weights(backbone) if pretrained == "imagenet" else file_weights(pretrained, backbone)
    log("pretrained backbone " + load_backbone_weights(model, backbone, weights).summary())
    log(f"preprocessing follows the weights: mean {list(weights.mean)} std {list(weights.std)}")
    return Normalization(weights.mean, weights.std)
