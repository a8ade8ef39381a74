"""DeepLab v1 (atrous VGG-16 + LargeFOV head), v2 (ASPP that sums atrous branches), v3 (atrous
backbone + ASPP with image pooling) and v3+ (v3 encoder + low-level decoder)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from edgeseg.models.layers import ASPP, SimpleSegmentationModel, conv3x3_block, conv_bn_relu


def _caffe_score_init(conv: nn.Conv2d) -> nn.Conv2d:
    """DeepLab v1/v2's Caffe init of the class-score convs: Gaussian std 0.01, zero bias."""
    nn.init.normal_(conv.weight, std=0.01)
    nn.init.zeros_(conv.bias)
    return conv


class LargeFOVHead(nn.Sequential):
    """DeepLab v1 LargeFOV: fc6 as a 3x3 conv with dilation 12 and 1024 channels, fc7 1x1 1024,
    ReLU + dropout 0.5 after each, fc8 1x1 to the classes (``channels`` = 1024 x the VGG width)."""

    def __init__(self, in_ch: int, num_classes: int, channels: int = 1024, rate: int = 12) -> None:
        super().__init__(
            nn.Conv2d(in_ch, channels, 3, padding=rate, dilation=rate), nn.ReLU(inplace=True), nn.Dropout(0.5),
            nn.Conv2d(channels, channels, 1), nn.ReLU(inplace=True), nn.Dropout(0.5),
            _caffe_score_init(nn.Conv2d(channels, num_classes, 1)),
        )


class ASPPv2(nn.Module):
    """DeepLab v2's ASPP: one 3x3 atrous conv per rate, each giving class logits, summed
    (the ResNet-101 variant of the paper: each branch is a single conv to the classes)."""

    def __init__(self, in_ch: int, num_classes: int, rates: Sequence[int]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            _caffe_score_init(nn.Conv2d(in_ch, num_classes, 3, padding=r, dilation=r)) for r in rates)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branches[0](x)
        for branch in self.branches[1:]:
            out = out + branch(x)
        return out


class DeepLabV1(SimpleSegmentationModel):
    """Atrous VGG-16 features "c5" (output stride 8) -> LargeFOV head -> bilinear upsampling."""


class DeepLabV2(SimpleSegmentationModel):
    """Atrous backbone features "c5" -> ASPP-v2 (summed branches) -> bilinear upsampling."""


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
