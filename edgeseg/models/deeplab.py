"""DeepLab v3 (atrous backbone + ASPP) and DeepLab v3+ (v3 encoder + low-level decoder)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from edgeseg.models.layers import ASPP, SimpleSegmentationModel, conv3x3_block, conv_bn_relu


class DeepLabHead(nn.Sequential):
    """ASPP -> 3x3 Conv-BN-ReLU -> 1x1 classifier (torchvision's DeepLabHead layout)."""

    def __init__(self, in_ch: int, num_classes: int, rates: Sequence[int], separable: bool = False,
                 channels: int = 256) -> None:
        super().__init__(
            ASPP(in_ch, rates, channels, separable),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, num_classes, 1),
        )


class DeepLabV3(SimpleSegmentationModel):
    """Backbone features "c5" -> DeepLabHead -> bilinear upsampling to the input size."""


class DeepLabV3PlusDecoder(nn.Module):
    """Fuses ASPP output with 1/4-resolution low-level features (projected to 48 channels),
    refines with two 3x3 convs and classifies."""

    def __init__(self, low_ch: int, num_classes: int, channels: int = 256, low_proj: int = 48,
                 separable: bool = True) -> None:
        super().__init__()
        self.low_proj = conv_bn_relu(low_ch, low_proj, 1)
        self.refine = nn.Sequential(
            conv3x3_block(channels + low_proj, channels, separable=separable),
            conv3x3_block(channels, channels, separable=separable),
        )
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, aspp_out: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        high = F.interpolate(aspp_out, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.classifier(self.refine(torch.cat([high, self.low_proj(low)], dim=1)))


class DeepLabV3Plus(nn.Module):
    """DeepLab v3+: encoder (backbone + ASPP), decoder on "c2" features, upsampled to the input size."""

    def __init__(self, backbone: nn.Module, channels: dict[str, int], num_classes: int, rates: Sequence[int],
                 separable: bool = True, aspp_channels: int = 256) -> None:
        super().__init__()
        self.backbone = backbone
        self.aspp = ASPP(channels["c5"], rates, aspp_channels, separable, dropout=0.1)
        self.decoder = DeepLabV3PlusDecoder(channels["c2"], num_classes, aspp_channels, separable=separable)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(x)
        logits = self.decoder(self.aspp(feats["c5"]), feats["c2"])
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
