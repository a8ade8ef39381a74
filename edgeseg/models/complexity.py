"""Parameter and multiply-add counts, measured by running the model once under torch's FLOP counter."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class Complexity:
    params: int
    macs: int  # multiply-adds for one image at ``input_size``
    layers: int  # Conv / ConvTranspose / BatchNorm / Linear modules
    input_size: tuple[int, int]


LAYER_TYPES = (nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d, nn.Linear)


def measure_complexity(model: nn.Module, input_size: tuple[int, int] = (360, 480)) -> Complexity:
    """Count parameters, conv/matmul multiply-adds (FLOPs / 2) and layers of ``model`` in eval mode."""
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, 3, *input_size))
    model.train(was_training)
    return Complexity(
        params=sum(p.numel() for p in model.parameters()),
        macs=counter.get_total_flops() // 2,
        layers=sum(isinstance(m, LAYER_TYPES) for m in model.modules()),
        input_size=tuple(input_size),
    )
