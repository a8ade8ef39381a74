"""Load torchvision segmentation weights (a state_dict file, as torchvision saves or downloads it)
into the edgeseg model of the same name. The auxiliary head is optional and dropped: edgeseg
models have none."""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from edgeseg.errors import CheckpointError, ModelError
from edgeseg.io_utils import require_file
from edgeseg.models.registry import TORCHVISION_NAMES, ModelConfig, build_model


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a tensor dict from a .pth/.pt (weights_only) or .safetensors file, never unpickling code."""
    path = require_file(path, "weights file", "check the path", CheckpointError)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            with warnings.catch_warnings():  # legacy-format files (e.g. EfficientNet-Lite's) load fine; torch warns
                warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
                state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, corrupt or pickled objects that weights_only refuses
        raise CheckpointError(
            f"cannot read {path} as a weights file ({type(e).__name__}: {str(e).splitlines()[0][:160]}); "
            "expected a state_dict saved with torch.save or safetensors; re-download or re-save it"
        ) from None
    if isinstance(state, dict) and state.get("format") == "edgeseg.checkpoint":
        raise CheckpointError(f"{path} is an edgeseg checkpoint, not a plain state_dict; pass it as --checkpoint "
                              "(or to train as --init)")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} holds {type(state).__name__}, expected a dict of tensors (a state_dict)")
    return state


def load_state_dict_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """``model.load_state_dict(strict=True)`` with a one-line error that names the first mismatches."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
             if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append(f"shape mismatch (file vs model): {', '.join(wrong[:3])}")
        if missing:
            parts.append(f"{len(missing)} missing keys, e.g. {', '.join(missing[:3])}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys, e.g. {', '.join(unexpected[:3])}")
        raise CheckpointError(
            f"{source} does not fit the model: {'; '.join(parts)}; check the model name and --num-classes"
        )
    model.load_state_dict(state, strict=True)


def load_torchvision_state_dict(name: str, path: str | Path, num_classes: int | None = None) -> nn.Module:
    """Build ``name`` (one of TORCHVISION_NAMES) and load torchvision's weights from ``path``.

    ``num_classes`` defaults to the class count the weights were trained with (21 for COCO/VOC).
    """
    if name not in TORCHVISION_NAMES:
        raise ModelError(f"{name!r} has no torchvision weights layout; expected one of {', '.join(TORCHVISION_NAMES)}")
    state = {k: v for k, v in read_state_dict(path).items() if not k.startswith("aux_classifier.")}
    head = state.get("classifier.4.weight")
    if head is None:
        raise CheckpointError(f"{path} has no classifier.4.weight: not a torchvision {name} state_dict")
    found_classes = int(head.shape[0])
    if num_classes is not None and num_classes != found_classes:
        raise CheckpointError(
            f"{path} has a {found_classes}-class head but --num-classes {num_classes} was given; "
            f"drop --num-classes or fine-tune the head"
        )
    model = build_model(ModelConfig(name=name, num_classes=found_classes))
    load_state_dict_strict(model, state, str(path))
    return model.eval()
