"""Start a model from another one's weights (``edgeseg train --init CKPT``): an edgeseg checkpoint or a
plain segmentation state_dict (e.g. torchvision's), possibly trained for another class count.

Tensors whose key and shape match load; the class-dependent layers (found by building the model
with one class more and seeing which shapes change) are re-initialised when their shape differs;
any other shape mismatch means another architecture and is refused.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from edgeseg.data.preprocess import Preprocessing
from edgeseg.errors import CheckpointError
from edgeseg.models.checkpoint import FORMAT, load_checkpoint
from edgeseg.models.pretrained import LoadReport
from edgeseg.models.registry import ModelConfig, build_model
from edgeseg.models.torchvision_import import read_state_dict


def _is_edgeseg_checkpoint(path: Path) -> bool:
    if path.suffix == ".safetensors" or not path.is_file():
        return False
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return False  # read_state_dict reports why
    return isinstance(payload, dict) and payload.get("format") == FORMAT


def read_init_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], Preprocessing | None]:
    """(state_dict, the checkpoint's preprocessing or None for a plain state_dict); nothing is unpickled."""
    path = Path(path)
    if _is_edgeseg_checkpoint(path):
        ckpt = load_checkpoint(path)
        return ckpt.state_dict, ckpt.preprocessing
    state = read_state_dict(path)
    return {k.removeprefix("module."): v for k, v in state.items()}, None


def class_dependent_keys(config: ModelConfig) -> set[str]:
    """State_dict keys whose shape depends on the class count (the classifier layers)."""
    a = build_model(config).state_dict()
    b = build_model(replace(config, num_classes=config.num_classes + 1)).state_dict()
    return {k for k, v in a.items() if v.shape != b[k].shape}


def load_for_finetuning(model: nn.Module, config: ModelConfig, state: dict[str, torch.Tensor],
                        source: str) -> LoadReport:
    """Load every tensor of ``state`` that fits ``model``; see the module docstring for the rules."""
    own = model.state_dict()
    classifier = class_dependent_keys(config)
    fits = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
    wrong = [k for k in state if k in own and state[k].shape != own[k].shape]
    foreign = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in wrong if k not in classifier]
    if foreign:
        raise CheckpointError(
            f"{source} is another architecture: shape mismatch outside the classifier (file vs model) "
            f"{', '.join(foreign[:3])}; --init needs a checkpoint of the same --model, --width and --output-stride"
        )
    if not fits:
        raise CheckpointError(f"{source} shares no tensor with {config.name} (e.g. it has "
                              f"{', '.join(list(state)[:2])}); pass a checkpoint of the same model")
    model.load_state_dict(fits, strict=False)
    return LoadReport(source=source, matched=sorted(fits), reinitialised=sorted(wrong),
                      missing=[k for k in own if k not in state],
                      unexpected=[k for k in state if k not in own])
