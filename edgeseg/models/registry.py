"""Model names -> modules.

A name is ``{arch}_{backbone}`` (or just ``unet``):

* ``fcn32s``, ``fcn16s``, ``fcn8s``: the FCN paper's skip architecture (backbone at stride 32);
  ``fcn``: torchvision's dilated FCN;
* ``deeplabv1_vgg16``: DeepLab v1 LargeFOV on atrous VGG-16 (output stride 8);
* ``deeplabv2``: atrous backbone + DeepLab v2's ASPP summing four 3x3 branches at rates
  6/12/18/24 (output stride 8, the paper's; at 16 the rates halve);
* ``deeplabv3``: ASPP with image pooling, rates 6/12/18 at output stride 16 (doubled at 8);
  ``deeplabv3plus``: v3 encoder + 1/4-resolution decoder;
* ``unet``: the original U-Net (padded so output size = input size); ``unet_{backbone}``: a U-Net
  decoder on the backbone's c2..c5 features.

Backbones: resnet50, resnet101, mobilenet_v2, mobilenet_v3_large, xception65, efficientnet_lite0,
efficientnet_lite1, efficientnet_lite2 (and vgg16 for DeepLab v1). The five torchvision names (fcn_resnet50, fcn_resnet101, deeplabv3_resnet50,
deeplabv3_resnet101, deeplabv3_mobilenet_v3_large) keep torchvision's exact layout and defaults
so its weights load. A ``ModelConfig`` is stored in every checkpoint, so a model is rebuilt from
data, never unpickled.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from torch import nn

from edgeseg.errors import ModelError
from edgeseg.models.backbones import build_backbone
from edgeseg.models.deeplab import ASPPv2, DeepLabHead, DeepLabV1, DeepLabV2, DeepLabV3, DeepLabV3Plus, LargeFOVHead
from edgeseg.models.fcn import FCN, FCNHead, FCNSkip
from edgeseg.models.unet import UNet, UNetOnBackbone

LITE_BACKBONES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
STANDARD_BACKBONES = ("resnet50", "resnet101", "mobilenet_v2", "mobilenet_v3_large", "xception65", *LITE_BACKBONES)
LIGHT_BACKBONES = ("mobilenet_v2", "mobilenet_v3_large", "xception65", *LITE_BACKBONES)  # default to output stride 16
TORCHVISION_NAMES = ("fcn_resnet50", "fcn_resnet101", "deeplabv3_resnet50", "deeplabv3_resnet101",
                     "deeplabv3_mobilenet_v3_large")
TORCHVISION_ASPP_RATES = (12, 24, 36)
DEEPLABV2_RATES = (6, 12, 18, 24)  # at output stride 8
UNET_DECODER = (256, 128, 64)  # decoder channels at strides 16, 8, 4 (x the width multiplier)


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model. ``None`` fields take the per-name defaults."""

    name: str
    num_classes: int
    output_stride: int | None = None  # backbone stride: 8 / 16 for atrous models, fixed for the others
    width: float = 1.0  # MobileNet / VGG / U-Net width multiplier
    separable: bool | None = None  # depthwise separable ASPP/decoder (DeepLab v3+ default on)

    def resolved(self) -> "ModelConfig":
        """Fill per-name defaults and validate."""
        arch, backbone = split_name(self.name)
        spec = ARCHS[arch]
        if self.num_classes < 1:
            raise ModelError(f"num_classes must be >= 1, got {self.num_classes}")
        strides = spec.output_strides if backbone is not None else (PLAIN_UNET_STRIDE,)
        if len(strides) == 1:
            if self.output_stride not in (None, strides[0]):
                raise ModelError(f"{self.name} has a fixed stride {strides[0]}; got output_stride={self.output_stride}; "
                                 "omit it")
            os_ = strides[0]
        else:
            default_os = 16 if spec.light_stride_16 and backbone in LIGHT_BACKBONES else strides[0]
            os_ = self.output_stride or default_os
            if os_ not in strides:
                raise ModelError(f"{self.name} runs at output stride {' or '.join(map(str, strides))}, got {os_}")
        separable = self.separable if self.separable is not None else spec.separable_default
        if separable and not spec.separable_allowed:
            raise ModelError(f"separable convolutions apply to DeepLab v3 / v3+ heads only, not {self.name}")
        return replace(self, output_stride=os_, separable=separable)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown or "name" not in d or "num_classes" not in d:
            raise ModelError(f"model config needs name and num_classes (known keys {sorted(known)}), got {d!r}")
        return cls(**d)


