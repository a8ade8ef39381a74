"""Model families: shapes at odd sizes, torchvision parity, separable savings, FCN upsampling init."""
from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn.functional as F
from torchvision.models import segmentation as tvseg

from _helpers import randomize_bn
from edgeseg.errors import CheckpointError, ModelError
from edgeseg.models import (MODEL_NAMES, TORCHVISION_NAMES, ModelConfig, build_model, load_torchvision_state_dict,
                            measure_complexity)
from edgeseg.models.backbones import build_backbone
from edgeseg.models.layers import bilinear_conv_transpose

ODD = (1, 3, 361, 479)


# one tiny member per family: MobileNetV2 at width 0.35, VGG-16 and the plain U-Net at width 1/8
FAMILIES = [("fcn32s_mobilenet_v2", 0.35), ("fcn16s_mobilenet_v2", 0.35), ("fcn8s_mobilenet_v2", 0.35),
            ("fcn_mobilenet_v2", 0.35), ("deeplabv3_mobilenet_v2", 0.35), ("deeplabv3plus_mobilenet_v2", 0.35),
            ("deeplabv1_vgg16", 0.125), ("deeplabv2_mobilenet_v2", 0.35), ("unet", 0.125),
            ("unet_mobilenet_v2", 0.35)]


@pytest.mark.parametrize("name, width", FAMILIES)
def test_each_family_keeps_odd_input_size(name: str, width: float) -> None:
    model = build_model(ModelConfig(name, num_classes=5, width=width)).eval()
    with torch.no_grad():
        out = model(torch.randn(ODD))
    assert out.shape == (1, 5, 361, 479)


