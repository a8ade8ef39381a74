"""Fusion: BatchNorm folding (conv, grouped conv, transposed conv), depthwise-separable collapse,
the per-block cost decision and its report, and equivalence on whole models."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from _helpers import randomize_bn
from edgeseg.errors import EdgesegError
from edgeseg.export.fuse import CostModel, SeparableBlock, fuse_model
from edgeseg.models import ModelConfig, build_model
from edgeseg.models.layers import SeparableConvBNReLU

SIZE = (24, 32)






def _image_model(block: nn.Module, channels: int) -> nn.Sequential:
    """fuse_model measures complexity on (1, 3, H, W) images: put a 1x1 stem in front of ``block``."""
    return nn.Sequential(nn.Conv2d(3, channels, 1), block).eval()


def _same(a: nn.Module, b: nn.Module, x: torch.Tensor, tol: float = 1e-5) -> float:
    with torch.no_grad():
        diff = (a(x) - b(x)).abs().max().item()
    assert diff <= tol, diff
    return diff


@pytest.mark.parametrize("groups, bias", [(1, False), (1, True), (2, True), (4, False)])
def test_conv_bn_folds_into_the_conv(groups: int, bias: bool) -> None:
    model = _image_model(randomize_bn(nn.Sequential(
        nn.Conv2d(4, 8, 3, padding=1, groups=groups, bias=bias), nn.BatchNorm2d(8), nn.ReLU())), 4)
    fused, report = fuse_model(model, strategy="keep", input_size=SIZE)
    assert report.folded_bn == 1 and report.unfolded_bn == []
    assert isinstance(fused[1][1], nn.Identity) and fused[1][0].bias is not None
    assert isinstance(model[1][1], nn.BatchNorm2d), "the input model must stay untouched"
    _same(model, fused, torch.randn(2, 3, *SIZE))


@pytest.mark.parametrize("cin, cout, groups", [(4, 6, 1), (4, 6, 2), (6, 6, 3)])
def test_conv_transpose_bn_scales_the_output_channel_axis(cin: int, cout: int, groups: int) -> None:
    # ConvTranspose2d weight is [Cin, Cout/g, k, k]: Cin != Cout catches scaling along the wrong axis
    model = _image_model(randomize_bn(nn.Sequential(
        nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1, groups=groups), nn.BatchNorm2d(cout))), cin)
    fused, report = fuse_model(model, strategy="keep", input_size=SIZE)
    assert report.folded_bn == 1 and isinstance(fused[1][1], nn.Identity)
    _same(model, fused, torch.randn(2, 3, *SIZE))


def test_bn_not_directly_after_a_conv_is_left_alone() -> None:
    model = randomize_bn(nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.BatchNorm2d(4)))
    fused, report = fuse_model(model, input_size=SIZE)
    assert report.folded_bn == 0 and report.unfolded_bn == ["2"]  # after a ReLU: not foldable
    _same(model, fused, torch.randn(1, 3, *SIZE))


def _separable(cin: int, cout: int, stride: int = 1, dilation: int = 2) -> nn.Sequential:
    """dw conv (with bias) -> BN -> Dropout -> pw conv -> BN -> ReLU."""
    return randomize_bn(nn.Sequential(
        nn.Conv2d(cin, cin, 3, stride=stride, padding=dilation, dilation=dilation, groups=cin, bias=True),
        nn.BatchNorm2d(cin), nn.Dropout(0.3), nn.Conv2d(cin, cout, 1), nn.BatchNorm2d(cout), nn.ReLU()))


@pytest.mark.parametrize("stride", [1, 2])
def test_depthwise_pointwise_collapse_is_one_dense_conv(stride: int) -> None:
    model = _image_model(_separable(8, 12, stride=stride), 8)
    fused, report = fuse_model(model, strategy="collapse", input_size=SIZE)
    (block,) = report.blocks
    assert block.choice == "collapse" and (block.in_channels, block.out_channels, block.dilation) == (8, 12, 2)
    assert block.name == "1.0+1.3"
    dense = fused[1][0]
    assert dense.groups == 1 and dense.weight.shape == (12, 8, 3, 3) and dense.stride == (stride, stride)
    assert isinstance(fused[1][3], nn.Identity)
    _same(model, fused, torch.randn(2, 3, *SIZE))


def test_separable_block_with_relu_between_is_not_a_candidate() -> None:
    model = _image_model(randomize_bn(SeparableConvBNReLU(8, 8, act_between=True)), 8)
    fused, report = fuse_model(model, strategy="collapse", input_size=SIZE)
    assert report.blocks == [] and report.folded_bn == 2
    _same(model, fused, torch.randn(1, 3, *SIZE))


def test_auto_follows_the_cost_model_per_block() -> None:
    narrow, wide = _separable(4, 4), _separable(64, 64)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), narrow, nn.Conv2d(4, 64, 1), wide).eval()
    cost = CostModel(depthwise_mac_cost=8.0, pointwise_mac_cost=1.5)
    fused, report = fuse_model(model, strategy="auto", cost=cost, input_size=SIZE)
    choices = {d.in_channels: d.choice for d in report.blocks}
    # collapse iff O < w_dw * k^2 / (k^2 - w_pw) = 8 * 9 / 7.5 = 9.6
    assert choices == {4: "collapse", 64: "keep"}
    assert all("cost dense/separable" in d.reason for d in report.blocks)
    _same(model, fused, torch.randn(1, 3, *SIZE))
    # a backend where depthwise MACs cost 1000 dense ones collapses both
    _, report = fuse_model(model, cost=CostModel(depthwise_mac_cost=1000.0), input_size=SIZE)
    assert [d.choice for d in report.blocks] == ["collapse", "collapse"]


def test_auto_accepts_a_measured_cost_callable() -> None:
    seen: list[SeparableBlock] = []

    def measured(block: SeparableBlock) -> tuple[float, float]:
        seen.append(block)
        return 2.0, 1.0  # "the dense conv timed faster"

    model = _image_model(_separable(16, 8, stride=2), 16)
    _, report = fuse_model(model, cost=measured, input_size=SIZE)
    assert report.blocks[0].choice == "collapse"
    assert seen[0].input_hw == SIZE and seen[0].output_hw == (SIZE[0] // 2, SIZE[1] // 2)


def test_report_counts_match_the_decisions() -> None:
    model = nn.Sequential(nn.Conv2d(3, 16, 1), _separable(16, 24), _separable(24, 24, stride=2)).eval()
    _, keep = fuse_model(model, strategy="keep", input_size=SIZE)
    _, coll = fuse_model(model, strategy="collapse", input_size=SIZE)
    assert keep.before == coll.before
    assert keep.after.macs == keep.before.macs and keep.after.layers == keep.before.layers - 4  # 4 BN gone
    assert coll.after.layers == keep.after.layers - 2  # and 2 pointwise convs
    extra = sum(d.macs_after - d.macs_before for d in coll.blocks)
    assert extra > 0 and coll.after.macs - coll.before.macs == extra
    dw_pw = 16 * 9 + 16 * 24  # per output pixel, at full resolution
    assert coll.blocks[0].macs_before == dw_pw * SIZE[0] * SIZE[1]
    assert coll.to_dict()["collapsed"] == 2


def test_unknown_strategy_is_refused() -> None:
    with pytest.raises(EdgesegError, match="fusion strategy must be one of"):
        fuse_model(nn.Conv2d(3, 3, 1), strategy="fast")  # type: ignore[arg-type]


@pytest.mark.parametrize("name, strategy", [
    ("fcn_mobilenet_v2", "auto"),
    ("fcn8s_mobilenet_v2", "auto"),
    ("deeplabv3_mobilenet_v2", "auto"),
    ("deeplabv3plus_mobilenet_v2", "keep"),
    ("deeplabv3plus_mobilenet_v2", "collapse"),
    ("deeplabv2_mobilenet_v2", "auto"),
    ("unet_mobilenet_v2", "auto"),
])
def test_whole_models_fuse_to_the_same_logits(name: str, strategy: str) -> None:
    model = randomize_bn(build_model(ModelConfig(name, 5, width=0.35)))
    fused, report = fuse_model(model, strategy=strategy, input_size=(64, 96))
    assert report.unfolded_bn == [] and not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert report.after.layers < report.before.layers
    if name.startswith("deeplabv3plus"):
        assert len(report.blocks) == 5  # 3 ASPP + 2 decoder separable convs
        assert report.collapsed == (5 if strategy == "collapse" else 0)
    _same(model, fused, torch.randn(2, 3, 64, 96), tol=1e-4)


def test_resnet_blocks_and_stem_fold() -> None:
    # torchvision Bottleneck (custom forward) and the IntermediateLayerGetter stem
    model = randomize_bn(build_model(ModelConfig("deeplabv3_resnet50", 3)))
    fused, report = fuse_model(model, input_size=(33, 33))
    assert report.unfolded_bn == [] and report.folded_bn == sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    x = torch.randn(1, 3, 33, 33)
    with torch.no_grad():
        ref = model(x)
        diff = (fused(x) - ref).abs().max().item()
    assert diff <= 1e-5 * max(1.0, ref.abs().max().item()), diff


@pytest.mark.slow
def test_timm_xception_blocks_fold_and_collapse() -> None:
    # timm ConvNormAct (BatchNormAct2d) and Xception SeparableConv2d (strided depthwise convs), behind hooks
    model = randomize_bn(build_model(ModelConfig("deeplabv3plus_xception65", 3)))
    fused, report = fuse_model(model, strategy="collapse", input_size=(32, 32))
    assert report.unfolded_bn == [] and len(report.blocks) == report.collapsed == 65
    assert any(d.stride == 2 for d in report.blocks)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        diff = (fused(x) - ref).abs().max().item()
    assert diff <= 1e-5 * max(1.0, ref.abs().max().item()), diff
