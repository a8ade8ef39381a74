"""Two CPU processes under torchrun: SyncBatchNorm statistics agree across ranks (and do not without it),
the synchronised BatchNorm is the whole-batch BatchNorm, a resumed run continues the same loss curve,
every rank returns the same result. The GradScaler part needs CUDA."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from edgeseg.models.checkpoint import load_checkpoint, save_checkpoint
from edgeseg.train.loop import EpochEnd, TrainConfig, train
from test_train import TINY, _free_port

WORKER = Path(__file__).with_name("ddp_worker.py")


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(WORKER), str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _read(out: Path, name: str) -> dict:
    return json.loads((out / name).read_text())


def test_cpu_sync_batchnorm_is_the_whole_batch_batchnorm(ddp_runs: Path) -> None:
    for rank in (0, 1):
        r = _read(ddp_runs, f"bn_math_rank{rank}.json")
        assert r["type"] == "CPUSyncBatchNorm"
        assert max(r["out"], r["x_grad"], r["w_grad"], r["running_var"]) < 1e-5, r


@pytest.mark.slow
def test_sync_batchnorm_statistics_are_equal_across_ranks(ddp_runs: Path) -> None:
    for epoch in (1, 2):
        a0 = torch.load(ddp_runs / f"a_bn_rank0_epoch{epoch}.pt", weights_only=True)
        a1 = torch.load(ddp_runs / f"a_bn_rank1_epoch{epoch}.pt", weights_only=True)
        assert a0.keys() == a1.keys() and len(a0) > 50
        assert all(torch.equal(a0[k], a1[k]) for k in a0), f"epoch {epoch}: ranks disagree"
    # epoch 1 froze the backbone (statistics too), epoch 2 trained it
    e1 = torch.load(ddp_runs / "a_bn_rank0_epoch1.pt", weights_only=True)
    e2 = torch.load(ddp_runs / "a_bn_rank0_epoch2.pt", weights_only=True)
    backbone = [k for k in e1 if k.startswith("backbone.")]
    assert backbone and all(torch.equal(e1[k], torch.zeros_like(e1[k])) for k in backbone if "running_mean" in k)
    assert not all(torch.equal(e1[k], e2[k]) for k in backbone)
    # the same training without SyncBatchNorm: each rank keeps statistics of its own half of the batch
    n0 = torch.load(ddp_runs / "nosync_bn_rank0_epoch1.pt", weights_only=True)
    n1 = torch.load(ddp_runs / "nosync_bn_rank1_epoch1.pt", weights_only=True)
    assert not all(torch.equal(n0[k], n1[k]) for k in n0)


@pytest.mark.slow
def test_every_rank_returns_the_same_result_and_resume_continues_the_loss_curve(ddp_runs: Path) -> None:
    a = [_read(ddp_runs, f"a_result_rank{r}.json") for r in (0, 1)]
    resumed = [_read(ddp_runs, f"resume_result_rank{r}.json") for r in (0, 1)]
    assert a[0] == a[1] and resumed[0] == resumed[1]
    assert a[0]["best_miou"] is not None and a[0]["best_ema_path"].endswith("best_ema.pt")
    assert resumed[0]["epochs_run"] == 1
    loss_a = [h["train_loss"] for h in a[0]["history"]]
    loss_r = [h["train_loss"] for h in resumed[0]["history"]]
    assert loss_r[0] == loss_a[0]  # the history came back with the training state
    assert loss_r[1] == pytest.approx(loss_a[1], rel=1e-6, abs=1e-6), (loss_a, loss_r)
    assert a[0]["history"][1]["val_miou"] == resumed[0]["history"][1]["val_miou"]
    last_a = load_checkpoint(ddp_runs / "a" / "last.pt")
    last_r = load_checkpoint(ddp_runs / "resume" / "last.pt")
    for k, v in last_a.state_dict.items():
        assert torch.allclose(v.float(), last_r.state_dict[k].float(), atol=1e-6), k
    ema_a, ema_r = last_a.train_state["ema"], last_r.train_state["ema"]
    assert ema_a["updates"] == ema_r["updates"] == 4  # 2 epochs x 2 steps
    assert all(torch.allclose(v.float(), ema_r["weights"][k].float(), atol=1e-6) for k, v in ema_a["weights"].items())


@pytest.mark.gpu
def test_gradscaler_state_is_restored_on_resume(tmp_path: Path) -> None:
    cfg = dict(TINY, device="cuda")
    train(TrainConfig(out=tmp_path, epochs=1, **cfg), log=lambda s: None)
    last = load_checkpoint(tmp_path / "last.pt")
    assert last.train_state["scaler"]["scale"] > 0
    last.train_state["scaler"]["scale"] = 1024.0  # a scale no fresh GradScaler starts from (65536)
    save_checkpoint(tmp_path / "last.pt", last)
    seen: list[float] = []
    logs: list[str] = []

    def on_epoch_end(e: EpochEnd) -> None:
        seen.append(e.scaler.get_scale())

    train(TrainConfig(out=tmp_path, epochs=2, resume=True, **cfg), log=logs.append, on_epoch_end=on_epoch_end)
    assert any("GradScaler scale 1024" in line for line in logs), logs
    assert seen and 0 < seen[0] <= 1024.0  # growth needs 2000 clean steps; overflows only halve it