def aspp_rates(name: str, output_stride: int) -> tuple[int, ...]:
    """6/12/18 at output stride 16 and doubled at 8 (DeepLab v3); torchvision names keep 12/24/36."""
    if name in TORCHVISION_NAMES:
        return TORCHVISION_ASPP_RATES
    return (6, 12, 18) if output_stride == 16 else (12, 24, 36)


Builder = Callable[[ModelConfig, nn.Module, dict[str, int]], nn.Module]


def _vgg_channels(cfg: ModelConfig) -> int:
    return max(1, round(1024 * cfg.width))


@dataclass(frozen=True)
class ArchSpec:
    backbones: tuple[str | None, ...]  # None: the architecture has no separate backbone
    output_strides: tuple[int, ...]  # allowed; the first is the default (one value: fixed)
    build: Builder  # (resolved config, backbone or None, backbone channels) -> module
    light_stride_16: bool = False  # MobileNet / Xception / EfficientNet-Lite backbones default to output stride 16
    separable_allowed: bool = False
    separable_default: bool = False


ARCHS: dict[str, ArchSpec] = {
    "fcn32s": ArchSpec(STANDARD_BACKBONES, (32,), lambda c, b, ch: FCNSkip(b, ch, c.num_classes, 32)),
    "fcn16s": ArchSpec(STANDARD_BACKBONES, (32,), lambda c, b, ch: FCNSkip(b, ch, c.num_classes, 16)),
    "fcn8s": ArchSpec(STANDARD_BACKBONES, (32,), lambda c, b, ch: FCNSkip(b, ch, c.num_classes, 8)),
    "fcn": ArchSpec(STANDARD_BACKBONES, (8, 16), lambda c, b, ch: FCN(b, FCNHead(ch["c5"], c.num_classes)), True),
    "deeplabv3": ArchSpec(STANDARD_BACKBONES, (8, 16), lambda c, b, ch: DeepLabV3(b, DeepLabHead(
        ch["c5"], c.num_classes, aspp_rates(c.name, c.output_stride), c.separable)), True, True),
    "deeplabv3plus": ArchSpec(STANDARD_BACKBONES, (8, 16), lambda c, b, ch: DeepLabV3Plus(
        b, ch, c.num_classes, aspp_rates(c.name, c.output_stride), c.separable), True, True, True),
    "deeplabv1": ArchSpec(("vgg16",), (8,), lambda c, b, ch: DeepLabV1(
        b, LargeFOVHead(ch["c5"], c.num_classes, _vgg_channels(c)))),
    "deeplabv2": ArchSpec(STANDARD_BACKBONES, (8, 16), lambda c, b, ch: DeepLabV2(b, ASPPv2(
        ch["c5"], c.num_classes, tuple(r * 8 // c.output_stride for r in DEEPLABV2_RATES)))),
    "unet": ArchSpec((None, *STANDARD_BACKBONES), (32,), lambda c, b, ch: UNetOnBackbone(
        b, ch, c.num_classes, tuple(max(8, round(d * c.width)) for d in UNET_DECODER))),
}
PLAIN_UNET_STRIDE = 16  # four 2x2 pools


def model_names() -> tuple[str, ...]:
    return tuple(arch if b is None else f"{arch}_{b}" for arch, spec in ARCHS.items() for b in spec.backbones)


MODEL_NAMES = model_names()


def split_name(name: str) -> tuple[str, str | None]:
    """'deeplabv3plus_mobilenet_v2' -> ('deeplabv3plus', 'mobilenet_v2'); 'unet' -> ('unet', None)."""
    arch, _, backbone = name.partition("_")
    if arch not in ARCHS or (backbone or None) not in ARCHS[arch].backbones:
        raise ModelError(
            f"unknown model {name!r}: expected ARCH_BACKBONE with ARCH in {', '.join(ARCHS)} and BACKBONE in "
            f"{', '.join(STANDARD_BACKBONES)} (deeplabv1 takes vgg16; plain unet has none; e.g. "
            "deeplabv3plus_mobilenet_v2); `edgeseg models` lists them"
        )
    return arch, backbone or None


def build_model(config: ModelConfig) -> nn.Module:
    """Build an untrained model; ``model(x)`` maps (N,3,H,W) to logits (N,num_classes,H,W) for any H, W."""
    cfg = config.resolved()
    arch, backbone_name = split_name(cfg.name)
    if backbone_name is None:
        return UNet(cfg.num_classes, cfg.width)
    backbone, channels = build_backbone(backbone_name, cfg.output_stride, cfg.width)
    return ARCHS[arch].build(cfg, backbone, channels)
