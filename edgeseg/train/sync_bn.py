"""SyncBatchNorm for every device: batch statistics over all processes of a torchrun job.

torch's ``nn.SyncBatchNorm`` runs on GPUs only (and DistributedDataParallel refuses it on CPU), so
GPUs get torch's (through timm's converter, which also handles timm's BatchNormAct2d) and CPU
processes (gloo) get ``CPUSyncBatchNorm``: per-channel sums are all-reduced by an autograd-aware
all-reduce (two passes: mean, then centred squares, so the
variance does not cancel), which also makes the backward pass exact across processes.
timm's ``BatchNormAct2d`` (BN + activation in one module, used by Xception-65) keeps its activation.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes; the gradient of a sum over processes is the sum of their gradients."""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:
        out = t.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        out = grad.clone()
        dist.all_reduce(out)
        return out


def _cpu_sync_batch_norm(bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    all_reduce = _AllReduceSum.apply
    dims = [d for d in range(x.dim()) if d != 1]
    shape = [1, -1] + [1] * (x.dim() - 2)
    count = torch.tensor(float(x.numel() // x.shape[1]), dtype=x.dtype)
    dist.all_reduce(count)
    mean = all_reduce(x.sum(dims)) / count
    centred = x - mean.view(shape)
    var = all_reduce((centred * centred).sum(dims)) / count
    if bn.track_running_stats:
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
            bn.running_mean.lerp_(mean.detach(), factor)
            bn.running_var.lerp_(var.detach() * (count / (count - 1).clamp(min=1)), factor)
    y = centred * torch.rsqrt(var + bn.eps).view(shape)
    if bn.affine:
        y = y * bn.weight.view(shape) + bn.bias.view(shape)
    return y


class CPUSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics span every process (gloo). Not an ``nn.SyncBatchNorm``
    subclass: DistributedDataParallel refuses those on CPU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            return _cpu_sync_batch_norm(self, x)
        return super().forward(x)


class CPUSyncBatchNormAct(CPUSyncBatchNorm):
    """timm's BatchNormAct2d, synchronised: BN -> drop -> act."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(super().forward(x)))


def _convert_cpu(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, CPUSyncBatchNorm):
        has_act = hasattr(module, "act") and hasattr(module, "drop")
        out = (CPUSyncBatchNormAct if has_act else CPUSyncBatchNorm)(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        if has_act:
            out.act, out.drop = module.act, module.drop
        if module.affine:
            out.weight, out.bias = module.weight, module.bias
        if module.track_running_stats:
            out.running_mean, out.running_var = module.running_mean, module.running_var
            out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
        return out
    for name, child in module.named_children():
        module.add_module(name, _convert_cpu(child))
    return module


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm (torch's and timm's BatchNormAct2d) synchronised across processes, parameters and
    running statistics kept: torch's / timm's SyncBatchNorm on GPUs, ``CPUSyncBatchNorm`` on CPU."""
    if device.type != "cpu":
        from timm.layers import convert_sync_batchnorm as timm_convert

        return timm_convert(module)
    return _convert_cpu(module)
