"""Run by tests/train/test_ddp.py under ``torchrun --nproc_per_node 2`` (gloo, CPU).

One launch, several checks (each torchrun start costs seconds on 2 cores):
  1. CPUSyncBatchNorm on each half of a batch == BatchNorm2d on the whole batch (output, input and
     weight gradients);
  2. run "a": 2 epochs, SyncBatchNorm, backbone frozen in epoch 1, EMA; after epoch 1 last.pt is
     copied to "resume/"; BatchNorm statistics of every rank saved after every epoch;
  3. run "nosync": 1 epoch with --no-sync-bn (statistics saved per rank);
  4. run "resume": continues "resume/last.pt" to epoch 2.
Every rank writes its TrainResult as JSON. argv: OUT_DIR.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from edgeseg.train.loop import EpochEnd, TrainConfig, train
from edgeseg.train.sync_bn import convert_sync_batchnorm

OUT = Path(sys.argv[1])
RANK = int(os.environ["RANK"])
TINY = dict(model="deeplabv3plus_mobilenet_v2", data="synthetic:48x64", width=0.35, batch_size=2,
            max_train_samples=8, max_val_samples=2, workers=0, crop=(48, 64), device="cpu")


def check_sync_bn_math() -> dict:
    torch.manual_seed(0)  # the same full batch on both ranks
    x = torch.randn(4, 3, 5, 6) * 3 + 1
    g = torch.randn(4, 3, 5, 6)
    ref_bn = nn.BatchNorm2d(3)
    nn.init.uniform_(ref_bn.weight, 0.5, 1.5)
    sync_bn = convert_sync_batchnorm(nn.Sequential(nn.BatchNorm2d(3)), torch.device("cpu"))[0]
    sync_bn.load_state_dict(ref_bn.state_dict())
    xr = x.clone().requires_grad_(True)
    y = ref_bn(xr)
    # the DDP objective: the mean over ranks of each rank's loss on its half
    ((y[:2] * g[:2]).sum() + (y[2:] * g[2:]).sum()).div(2).backward()
    half = slice(2 * RANK, 2 * RANK + 2)
    xs = x[half].clone().requires_grad_(True)
    ys = sync_bn(xs)
    (ys * g[half]).sum().backward()
    weight_grad = sync_bn.weight.grad.clone()
    dist.all_reduce(weight_grad)
    weight_grad /= 2  # what DistributedDataParallel's gradient averaging does
    return {"out": (ys - y[half]).abs().max().item(), "x_grad": (xs.grad - xr.grad[half] * 2).abs().max().item(),
            "w_grad": (weight_grad - ref_bn.weight.grad).abs().max().item(),
            "running_var": (sync_bn.running_var - ref_bn.running_var).abs().max().item(),
            "type": type(sync_bn).__name__}


def bn_stats(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if "running_" in k}


def saver(run: str, copy_after_epoch_1: bool = False):
    def on_epoch_end(e: EpochEnd) -> None:
        torch.save(bn_stats(e.model), OUT / f"{run}_bn_rank{e.rank}_epoch{e.epoch}.pt")
        if copy_after_epoch_1 and e.epoch == 1 and e.rank == 0:
            (OUT / "resume").mkdir()
            shutil.copy(OUT / run / "last.pt", OUT / "resume" / "last.pt")
        if e.world > 1:
            dist.barrier()
    return on_epoch_end


def write_result(run: str, result) -> None:
    (OUT / f"{run}_result_rank{RANK}.json").write_text(json.dumps(asdict(result), default=str))


def main() -> None:
    dist.init_process_group("gloo")
    (OUT / f"bn_math_rank{RANK}.json").write_text(json.dumps(check_sync_bn_math()))
    common = dict(TINY, epochs=2, freeze_backbone=1, ema=0.9)
    write_result("a", train(TrainConfig(out=OUT / "a", **common), log=lambda s: None,
                            on_epoch_end=saver("a", copy_after_epoch_1=True)))
    write_result("nosync", train(TrainConfig(out=OUT / "nosync", **dict(TINY, epochs=1, sync_bn=False)),
                                 log=lambda s: None, on_epoch_end=saver("nosync")))
    write_result("resume", train(TrainConfig(out=OUT / "resume", resume=True, **common), log=lambda s: None,
                                 on_epoch_end=saver("resume")))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
