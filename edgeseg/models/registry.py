"""Model names -> modules.

A name is ``{arch}_{backbone}``: arch in fcn32s, fcn16s, fcn8s, fcn, deeplabv3, deeplabv3plus;
backbone in resnet50, resnet101, mobilenet_v2, mobilenet_v3_large, xception65. The five
torchvision names (fcn_resnet50, fcn_resnet101, deeplabv3_resnet50, deeplabv3_resnet101,
deeplabv3_mobilenet_v3_large) keep torchvision's exact layout and defaults so its weights load.
A ``ModelConfig`` is stored in every checkpoint, so a model is rebuilt from data, never unpickled.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from torch import nn

from edgeseg.errors import ModelError
from edgeseg.models.backbones import BACKBONES, build_backbone
from edgeseg.models.deeplab import DeepLabHead, DeepLabV3, DeepLabV3Plus
from edgeseg.models.fcn import FCN, FCNHead, FCNSkip

ARCHS = ("fcn32s", "fcn16s", "fcn8s", "fcn", "deeplabv3", "deeplabv3plus")
TORCHVISION_NAMES = ("fcn_resnet50", "fcn_resnet101", "deeplabv3_resnet50", "deeplabv3_resnet101",
                     "deeplabv3_mobilenet_v3_large")
MODEL_NAMES = tuple(f"{a}_{b}" for a in ARCHS for b in BACKBONES)
TORCHVISION_ASPP_RATES = (12, 24, 36)


def split_name(name: str) -> tuple[str, str]:
    """'deeplabv3plus_mobilenet_v2' -> ('deeplabv3plus', 'mobilenet_v2')."""
    arch, _, backbone = name.partition("_")
    if arch not in ARCHS or backbone not in BACKBONES:
        raise ModelError(
            f"unknown model {name!r}: expected ARCH_BACKBONE with ARCH in {', '.join(ARCHS)} and BACKBONE in "
            f"{', '.join(BACKBONES)} (e.g. deeplabv3plus_mobilenet_v2); `edgeseg models` lists them"
        )
    return arch, backbone


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model. ``None`` fields take the per-name defaults."""

    name: str
    num_classes: int
    output_stride: int | None = None  # 8 or 16 for DeepLab / fcn, always 32 for fcn{32,16,8}s
    width: float = 1.0  # MobileNet width multiplier
    separable: bool | None = None  # depthwise separable ASPP/decoder (DeepLab v3+ default on)

    def resolved(self) -> "ModelConfig":
        """Fill per-name defaults and validate."""
        arch, backbone = split_name(self.name)
        if self.num_classes < 1:
            raise ModelError(f"num_classes must be >= 1, got {self.num_classes}")
        if arch.startswith("fcn") and arch != "fcn":
            os_ = 32
            if self.output_stride not in (None, 32):
                raise ModelError(f"{self.name} predicts from stride 32 with skips; got output_stride={self.output_stride}; omit it")
        else:
            default_os = 16 if backbone in ("mobilenet_v2", "mobilenet_v3_large", "xception65") else 8
            os_ = self.output_stride or default_os
            if os_ not in (8, 16):
                raise ModelError(f"{self.name} runs at output stride 8 or 16, got {os_}")
        separable = self.separable if self.separable is not None else arch == "deeplabv3plus"
        if separable and not arch.startswith("deeplab"):
            raise ModelError(f"separable convolutions apply to DeepLab heads only, not {self.name}")
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


def build_model(config: ModelConfig) -> nn.Module:
    """Build an untrained model; ``model(x)`` maps (N,3,H,W) to logits (N,num_classes,H,W) for any H, W."""
    cfg = config.resolved()
    arch, backbone_name = split_name(cfg.name)
    backbone, channels = build_backbone(backbone_name, cfg.output_stride, cfg.width)
    rates = aspp_rates(cfg.name, cfg.output_stride)
    if arch == "fcn":
        return FCN(backbone, FCNHead(channels["c5"], cfg.num_classes))
    if arch == "deeplabv3":
        return DeepLabV3(backbone, DeepLabHead(channels["c5"], cfg.num_classes, rates, cfg.separable))
    if arch == "deeplabv3plus":
        return DeepLabV3Plus(backbone, channels, cfg.num_classes, rates, cfg.separable)
    return FCNSkip(backbone, channels, cfg.num_classes, stride=int(arch[3:-1]))
