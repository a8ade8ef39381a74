"""U-Net (Ronneberger et al. 2015) and U-Net decoders on the edgeseg backbones.

``UNet`` is the original encoder-decoder: double 3x3 conv-ReLU blocks, four 2x2 max-pool steps
down (64 -> 1024 channels at width 1), dropout at the end of the contracting path, four 2x2
up-convolutions that halve the channels, concatenation with the encoder feature of the same
level, and a 1x1 classifier. Deviation from the paper: the 3x3 convs are padded and the pools
round up (``ceil_mode``), so the output has the input's size for any input size (the paper's
unpadded convs shrink the map and need overlap-tile cropping); up-convolutions are cropped to
the skip's size.

``UNetOnBackbone`` keeps the decoder but takes its encoder from a backbone's c2..c5 features
(strides 4..32); its decoder blocks use BatchNorm like those backbones, and the 1/4-resolution
logits are upsampled bilinearly to the input size.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def double_conv(in_ch: int, out_ch: int, norm: bool = False) -> nn.Sequential:
    """(3x3 conv, padding 1 -> [BN] -> ReLU) x 2."""
    layers: list[nn.Module] = []
    for c_in in (in_ch, out_ch):
        layers.append(nn.Conv2d(c_in, out_ch, 3, padding=1, bias=not norm))
        if norm:
            layers.append(nn.BatchNorm2d(out_ch))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class UpBlock(nn.Module):
    """2x2 up-convolution (stride 2) -> crop to the skip's size -> concatenate [skip, up] -> double conv."""

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int, norm: bool = False) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_ch, out_ch, 2, stride=2)
        self.conv = double_conv(skip_ch + out_ch, out_ch, norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = self.up(x)[..., : skip.shape[-2], : skip.shape[-1]]
        return self.conv(torch.cat([skip, up], dim=1))


def _he_init(module: nn.Module) -> None:
    """The paper's init: Gaussian with std sqrt(2 / fan_in) for every conv."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class UNet(nn.Module):
    """The original U-Net (padded); ``width`` scales the channels (1.0 = 64..1024)."""

    def __init__(self, num_classes: int, width: float = 1.0, in_ch: int = 3) -> None:
        super().__init__()
        chans = [max(1, round(c * width)) for c in (64, 128, 256, 512, 1024)]
        self.inc = double_conv(in_ch, chans[0])
        self.downs = nn.ModuleList(
            nn.Sequential(nn.MaxPool2d(2, ceil_mode=True), double_conv(c_in, c_out))
            for c_in, c_out in zip(chans[:-1], chans[1:]))
        self.dropout = nn.Dropout(0.5)
        self.ups = nn.ModuleList(UpBlock(c_in, c_out, c_out) for c_in, c_out in zip(chans[:0:-1], chans[-2::-1]))
        self.classifier = nn.Conv2d(chans[0], num_classes, 1)
        _he_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        y = self.dropout(skips.pop())
        for up in self.ups:
            y = up(y, skips.pop())
        return self.classifier(y)


class UNetOnBackbone(nn.Module):
    """U-Net decoder on backbone features: c5 -> up + c4 -> up + c3 -> up + c2 -> 1x1 classifier."""

    def __init__(self, backbone: nn.Module, channels: dict[str, int], num_classes: int,
                 decoder: Sequence[int] = (256, 128, 64)) -> None:
        super().__init__()
        self.backbone = backbone
        ins = [channels["c5"], *decoder[:-1]]
        self.ups = nn.ModuleList(UpBlock(c_in, channels[key], c_out, norm=True)
                                 for c_in, key, c_out in zip(ins, ("c4", "c3", "c2"), decoder))
        self.classifier = nn.Conv2d(decoder[-1], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(x)
        y = feats["c5"]
        for up, key in zip(self.ups, ("c4", "c3", "c2")):
            y = up(y, feats[key])
        return F.interpolate(self.classifier(y), size=x.shape[-2:], mode="bilinear", align_corners=False)
