"""PyTorch runner: eager module on CPU or CUDA, FP32 or FP16 (CUDA), optional channels_last."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from edgeseg.backends.base import UNBOUNDED, InputSpec, Runner
from edgeseg.errors import EdgesegError



class TorchRunner(Runner):
    name = "torch"
    thread_safe = True  # an eval-mode module under no_grad keeps no state between calls

    def __init__(self, model: nn.Module, device: str = "cpu", half: bool = False, channels_last: bool = False) -> None:
        super().__init__()
        if half and device == "cpu":
            raise EdgesegError("FP16 PyTorch inference needs CUDA; use --device cuda or FP32 on CPU")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise EdgesegError(f"device {device} asked for but no CUDA GPU is visible; use cpu")
        self.model, self.device, self.half, self.channels_last = model, torch.device(device), half, channels_last

    @property
    def input_spec(self) -> InputSpec:
        return InputSpec("input", np.dtype(np.float32), (1, 3, 1, 1), (UNBOUNDED, 3, UNBOUNDED, UNBOUNDED))

    def _activate(self) -> None:
        # Denormal activations of trained nets are ~100x slower on x86 CPUs and numerically
        # irrelevant: flush them to zero (process-wide setting, as torch offers it).
        torch.set_flush_denormal(True)
        self.model = self.model.eval().to(self.device)
        if self.half:
            self.model = self.model.half()
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

    @torch.no_grad()
    def _infer(self, x: Any) -> Any:
        returns_numpy = isinstance(x, np.ndarray)
        t = torch.from_numpy(x) if returns_numpy else x
        t = t.to(self.device, non_blocking=True)
        if self.half:
            t = t.half()
        if self.channels_last:
            t = t.contiguous(memory_format=torch.channels_last)
        out = self.model(t).float()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return out.cpu().numpy() if returns_numpy else out
