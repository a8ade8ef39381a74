"""Test helpers shared by several test files."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Trained-looking BatchNorm statistics and affine parameters (identity statistics would hide
    folding and weight-mapping mistakes). Returns the model in eval mode."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.2)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.2)
    return model.eval()


def block_network(monkeypatch) -> None:
    """Make every connection attempt (and name lookup) in this test raise: nothing can reach the network."""
    import socket

    def blocked(*args, **kwargs):
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket.socket, "connect", blocked)
    monkeypatch.setattr(socket, "getaddrinfo", blocked)


def write_folder_dataset(root, classes: list[str], n: int = 8, size: tuple[int, int] = (48, 64),
                         fill: int | None = None):
    """A ``folder:`` dataset: images/ (random, or all ``fill``), masks/ with labels 0..len(classes)-1, classes.txt."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        image = rng.integers(0, 255, (*size, 3)) if fill is None else np.full((*size, 3), fill)
        Image.fromarray(image.astype(np.uint8)).save(root / "images" / f"{i}.png")
        Image.fromarray(rng.integers(0, len(classes), size).astype(np.uint8)).save(root / "masks" / f"{i}.png")
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    return root


def export_small(model: nn.Module, path: Path, size: tuple[int, int], preprocessing) -> Path:
    """A small model as edgeseg export writes it (opset 17, constants folded, preprocessing metadata),
    without the parity machinery."""
    import onnx
    import onnxslim

    from edgeseg.export.metadata import PREPROCESSING_KEY

    torch.onnx.export(model.eval(), torch.zeros(1, 3, *size), str(path), input_names=["input"],
                      output_names=["logits"], opset_version=17, dynamo=False)
    m = onnxslim.slim(onnx.load(str(path)))
    m.metadata_props.add(key=PREPROCESSING_KEY, value=json.dumps(preprocessing.to_dict()))
    onnx.save(m, str(path))
    return path
