"""edgeseg checkpoints: a plain dict of tensors and JSON-like values, saved with torch.save and
loaded with ``torch.load(weights_only=True)`` (no arbitrary unpickling), written atomically.

Layout: {"format": "edgeseg.checkpoint", "version": 1, "config": ModelConfig dict,
"state_dict": {...}, "classes": [...], "palette": [[r,g,b], ...], "preprocessing": {...},
"meta": {...}, "train_state": {...} (optional: optimizer, scheduler, epoch, best mIoU)}.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgeseg.data.preprocess import Preprocessing
from edgeseg.errors import CheckpointError, EdgesegError
from edgeseg.io_utils import atomic_path, require_file
from edgeseg.models.registry import ModelConfig, build_model
from edgeseg.models.torchvision_import import load_state_dict_strict

FORMAT = "edgeseg.checkpoint"
VERSION = 1


@dataclass
class Checkpoint:
    config: ModelConfig
    state_dict: dict[str, torch.Tensor]
    classes: list[str]
    palette: list[list[int]]
    preprocessing: Preprocessing
    meta: dict[str, Any] = field(default_factory=dict)
    train_state: dict[str, Any] | None = None

    def export_metadata(self) -> dict[str, Any]:
        """What an ONNX export of this checkpoint records (see edgeseg.export.onnx_export)."""
        return {"model": self.config.name, "config": self.config.to_dict(), "classes": self.classes,
                "palette": self.palette, "preprocessing": self.preprocessing, "weights": "checkpoint"}

    def build(self) -> nn.Module:
        """The model in eval mode with these weights."""
        model = build_model(self.config)
        load_state_dict_strict(model, self.state_dict, "checkpoint")
        return model.eval()


def save_checkpoint(path: str | Path, ckpt: Checkpoint, half: bool = False) -> None:
    """Write atomically. ``half=True`` stores floating weights as FP16 (half the size; loaded back as FP32)."""
    state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
             for k, v in ckpt.state_dict.items()}
    payload: dict[str, Any] = {
        "format": FORMAT, "version": VERSION, "config": ckpt.config.to_dict(), "state_dict": state,
        "classes": list(ckpt.classes), "palette": [list(map(int, c)) for c in ckpt.palette],
        "preprocessing": ckpt.preprocessing.to_dict(), "meta": dict(ckpt.meta),
    }
    if ckpt.train_state is not None:
        payload["train_state"] = ckpt.train_state
    buffer = io.BytesIO()  # torch.save on a full disk raises an unnamed RuntimeError; a plain write says ENOSPC
    torch.save(payload, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getbuffer())


def is_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is an edgeseg checkpoint (tensors memory-mapped, not read: cheap for big files)."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # any unreadable or foreign file
        return False
    return isinstance(payload, dict) and payload.get("format") == FORMAT


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read and validate a checkpoint; errors say what was expected and what was found."""
    path = require_file(path, "checkpoint", "check the path (train writes OUT/best.pt)", CheckpointError)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"cannot read checkpoint {path} ({type(e).__name__}: {str(e).splitlines()[0][:160]}); "
            "the file is truncated, corrupt or not an edgeseg checkpoint; re-run training or re-copy it"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not an edgeseg checkpoint (no format={FORMAT!r}); for torchvision weights use "
            "--model NAME --weights FILE"
        )
    if payload.get("version", 0) > VERSION:
        raise CheckpointError(f"{path} is checkpoint version {payload['version']}, this edgeseg reads <= {VERSION}; upgrade edgeseg")
    try:
        state = {k: v.float() if v.is_floating_point() else v for k, v in payload["state_dict"].items()}
        return Checkpoint(
            config=ModelConfig.from_dict(payload["config"]),
            state_dict=state,
            classes=list(payload["classes"]),
            palette=[list(c) for c in payload["palette"]],
            preprocessing=Preprocessing.from_dict(payload["preprocessing"]),
            meta=dict(payload.get("meta", {})),
            train_state=payload.get("train_state"),
        )
    except EdgesegError:
        raise
    except (KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"checkpoint {path} lacks a required field ({e}); re-save it with edgeseg train") from None
