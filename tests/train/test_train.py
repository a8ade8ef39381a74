"""Training: a tiny run end to end, resume, poly LR, and two CPU processes under torchrun."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from edgeseg.models.checkpoint import load_checkpoint
from edgeseg.errors import EdgesegError
from edgeseg.train.loop import TrainConfig, poly_schedule, train

TINY = dict(model="deeplabv3plus_mobilenet_v2", data="synthetic:48x64", width=0.35, batch_size=4,
            max_train_samples=16, max_val_samples=4, workers=0, crop=(48, 64))


def test_poly_schedule_decays_to_zero() -> None:
    f = poly_schedule(100)
    assert f(0) == 1.0
    assert f(50) == pytest.approx(0.5 ** 0.9)
    assert f(100) == 0.0 and f(150) == 0.0


def test_train_writes_best_and_last_and_a_resume_continues_the_uninterrupted_run(tmp_path: Path) -> None:
    cfg = dict(TINY, ema=0.5, max_train_samples=8)

    def interrupt_after_epoch_1(e) -> None:  # what an interrupted run leaves behind
        if e.epoch == 1:
            (tmp_path / "part").mkdir()
            shutil.copy(tmp_path / "whole" / "last.pt", tmp_path / "part" / "last.pt")

    whole = train(TrainConfig(out=tmp_path / "whole", epochs=2, **cfg), log=lambda s: None,
                  on_epoch_end=interrupt_after_epoch_1)
    assert whole.best_path.is_file() and whole.last_path.is_file()
    assert not [p for p in whole.last_path.parent.iterdir() if p.name.startswith(".")], "temporary files left behind"
    best = load_checkpoint(whole.best_path)
    assert best.train_state is None and best.meta["epoch"] in (1, 2)
    assert 0.0 <= best.meta["val_miou"] <= 100.0
    assert len(best.classes) == best.config.num_classes
    assert load_checkpoint(whole.best_ema_path).meta["ema_decay"] == 0.5 and "ema_val_miou" in whole.history[0]

    with pytest.raises(EdgesegError, match="was trained as"):
        train(TrainConfig(out=tmp_path / "part", epochs=2, resume=True, **dict(cfg, width=0.5)), log=lambda s: None)
    resumed = train(TrainConfig(out=tmp_path / "part", epochs=2, resume=True, **cfg), log=lambda s: None)
    assert resumed.epochs_run == 1
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in whole.history]
    a, b = load_checkpoint(whole.last_path), load_checkpoint(resumed.last_path)
    assert [h["epoch"] for h in b.train_state["history"]] == [1, 2] and b.train_state["epoch"] == 1
    ema_a, ema_b = a.train_state["ema"]["weights"], b.train_state["ema"]["weights"]
    assert all(torch.allclose(v, ema_b[k], atol=1e-6) for k, v in ema_a.items())
    assert all(torch.allclose(v, b.state_dict[k], atol=1e-6) for k, v in a.state_dict.items())
    assert not all(torch.equal(v, a.state_dict[k]) for k, v in ema_a.items()), "EMA weights = model weights"

    shutil.copy(whole.best_path, tmp_path / "part" / "last.pt")  # weights only
    with pytest.raises(EdgesegError, match="no training state") as e:
        train(TrainConfig(out=tmp_path / "part", epochs=3, resume=True, **cfg), log=lambda s: None)
    assert "was trained as" not in str(e.value)


def test_val_split_inside_the_training_splits_is_refused(tmp_path: Path) -> None:
    with pytest.raises(EdgesegError, match="also a training split"):
        train(TrainConfig(out=tmp_path, epochs=1, train_split="train+val", **TINY), log=lambda s: None)
    logs: list[str] = []
    result = train(TrainConfig(out=tmp_path, epochs=1, train_split="train+val", val_split="none", **TINY),
                   log=logs.append)
    assert result.best_miou is None and result.best_path.is_file() and "val_miou" not in result.history[0]
    assert "synthetic:48x64 train+val images" in logs[0] and "no validation" in logs[-1]


def test_a_run_with_nothing_to_do_is_refused_before_any_write(tmp_path: Path) -> None:
    for changes, flag in ((dict(epochs=0), "--epochs"), (dict(epochs=1, max_val_samples=0), "--max-val-samples"),
                          (dict(epochs=1, max_train_samples=0), "--max-train-samples")):
        with pytest.raises(EdgesegError, match=f"{flag} must be >= 1"):  # was: a best.pt reported, never written
            train(TrainConfig(out=tmp_path / "run", **{**TINY, **changes}), log=lambda s: None)
    assert not (tmp_path / "run").exists()


def test_ema_follows_the_decay_formula() -> None:
    from torch import nn

    from edgeseg.train.ema import ModelEMA

    model = nn.Sequential(nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1))
    ema = ModelEMA(model, 0.9)
    start = model[0].weight.detach().clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
    ema.update()  # d = min(0.9, 1/10) = 0.1
    assert torch.allclose(ema.module[0].weight, 0.1 * start + 0.9 * (start + 1))
    model[1].num_batches_tracked.fill_(7)
    ema.update()
    assert int(ema.module[1].num_batches_tracked) == 7 and ema.updates == 2
    with pytest.raises(EdgesegError, match="decay in"):
        ModelEMA(model, 1.5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_cpu_processes_train_together_under_torchrun(tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "edgeseg.cli", "train", "--model", TINY["model"],
           "--data", TINY["data"], "--width", "0.35", "--epochs", "1", "--batch-size", "2", "--workers", "0",
           "--max-train-samples", "16", "--max-val-samples", "4", "--device", "cpu", "--out", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "2 process(es) (distributed backend: gloo, SyncBatchNorm)" in proc.stdout + proc.stderr
    history = load_checkpoint(out / "last.pt").train_state["history"]
    # 16 images, 2 per process per step, 2 processes: each process takes 4 steps over its half of the data.
    assert history[0]["world_size"] == 2 and history[0]["steps"] == 4


@pytest.mark.gpu
def test_amp_training_on_cuda(tmp_path: Path) -> None:
    result = train(TrainConfig(out=tmp_path, epochs=1, device="cuda", **TINY), log=lambda s: None)
    assert result.best_path.is_file()
    assert 0.0 <= load_checkpoint(result.best_path).meta["val_miou"] <= 100.0
