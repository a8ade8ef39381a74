"""Training: a tiny run end to end, resume, poly LR, and two CPU processes under torchrun."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_train_writes_best_and_last_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = train(TrainConfig(out=out, epochs=1, **TINY), log=lambda s: None)
    assert first.best_path.is_file() and first.last_path.is_file()
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "temporary files left behind"
    best = load_checkpoint(first.best_path)
    assert best.train_state is None and best.meta["epoch"] == 1
    assert 0.0 <= best.meta["val_miou"] <= 100.0
    assert len(best.classes) == best.config.num_classes

    resumed = train(TrainConfig(out=out, epochs=2, resume=True, **TINY), log=lambda s: None)
    assert resumed.epochs_run == 1
    last = load_checkpoint(resumed.last_path)
    assert [h["epoch"] for h in last.train_state["history"]] == [1, 2]
    assert last.train_state["epoch"] == 1


def test_resume_refuses_another_model(tmp_path: Path) -> None:
    train(TrainConfig(out=tmp_path, epochs=1, **TINY), log=lambda s: None)
    other = dict(TINY, width=0.5)
    with pytest.raises(EdgesegError, match="was trained as"):
        train(TrainConfig(out=tmp_path, epochs=2, resume=True, **other), log=lambda s: None)


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
