"""Where training starts: --pretrained FILE / imagenet through the CLI, --init fine-tuning with another
class count (edgeseg checkpoint or torchvision state_dict), --freeze-backbone, and their refusals."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torchvision.models import mobilenet_v2
from torchvision.models import segmentation as tvseg

from _helpers import block_network, write_folder_dataset
from edgeseg.cli import main
from edgeseg.errors import CheckpointError, EdgesegError
from edgeseg.models import ModelConfig, build_model
from edgeseg.models.checkpoint import load_checkpoint
from edgeseg.models.init_weights import class_dependent_keys, load_for_finetuning, read_init_weights
from edgeseg.train.loop import EpochEnd, TrainConfig, train
from test_train import TINY

CLI_TINY = ["--model", "deeplabv3plus_mobilenet_v2", "--width", "0.35", "--batch-size", "4", "--epochs", "1",
            "--workers", "0", "--max-train-samples", "8", "--max-val-samples", "2", "--crop", "48x64"]


def _run(*args) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


def test_cli_pretrained_file_reports_keys_and_takes_the_weights_normalization(tmp_path: Path) -> None:
    weights = tmp_path / "mobilenet_v2_035.pth"
    torch.save(mobilenet_v2(weights=None, width_mult=0.35).state_dict(), weights)
    res = _run("train", *CLI_TINY, "--data", "synthetic:48x64", "--pretrained", weights, "--out", tmp_path / "run")
    assert res.exit_code == 0, res.output
    assert "pretrained backbone" in res.output and "tensors loaded" in res.output
    assert "unexpected, ignored: features.18" in res.output
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    assert best.preprocessing.mean == (0.485, 0.456, 0.406)  # MobileNet_V2_Weights' own transforms
    assert best.meta["train_config"]["pretrained"] == str(weights)


def test_cli_pretrained_imagenet_offline_is_one_line(monkeypatch, tmp_path: Path) -> None:
    block_network(monkeypatch)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    res = _run("train", *CLI_TINY, "--data", "synthetic:48x64", "--pretrained", "imagenet", "--out", tmp_path / "r")
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1, res.output
    assert "mobilenet_v2-b0353104.pth" in res.output and str(tmp_path / "torch") in res.output
    res = _run("train", *CLI_TINY, "--data", "synthetic:48x64", "--pretrained", tmp_path / "nope.pth",
               "--out", tmp_path / "r")
    assert res.exit_code == 2 and "does not exist" in res.output


@pytest.fixture(scope="module")
def synthetic_checkpoint(tmp_path_factory) -> Path:
    return train(TrainConfig(out=tmp_path_factory.mktemp("ckpt"), epochs=1, **TINY), log=lambda s: None).best_path


def test_init_from_an_edgeseg_checkpoint_with_another_class_count(synthetic_checkpoint: Path, tmp_path: Path) -> None:
    data = f"folder:{write_folder_dataset(tmp_path / 'three', ['road', 'car', 'sky'])}"
    init = load_checkpoint(synthetic_checkpoint)
    assert init.config.num_classes == 8
    logs: list[str] = []
    snapshots: dict[int, dict[str, torch.Tensor]] = {}

    def on_epoch_end(e: EpochEnd) -> None:
        snapshots[e.epoch] = {k: v.clone() for k, v in e.model.state_dict().items()}

    cfg = dict(TINY, data=data, max_train_samples=None, val_split="none")
    result = train(TrainConfig(out=tmp_path / "ft", epochs=2, init=synthetic_checkpoint, freeze_backbone=1, **cfg),
                   log=logs.append, on_epoch_end=on_epoch_end)
    line = next(s for s in logs if s.startswith("init "))
    assert "re-initialised (class count differs): decoder.classifier.bias, decoder.classifier.weight" in line
    assert "missing" not in line and "unexpected" not in line
    assert any("epoch 1: backbone frozen" in s for s in logs) and any("epoch 2: backbone trained" in s for s in logs)
    backbone = [k for k in init.state_dict if k.startswith("backbone.")]
    assert all(torch.equal(snapshots[1][k].cpu(), init.state_dict[k]) for k in backbone), "frozen epoch changed it"
    assert not all(torch.equal(snapshots[2][k].cpu(), init.state_dict[k]) for k in backbone)
    assert not torch.equal(snapshots[1]["decoder.refine.0.0.weight"].cpu(), init.state_dict["decoder.refine.0.0.weight"])
    best = load_checkpoint(result.best_path)
    assert best.classes == ["road", "car", "sky"] and best.config.num_classes == 3
    assert best.preprocessing.mean == init.preprocessing.mean and result.best_miou is None


def test_init_from_a_torchvision_segmentation_state_dict(tmp_path: Path) -> None:
    tv = tvseg.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=21, aux_loss=True)
    path = tmp_path / "tv.pth"
    torch.save(tv.state_dict(), path)
    config = ModelConfig("deeplabv3_mobilenet_v3_large", 4)
    model = build_model(config)
    state, prep = read_init_weights(path)
    report = load_for_finetuning(model, config, state, str(path))
    assert prep is None
    assert report.reinitialised == ["classifier.4.bias", "classifier.4.weight"]
    assert report.unexpected and all(k.startswith("aux_classifier.") for k in report.unexpected)
    assert report.missing == []
    assert torch.equal(model.state_dict()["backbone.0.0.weight"], tv.state_dict()["backbone.0.0.weight"])
    assert class_dependent_keys(config) == {"classifier.4.weight", "classifier.4.bias"}


def test_init_refuses_another_architecture_and_pretrained_together(synthetic_checkpoint: Path, tmp_path: Path) -> None:
    config = ModelConfig("deeplabv3plus_mobilenet_v2", 8, width=0.5)
    state, _ = read_init_weights(synthetic_checkpoint)
    with pytest.raises(CheckpointError, match="another architecture: shape mismatch outside the classifier") as e:
        load_for_finetuning(build_model(config), config, state, str(synthetic_checkpoint))
    assert "\n" not in str(e.value)
    with pytest.raises(EdgesegError, match="pass one"):
        train(TrainConfig(out=tmp_path, epochs=1, init=synthetic_checkpoint, pretrained="imagenet", **TINY),
              log=lambda s: None)
    res = _run("train", "--model", "unet", "--width", "0.125", "--data", "synthetic:48x64", "--pretrained",
               synthetic_checkpoint, "--out", tmp_path / "u")
    assert res.exit_code == 2 and "no backbone" in res.output
