"""Fully convolutional networks.

* ``FCN``: torchvision's layout (dilated backbone at output stride 8 + FCNHead, bilinear upsampling).
* ``FCNSkip``: the paper's FCN-32s / 16s / 8s: 1x1 conv score layers instead of fully connected
  layers, skip connections from the stride-16 and stride-8 stages, learnable transposed-conv
  upsampling initialised to bilinear.
"""
from __future__ import annotations

import torch
from torch import nn

from edgeseg.models.layers import SimpleSegmentationModel, bilinear_conv_transpose


class FCNHead(nn.Sequential):
    """3x3 Conv-BN-ReLU to in/4 channels -> dropout -> 1x1 classifier (torchvision's layout)."""

    def __init__(self, in_ch: int, num_classes: int) -> None:
        mid = in_ch // 4
        super().__init__(
            nn.Conv2d(in_ch, mid, 3, padding=1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Dropout(0.1),
            nn.Conv2d(mid, num_classes, 1),
        )


class FCN(SimpleSegmentationModel):
    """Backbone features "c5" -> FCNHead -> bilinear upsampling to the input size."""


def _crop_to(x: torch.Tensor, size: torch.Size) -> torch.Tensor:
    return x[..., : size[0], : size[1]]


class FCNSkip(nn.Module):
    """FCN-{32,16,8}s on a backbone at output stride 32 (``stride`` = coarsest prediction stride)."""

    def __init__(self, backbone: nn.Module, channels: dict[str, int], num_classes: int, stride: int) -> None:
        super().__init__()
        if stride not in (32, 16, 8):
            raise ValueError(f"FCN stride must be 32, 16 or 8, got {stride}")
        self.backbone = backbone
        self.stride = stride
        self.score_c5 = nn.Conv2d(channels["c5"], num_classes, 1)
        self.skips = nn.ModuleDict()
        self.up2 = nn.ModuleDict()
        for key, s in (("c4", 16), ("c3", 8)):
            if stride <= s:
                self.skips[key] = nn.Conv2d(channels[key], num_classes, 1)
                nn.init.zeros_(self.skips[key].weight)  # the paper starts skips at zero: FCN-8s begins as FCN-32s
                nn.init.zeros_(self.skips[key].bias)
                self.up2[key] = bilinear_conv_transpose(num_classes, 2)
        self.up_final = bilinear_conv_transpose(num_classes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(x)
        score = self.score_c5(feats["c5"])
        for key, skip in self.skips.items():  # c4 then c3
            skip_score = skip(feats[key])
            score = _crop_to(self.up2[key](score), skip_score.shape[-2:]) + skip_score
        return _crop_to(self.up_final(score), x.shape[-2:])
