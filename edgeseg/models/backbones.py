"""Backbones that return multi-scale features as a dict {"c2": 1/4, "c3": 1/8, "c4": 1/16, "c5": last}.

At output stride 8 or 16 the later stages keep their resolution and use atrous (dilated)
convolutions instead, as DeepLab does. ResNet and MobileNet come from torchvision (their
state_dict keys stay torchvision's), aligned Xception-65 from timm, the atrous VGG-16 of
DeepLab v1 is built here in torchvision's ``features`` layout (so torchvision's VGG-16 weights load),
and EfficientNet-Lite0/1/2 in ``efficientnet_lite.py`` (in MobileNetV2's layout).

Each backbone's ``BackboneSpec`` also names its ImageNet weights (a torchvision weights enum, a
timm pretrained tag or a file inside a pip package) and how a classification state_dict's keys map
onto the module's keys.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn
from torchvision.models import mobilenet_v2, mobilenet_v3_large, resnet50, resnet101
from torchvision.models._utils import IntermediateLayerGetter

from edgeseg.errors import ModelError
from edgeseg.models.efficientnet_lite import IMAGENET_FILES, NORMALIZATION, lite_features, package_key

FEATURE_KEYS = ("c2", "c3", "c4", "c5")
VALID_OUTPUT_STRIDES = (8, 16, 32)


def _resnet(factory: Callable[..., nn.Module], output_stride: int, width: float) -> nn.Module:
    if width != 1.0:
        raise ModelError(f"ResNet backbones have no width multiplier, got width={width}; use width 1.0")
    dilate = {8: [False, True, True], 16: [False, False, True], 32: [False, False, False]}[output_stride]
    net = factory(weights=None, replace_stride_with_dilation=dilate)
    return IntermediateLayerGetter(net, {"layer1": "c2", "layer2": "c3", "layer3": "c4", "layer4": "c5"})


def _stage_ends(features: nn.Sequential) -> dict[str, int]:
    """Index of the last block at each stride 4, 8, 16, 32, found by a dummy forward."""
    ends: dict[str, int] = {}
    x = torch.zeros(1, 3, 64, 64)
    with torch.no_grad():
        for i, block in enumerate(features):
            x = block(x)
            stride = 64 // x.shape[-1]
            if stride >= 4:
                ends[f"c{stride.bit_length() - 1}"] = i  # 4 -> c2, 8 -> c3, 16 -> c4, 32 -> c5
    return ends


def dilate_after_stride(features: nn.Module, output_stride: int) -> None:
    """Replace strides beyond ``output_stride`` by dilation, in place (torchvision MobileNet
    convention: the block that loses its stride already uses the doubled dilation)."""
    stride, dilation = 1, 1
    for m in features.modules():
        if not isinstance(m, nn.Conv2d):
            continue
        if m.stride == (2, 2):
            if stride >= output_stride:
                m.stride = (1, 1)
                dilation *= 2
            else:
                stride *= 2
        k = m.kernel_size[0]
        if k > 1 and dilation > 1:
            m.dilation = (dilation, dilation)
            m.padding = ((k - 1) // 2 * dilation,) * 2


def _features_backbone(features: nn.Sequential, output_stride: int) -> nn.Module:
    """c2..c4 at the last block of stride 4, 8, 16; c5 the last block; strides past ``output_stride`` dilated."""
    ends = _stage_ends(features)
    ends["c5"] = len(features) - 1
    dilate_after_stride(features, output_stride)
    return IntermediateLayerGetter(features, {str(i): key for key, i in ends.items()})


def _mobilenet(factory: Callable[..., nn.Module], drop_last_conv: bool, output_stride: int,
               width: float) -> nn.Module:
    features = factory(weights=None, width_mult=width).features
    if drop_last_conv:  # MobileNetV2's 1280-channel 1x1 conv is a classifier stem; DeepLab uses the 320-channel output
        features = features[:-1]
    return _features_backbone(features, output_stride)


def _efficientnet_lite(name: str, output_stride: int, width: float) -> nn.Module:
    if width != 1.0:
        raise ModelError(f"{name} has no width multiplier (Lite0/1/2 are its sizes), got width={width}; use width 1.0")
    return _features_backbone(lite_features(name), output_stride)  # c5: the 320-channel block, not the 1280 head


class TimmFeatures(nn.Module):
    """A timm ``features_only`` model exposed through the c2..c5 dict interface."""

    def __init__(self, name: str, output_stride: int) -> None:
        super().__init__()
        import timm

        self.model = timm.create_model(name, pretrained=False, features_only=True, output_stride=output_stride)
        reductions = self.model.feature_info.reduction()
        self.indices = [reductions.index(r) for r in (4, 8)] + [len(reductions) - 2, len(reductions) - 1]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.model(x)
        return {key: feats[i] for key, i in zip(FEATURE_KEYS, self.indices)}


def _xception(output_stride: int, width: float) -> nn.Module:
    if width != 1.0:
        raise ModelError(f"xception65 has no width multiplier, got width={width}; use width 1.0")
    return TimmFeatures("xception65", output_stride)


VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def _vgg16(output_stride: int, width: float) -> nn.Module:
    """Atrous VGG-16 as in DeepLab v1: Caffe-style 3x3 max pools (padding 1); past ``output_stride``
    the pools keep stride 1 and the following convs dilate (at 8: pool4/pool5 stride 1, conv5
    dilation 2). Indices follow torchvision's ``vgg16().features``; ``width`` scales every conv."""
    layers: list[nn.Module] = []
    in_ch, stride, dilation = 3, 1, 1
    for item in VGG16_LAYOUT:
        if item == "M":
            step = 2 if stride < output_stride else 1
            stride, dilation = stride * step, dilation * (2 // step)
            layers.append(nn.MaxPool2d(3, stride=step, padding=1))
            continue
        out_ch = max(1, round(int(item) * width))
        layers += [nn.Conv2d(in_ch, out_ch, 3, padding=dilation, dilation=dilation), nn.ReLU(inplace=True)]
        in_ch = out_ch
    pools = [i for i, m in enumerate(layers) if isinstance(m, nn.MaxPool2d)]
    return IntermediateLayerGetter(nn.Sequential(*layers), {str(i): k for i, k in zip(pools[1:], FEATURE_KEYS)})


def _strip_features(key: str) -> str:
    """torchvision MobileNet / VGG classification keys 'features.N...' -> 'N...' (the module wraps ``features``)."""
    return key.removeprefix("features.")


def _timm_feature_key(key: str) -> str:
    """timm classification keys 'blocks.3.x' -> 'model.blocks_3.x' (features_only flattens the first level)."""
    head, _, rest = key.partition(".")
    first, dot, tail = rest.partition(".")
    return f"model.{head}_{first}.{tail}" if dot and first.isdigit() else f"model.{key}"


@dataclass(frozen=True)
class BackboneSpec:
    build: Callable[[int, float], nn.Module]  # (output_stride, width) -> module returning {"c2".."c5"}
    # "torchvision:<weights enum member>", "timm:<pretrained tag>" or "package:<pip distribution>/<file in it>"
    imagenet: str
    key_map: Callable[[str], str] = lambda k: k  # classification state_dict key -> module key
    # (mean, std) the weights expect, for sources without metadata ("package:"); measured, not guessed
    normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = None


BACKBONE_SPECS: dict[str, BackboneSpec] = {
    "resnet50": BackboneSpec(lambda os_, w: _resnet(resnet50, os_, w), "torchvision:ResNet50_Weights.IMAGENET1K_V2"),
    "resnet101": BackboneSpec(lambda os_, w: _resnet(resnet101, os_, w),
                              "torchvision:ResNet101_Weights.IMAGENET1K_V2"),
    "mobilenet_v2": BackboneSpec(lambda os_, w: _mobilenet(mobilenet_v2, True, os_, w),
                                 "torchvision:MobileNet_V2_Weights.IMAGENET1K_V1", _strip_features),
    "mobilenet_v3_large": BackboneSpec(lambda os_, w: _mobilenet(mobilenet_v3_large, False, os_, w),
                                       "torchvision:MobileNet_V3_Large_Weights.IMAGENET1K_V1", _strip_features),
    "xception65": BackboneSpec(_xception, "timm:xception65.ra3_in1k", _timm_feature_key),
    "vgg16": BackboneSpec(_vgg16, "torchvision:VGG16_Weights.IMAGENET1K_V1", _strip_features),
    **{name: BackboneSpec(partial(_efficientnet_lite, name), f"package:{file}", package_key, NORMALIZATION)
       for name, file in IMAGENET_FILES.items()},
}
BACKBONES: tuple[str, ...] = tuple(BACKBONE_SPECS)


def build_backbone(name: str, output_stride: int, width: float = 1.0) -> tuple[nn.Module, dict[str, int]]:
    """Return (module, channels per feature key). The module maps (N,3,H,W) -> {"c2".."c5": tensor}."""
    if name not in BACKBONES:
        raise ModelError(f"unknown backbone {name!r}: expected one of {', '.join(BACKBONES)}")
    if output_stride not in VALID_OUTPUT_STRIDES:
        raise ModelError(f"output stride must be one of {VALID_OUTPUT_STRIDES}, got {output_stride}")
    module = BACKBONE_SPECS[name].build(output_stride, width)
    with torch.no_grad():
        was_training = module.training
        module.eval()
        feats = module(torch.zeros(1, 3, 64, 64))
        module.train(was_training)
    return module, {k: int(v.shape[1]) for k, v in feats.items()}
