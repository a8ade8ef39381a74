"""Exponential moving average of a model's weights (``edgeseg train --ema 0.999``).

After every optimizer step: ``ema = d * ema + (1 - d) * weights`` for every floating tensor of the
state_dict (BatchNorm running statistics included); integer buffers are copied. As in
TensorFlow's ExponentialMovingAverage with ``num_updates``, ``d = min(decay, (1 + n) / (10 + n))``
after ``n`` updates, so early weights do not dominate short runs.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from edgeseg.errors import EdgesegError


class ModelEMA:
    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise EdgesegError(f"--ema must be a decay in (0, 1), e.g. 0.999, got {decay}")
        self.decay, self.updates = float(decay), 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        pairs = list(zip(self.module.state_dict().values(), model.state_dict().values()))
        self._floats = [(e, m) for e, m in pairs if e.is_floating_point()]
        self._others = [(e, m) for e, m in pairs if not e.is_floating_point()]

    @torch.no_grad()
    def update(self) -> None:
        """Average in the tracked model's current weights (the model given at construction)."""
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        self.updates += 1
        if self._floats:
            torch._foreach_lerp_([e for e, _ in self._floats], [m for _, m in self._floats], 1.0 - d)
        for e, m in self._others:
            e.copy_(m)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates, "weights": self.module.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = int(state["updates"])
        self.module.load_state_dict(state["weights"])
