"""Precise BatchNorm statistics: the averages are the batch statistics training would compute, only the
statistics change, and `edgeseg precise-bn` writes a new checkpoint without touching the old one."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from edgeseg.cli import main
from edgeseg.data import Preprocessing, open_dataset
from edgeseg.errors import EdgesegError
from edgeseg.models import ModelConfig, build_model
from edgeseg.models.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from edgeseg.train.precise_bn import batchnorm_layers, recompute_bn_statistics

SPEC = "synthetic:48x64"


def _tiny_checkpoint() -> Checkpoint:
    torch.manual_seed(0)
    data = open_dataset(SPEC, "train")
    model = build_model(ModelConfig("deeplabv3plus_mobilenet_v2", data.num_classes, width=0.35))
    for m in batchnorm_layers(model):  # statistics far from the data's, as a short or noisy training leaves them
        m.running_mean.fill_(3.0)
        m.running_var.fill_(0.01)
    return Checkpoint(config=ModelConfig("deeplabv3plus_mobilenet_v2", data.num_classes, width=0.35),
                      state_dict=model.state_dict(), classes=data.classes, palette=data.palette,
                      preprocessing=Preprocessing())


def test_statistics_are_the_average_of_training_batch_statistics() -> None:
    ckpt = _tiny_checkpoint()
    model, data = ckpt.build(), open_dataset(SPEC, "train")
    first = batchnorm_layers(model)[0]
    momenta = [m.momentum for m in batchnorm_layers(model)]
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k}

    # the first BatchNorm's input does not depend on any BatchNorm: capture it in a plain eval pass
    inputs: list[torch.Tensor] = []
    hook = first.register_forward_pre_hook(lambda _m, args: inputs.append(args[0].detach().clone()))
    frames = [torch.from_numpy(ckpt.preprocessing(data[i][0])) for i in range(11)]
    with torch.no_grad():
        for batch in (frames[0:4], frames[4:8]):  # 11 images in batches of 4: the partial batch is dropped
            model(torch.stack(batch))
    hook.remove()
    expected_mean = torch.stack([x.mean(dim=(0, 2, 3)) for x in inputs]).mean(0)
    expected_var = torch.stack([x.transpose(0, 1).flatten(1).var(dim=1, unbiased=True) for x in inputs]).mean(0)

    used = recompute_bn_statistics(model, data, ckpt.preprocessing, images=11, batch_size=4, log=lambda s: None)
    assert used == 8
    torch.testing.assert_close(first.running_mean, expected_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(first.running_var, expected_var, rtol=1e-5, atol=1e-6)
    assert not model.training and not any(m.training for m in model.modules())
    assert [m.momentum for m in batchnorm_layers(model)] == momenta
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in weights.items()), "weights must not change"
    deepest = batchnorm_layers(model)[-1]
    assert not torch.allclose(deepest.running_mean, torch.full_like(deepest.running_mean, 3.0))


def test_too_few_images_are_refused() -> None:
    ckpt = _tiny_checkpoint()
    with pytest.raises(EdgesegError, match="at least 2 images"):
        recompute_bn_statistics(ckpt.build(), open_dataset(SPEC, "train"), ckpt.preprocessing, images=1,
                                log=lambda s: None)


def test_cli_writes_a_new_checkpoint_and_refuses_to_replace_files(tmp_path: Path) -> None:
    src = tmp_path / "last.pt"
    save_checkpoint(src, _tiny_checkpoint())
    before = src.read_bytes()
    out = tmp_path / "sub" / "precise.pt"
    run = CliRunner().invoke
    res = run(main, ["precise-bn", "--checkpoint", str(src), "--data", SPEC, "--images", "8", "--batch-size", "4",
                     "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert src.read_bytes() == before
    new, old = load_checkpoint(out), load_checkpoint(src)
    assert new.meta["bn_statistics"] == {"data": SPEC, "split": "train", "images": 8, "batch_size": 4,
                                         "from": "last.pt"}
    changed = [k for k in old.state_dict if not torch.equal(old.state_dict[k], new.state_dict[k])]
    assert changed and all("running_" in k or "num_batches_tracked" in k for k in changed)

    res = run(main, ["precise-bn", "--checkpoint", str(src), "--data", SPEC, "--out", str(src)])
    assert res.exit_code == 2 and "is the checkpoint being read" in res.output
    assert src.read_bytes() == before
    kept = out.read_bytes()
    res = run(main, ["precise-bn", "--checkpoint", str(src), "--data", SPEC, "--out", str(out)])
    assert res.exit_code == 2 and "--overwrite" in res.output and out.read_bytes() == kept
    res = run(main, ["precise-bn", "--checkpoint", str(src), "--data", "synthetic:48x64", "--images", "1",
                     "--out", str(tmp_path / "one.pt")])
    assert res.exit_code == 2 and "at least 2 images" in res.output and not (tmp_path / "one.pt").exists()
