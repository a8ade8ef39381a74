"""ImageNet / classification weights for the backbones, without any network: the download is blocked
at the socket, caches point at temporary folders (the ``offline`` fixture in conftest.py),
classification state_dicts are written locally."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torchvision.models import mobilenet_v2

from edgeseg.errors import CheckpointError
from edgeseg.models import ModelConfig, build_model
from edgeseg.models.pretrained import (PretrainedError, file_weights, imagenet_normalization, imagenet_weights,
                                       load_backbone_weights)

MOBILENET_V2_FILE = "mobilenet_v2-b0353104.pth"  # the name MobileNet_V2_Weights.IMAGENET1K_V1's URL carries


def test_imagenet_without_network_or_cache_names_the_file_and_where_to_put_it(offline: Path) -> None:
    with pytest.raises(PretrainedError) as e:
        imagenet_weights("mobilenet_v2")
    msg = str(e.value)
    assert "\n" not in msg
    assert f"https://download.pytorch.org/models/{MOBILENET_V2_FILE}" in msg
    assert str(offline / "torch" / "hub" / "checkpoints" / MOBILENET_V2_FILE) in msg
    assert not (offline / "torch" / "hub" / "checkpoints" / MOBILENET_V2_FILE).exists()
    with pytest.raises(PretrainedError) as e:
        imagenet_weights("xception65")
    msg = str(e.value)
    assert "\n" not in msg and "https://huggingface.co/timm/xception65.ra3_in1k/resolve/main/model.safetensors" in msg
    assert str(offline / "hf") in msg and "--pretrained FILE" in msg


def test_imagenet_reuses_the_torch_hub_cache_offline(offline: Path) -> None:
    reference = mobilenet_v2(weights=None)  # stands in for the downloaded file: same layout and name
    cached = offline / "torch" / "hub" / "checkpoints" / MOBILENET_V2_FILE
    cached.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), cached)
    model = build_model(ModelConfig("deeplabv3plus_mobilenet_v2", 5))
    weights = imagenet_weights("mobilenet_v2")
    report = load_backbone_weights(model, "mobilenet_v2", weights)
    assert weights.mean == (0.485, 0.456, 0.406) and weights.std == (0.229, 0.224, 0.225)
    assert torch.equal(model.backbone.state_dict()["0.0.weight"], reference.features[0][0].weight)
    assert report.missing == []  # every backbone tensor came from the file
    assert set(report.unexpected) == {k for k in reference.state_dict()
                                      if k.startswith(("features.18.", "classifier."))}  # the 1280-ch conv, the head


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_classification_file_loads_into_the_backbone_with_a_key_report(suffix: str, tmp_path: Path) -> None:
    reference = mobilenet_v2(weights=None, width_mult=0.35)
    path = tmp_path / f"cls{suffix}"
    (save_file if suffix == ".safetensors" else torch.save)(reference.state_dict(), str(path))
    model = build_model(ModelConfig("deeplabv3_mobilenet_v2", 5, width=0.35))
    report = load_backbone_weights(model, "mobilenet_v2", file_weights(path, "mobilenet_v2"))
    own = model.backbone.state_dict()
    assert len(report.matched) == len(own) and not report.missing
    assert all(torch.equal(own[k], reference.state_dict()[f"features.{k}"]) for k in own)
    summary = report.summary()
    assert f"{len(own)} tensors loaded" in summary and "unexpected, ignored: features.18" in summary


def test_shape_mismatch_and_foreign_files_are_refused(tmp_path: Path) -> None:
    wide = tmp_path / "wide.pth"
    torch.save(mobilenet_v2(weights=None, width_mult=0.5).state_dict(), wide)
    model = build_model(ModelConfig("deeplabv3_mobilenet_v2", 5, width=0.35))
    with pytest.raises(CheckpointError, match="shape mismatch") as e:
        load_backbone_weights(model, "mobilenet_v2", file_weights(wide, "mobilenet_v2"))
    assert "\n" not in str(e.value)
    other = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, other)
    with pytest.raises(CheckpointError, match="shares no tensor"):
        load_backbone_weights(model, "mobilenet_v2", file_weights(other, "mobilenet_v2"))


def test_timm_classification_keys_map_onto_the_xception_features() -> None:
    import timm

    from edgeseg.models.backbones import BACKBONE_SPECS

    classification = timm.create_model("xception65", pretrained=False).state_dict()
    features = build_model(ModelConfig("deeplabv3plus_xception65", 3)).backbone.state_dict()
    key_map = BACKBONE_SPECS["xception65"].key_map
    mapped = {key_map(k) for k in classification}
    assert set(features) <= mapped and mapped - set(features) == {"model.head.fc.weight", "model.head.fc.bias"}
    assert imagenet_normalization("xception65") == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # timm's config for the tag
