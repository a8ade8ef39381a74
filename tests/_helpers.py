"""Test helpers shared by several test files."""
from __future__ import annotations

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
