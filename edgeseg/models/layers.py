"""Building blocks shared by the DeepLab and FCN heads.

Each block is a plain ``nn.Sequential`` (or a tiny module) so that state_dict keys follow
torchvision's segmentation heads and fusion can walk them.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn_relu(in_ch: int, out_ch: int, kernel_size: int = 1, dilation: int = 1) -> nn.Sequential:
    """Conv (no bias, 'same' padding) -> BatchNorm -> ReLU."""
    padding = (kernel_size - 1) // 2 * dilation
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel_size, padding=padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class SeparableConvBNReLU(nn.Sequential):
    """Depthwise (atrous) conv -> BN -> pointwise 1x1 conv -> BN -> ReLU.

    As in Xception and DeepLab v3+, there is no non-linearity between the depthwise and the
    pointwise conv by default, so after BN folding the pair is one linear map (see fuse.py).
    ``act_between=True`` inserts a ReLU there (MobileNet style).
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, dilation: int = 1,
                 act_between: bool = False) -> None:
        padding = (kernel_size - 1) // 2 * dilation
        layers: list[nn.Module] = [
            nn.Conv2d(in_ch, in_ch, kernel_size, padding=padding, dilation=dilation, groups=in_ch, bias=False),
            nn.BatchNorm2d(in_ch),
        ]
        if act_between:
            layers.append(nn.ReLU(inplace=True))
        layers += [nn.Conv2d(in_ch, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True)]
        super().__init__(*layers)


def conv3x3_block(in_ch: int, out_ch: int, dilation: int = 1, separable: bool = False) -> nn.Sequential:
    """A 3x3 Conv-BN-ReLU, dense or depthwise separable."""
    if separable:
        return SeparableConvBNReLU(in_ch, out_ch, 3, dilation)
    return conv_bn_relu(in_ch, out_ch, 3, dilation)


class ASPPPooling(nn.Sequential):
    """Image-level pooling branch: global average -> 1x1 Conv-BN-ReLU -> broadcast back."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(in_ch, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        for module in self:
            x = module(x)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """Atrous Spatial Pyramid Pooling: 1x1 + one 3x3 atrous branch per rate + image pooling,
    concatenated and projected to ``out_ch``. Key names match torchvision's ASPP."""

    def __init__(self, in_ch: int, rates: Sequence[int], out_ch: int = 256, separable: bool = False,
                 dropout: float = 0.5) -> None:
        super().__init__()
        branches: list[nn.Module] = [conv_bn_relu(in_ch, out_ch, 1)]
        branches += [conv3x3_block(in_ch, out_ch, rate, separable) for rate in rates]
        branches.append(ASPPPooling(in_ch, out_ch))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(
            nn.Conv2d(len(branches) * out_ch, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([branch(x) for branch in self.convs], dim=1))


def bilinear_upsampling_weight(channels: int, kernel_size: int) -> torch.Tensor:
    """ConvTranspose2d weight [C, 1, k, k] (groups=C) or diagonal [C, C, k, k] that performs
    bilinear upsampling, as the FCN paper initialises its deconvolution layers."""
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    og = torch.arange(kernel_size, dtype=torch.float32)
    filt = 1 - (og - center).abs() / factor
    kernel = filt[:, None] * filt[None, :]
    weight = torch.zeros(channels, channels, kernel_size, kernel_size)
    weight[range(channels), range(channels)] = kernel
    return weight


def bilinear_conv_transpose(channels: int, factor: int) -> nn.ConvTranspose2d:
    """Learnable x``factor`` upsampling (kernel 2f, stride f, padding f/2) initialised to bilinear.

    Output size is exactly ``factor`` times the input size, so the caller only crops.
    """
    up = nn.ConvTranspose2d(channels, channels, 2 * factor, stride=factor, padding=factor // 2, bias=False)
    with torch.no_grad():
        up.weight.copy_(bilinear_upsampling_weight(channels, 2 * factor))
    return up


class SimpleSegmentationModel(nn.Module):
    """Backbone -> head on the last feature map ("c5") -> bilinear upsampling to the input size
    (torchvision's _SimpleSegmentationModel, without the aux head and dict output)."""

    def __init__(self, backbone: nn.Module, classifier: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.classifier(self.backbone(x)["c5"])
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