def test_deeplabv1_is_the_largefov_network_on_atrous_vgg16() -> None:
    from torchvision.models.vgg import cfgs, make_layers

    model = build_model(ModelConfig("deeplabv1_vgg16", 21))
    assert model.backbone  # c2..c5 from VGG-16's features, output stride 8
    with torch.no_grad():
        feats = model.backbone.eval()(torch.zeros(1, 3, 64, 80))
    assert tuple(feats["c5"].shape[-2:]) == (8, 10)
    convs = [m for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 13 and [c.dilation[0] for c in convs] == [1] * 10 + [2] * 3  # conv5 dilated by 2
    pools = [m for m in model.backbone.modules() if isinstance(m, torch.nn.MaxPool2d)]
    assert [p.stride for p in pools] == [2, 2, 2, 1, 1]  # pool4, pool5 at stride 1
    fc6, fc7, fc8 = [m for m in model.classifier if isinstance(m, torch.nn.Conv2d)]
    assert (fc6.kernel_size, fc6.dilation, fc6.out_channels) == ((3, 3), (12, 12), 1024)
    assert (fc7.kernel_size, fc7.out_channels, fc8.out_channels) == ((1, 1), 1024, 21)
    # torchvision's VGG-16 keys: its ImageNet weights load into the backbone unchanged
    assert set(make_layers(cfgs["D"]).state_dict()) == set(model.backbone.state_dict())  # vgg16().features
    assert 20.0 < sum(p.numel() for p in model.parameters()) / 1e6 < 21.0  # the paper's 20.5M


def test_deeplabv2_sums_four_atrous_branches_of_class_logits() -> None:
    model = build_model(ModelConfig("deeplabv2_mobilenet_v2", 4, width=0.35)).eval()
    branches = model.classifier.branches
    assert [b.dilation[0] for b in branches] == [6, 12, 18, 24] and all(b.out_channels == 4 for b in branches)
    assert ModelConfig("deeplabv2_resnet101", 4).resolved().output_stride == 8  # the paper's
    at16 = build_model(ModelConfig("deeplabv2_mobilenet_v2", 4, width=0.35, output_stride=16))
    assert [b.dilation[0] for b in at16.classifier.branches] == [3, 6, 9, 12]  # same field of view
    x = torch.randn(1, model.classifier.branches[0].in_channels, 9, 11)
    with torch.no_grad():
        assert torch.allclose(model.classifier(x), sum(b(x) for b in branches), atol=1e-6)


def test_unet_is_the_four_level_encoder_decoder_with_skip_concatenation() -> None:
    model = build_model(ModelConfig("unet", 3))
    assert len(model.downs) == 4 and len(model.ups) == 4
    widths = [d[1][0].out_channels for d in model.downs]
    assert [model.inc[0].out_channels, *widths] == [64, 128, 256, 512, 1024]
    # each decoder step: 2x2 up-conv halving the channels, then convs over [skip, up] (twice the channels)
    assert [(u.up.kernel_size, u.up.out_channels, u.conv[0].in_channels) for u in model.ups] == [
        ((2, 2), c, 2 * c) for c in (512, 256, 128, 64)]
    on_backbone = build_model(ModelConfig("unet_mobilenet_v2", 3, width=0.35)).eval()
    assert ModelConfig("unet_mobilenet_v2", 3).resolved().output_stride == 32
    assert [u.conv[0].in_channels for u in on_backbone.ups] == [90 + 32, 45 + 16, 22 + 8]  # (256, 128, 64) x 0.35 + c4, c3, c2
    small = build_model(ModelConfig("unet", 3, width=0.125)).eval()
    for size in [(17, 23), (64, 96), (33, 1)]:
        with torch.no_grad():
            assert small(torch.randn(1, 3, *size)).shape[-2:] == size


@pytest.mark.parametrize("backbone", ["resnet50", "mobilenet_v2", "mobilenet_v3_large", "xception65",
                                      "efficientnet_lite0"])
@pytest.mark.parametrize("output_stride", [8, 16])
def test_backbones_honour_output_stride(backbone: str, output_stride: int) -> None:
    module, channels = build_backbone(backbone, output_stride)
    with torch.no_grad():
        feats = module.eval()(torch.randn(1, 3, 97, 129))
    assert set(feats) == {"c2", "c3", "c4", "c5"}
    assert feats["c2"].shape[-2:] == (25, 33)  # stride 4, ceil
    expected = -(-97 // output_stride), -(-129 // output_stride)
    assert tuple(feats["c5"].shape[-2:]) == expected
    assert channels == {k: v.shape[1] for k, v in feats.items()}


def test_deeplabv3plus_at_output_stride_8_on_resnet() -> None:
    model = build_model(ModelConfig("deeplabv3plus_resnet50", 3, output_stride=8)).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 65, 81)).shape == (1, 3, 65, 81)




@pytest.mark.slow
@pytest.mark.parametrize("name", TORCHVISION_NAMES)
def test_torchvision_weights_give_torchvision_logits(name: str, tmp_path) -> None:
    torch.manual_seed(0)
    reference = getattr(tvseg, name)(weights=None, weights_backbone=None, num_classes=7, aux_loss=True).eval()
    randomize_bn(reference, 1)
    path = tmp_path / f"{name}.pth"
    torch.save(reference.state_dict(), path)  # what torchvision saves / downloads: a plain state_dict, aux head included
    ours = load_torchvision_state_dict(name, path)
    x = torch.randn(2, 3, 67, 91)
    with torch.no_grad():
        diff = (reference(x)["out"] - ours(x)).abs().max().item()
    assert diff <= 1e-4


def test_torchvision_import_rejects_wrong_class_count_and_garbage(tmp_path) -> None:
    ref = tvseg.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=4)
    good = tmp_path / "w.pth"
    torch.save(ref.state_dict(), good)
    with pytest.raises(CheckpointError, match="4-class head but --num-classes 9"):
        load_torchvision_state_dict("deeplabv3_mobilenet_v3_large", good, num_classes=9)
    truncated = tmp_path / "cut.pth"
    truncated.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="cannot read"):
        load_torchvision_state_dict("deeplabv3_mobilenet_v3_large", truncated)
    with pytest.raises(CheckpointError, match="does not fit the model"):
        load_torchvision_state_dict("fcn_resnet50", good)
    with pytest.raises(ModelError, match="no torchvision weights layout"):
        load_torchvision_state_dict("deeplabv3plus_mobilenet_v2", good)


class _Evil:
    def __reduce__(self):
        return (print, ("unpickled arbitrary code",))


def test_weights_loader_never_unpickles_objects(tmp_path) -> None:
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"classifier.4.weight": _Evil()}))
    with pytest.raises(CheckpointError, match="cannot read"):
        load_torchvision_state_dict("fcn_resnet50", path)


@pytest.mark.parametrize("backbone", ["mobilenet_v2", "xception65"])
def test_separable_aspp_and_decoder_cut_multiply_adds(backbone: str) -> None:
    size = (180, 240)
    sep = measure_complexity(build_model(ModelConfig(f"deeplabv3plus_{backbone}", 11)), size)
    dense = measure_complexity(build_model(ModelConfig(f"deeplabv3plus_{backbone}", 11, separable=False)), size)
    saving = 1 - sep.macs / dense.macs
    # The DeepLab v3+ paper reports 33-41% for Xception-65; the lighter MobileNetV2 encoder makes the head's share larger.
    assert saving > 0.30, f"separable saved only {saving:.1%}"
    assert sep.params < dense.params


def test_fcn_transposed_conv_starts_as_bilinear_upsampling() -> None:
    x = torch.randn(1, 3, 8, 10)
    up = bilinear_conv_transpose(3, 4)
    with torch.no_grad():
        ours = up(x)
    ref = F.interpolate(x, scale_factor=4, mode="bilinear", align_corners=False)
    assert ours.shape == ref.shape
    assert torch.allclose(ours[..., 4:-4, 4:-4], ref[..., 4:-4, 4:-4], atol=1e-5)


def test_fcn8s_skip_scores_start_at_zero_as_in_the_paper() -> None:
    torch.manual_seed(0)
    m8 = build_model(ModelConfig("fcn8s_mobilenet_v2", 3, width=0.35)).eval()
    assert all(float(s.weight.detach().abs().sum()) == 0 for s in m8.skips.values())
    assert set(m8.skips) == {"c4", "c3"}
    assert isinstance(m8.up_final, torch.nn.ConvTranspose2d) and m8.up_final.stride == (8, 8)


def test_model_names_cover_every_arch_and_backbone() -> None:
    assert len(MODEL_NAMES) == 6 * 8 + 1 + 8 + 1 + 8  # 6 archs x 8 backbones, v1, v2, unet, unet_*
    assert set(TORCHVISION_NAMES) <= set(MODEL_NAMES)
    assert {"deeplabv1_vgg16", "deeplabv2_resnet101", "unet", "unet_xception65",
            "deeplabv3plus_efficientnet_lite2"} <= set(MODEL_NAMES)


@pytest.mark.parametrize("config, match", [
    (ModelConfig("deeplabv5_resnet50", 3), "unknown model"),
    (ModelConfig("deeplabv3plus_mobilenet_v2", 3, output_stride=32), "output stride 8 or 16"),
    (ModelConfig("fcn8s_resnet50", 3, output_stride=16), "stride 32"),
    (ModelConfig("deeplabv3plus_resnet50", 0), "num_classes"),
    (ModelConfig("deeplabv3plus_resnet50", 3, width=0.5), "no width multiplier"),
    (ModelConfig("deeplabv1_resnet50", 3), "unknown model"),
    (ModelConfig("deeplabv3_vgg16", 3), "unknown model"),
    (ModelConfig("deeplabv1_vgg16", 3, output_stride=16), "fixed stride 8"),
    (ModelConfig("unet", 3, output_stride=8), "fixed stride 16"),
    (ModelConfig("deeplabv2_resnet50", 3, separable=True), "separable"),
])
def test_bad_model_configs_are_refused(config: ModelConfig, match: str) -> None:
    with pytest.raises(ModelError, match=match):
        build_model(config)
