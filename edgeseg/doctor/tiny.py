"""The doctor's tiny segmentation model and its synthetic images.

``TinySeg`` has every layer kind edgeseg's models give TensorRT: strided Conv+BN+ReLU, MaxPool, a residual Add,
a transposed convolution (U-Net / FCN upsampling), an image-pooling branch upsampled with Resize (DeepLab), a
Concat, a head and a final Resize. It is trained for a few Adam steps so its class map has several classes with
real margins (a random net's map is one class everywhere, which any broken path would still "agree" with),
and exported with a dynamic batch and size, so every engine is built with a dynamic-shape profile and run at
two sizes: ``SIZES[0]`` with batch 1 and ``SIZES[1]`` with batch 2.
"""
from __future__ import annotations

from typing import Any

import numpy as np

SIZES = ((64, 96), (96, 144))  # (H, W): both divisible by 8 (the model's stride) and by the 4 x 6 colour grid
SIZE = SIZES[0]
BATCHES = (1, 2)  # the batch each size runs with
CLASSES = 4
TRAIN_STEPS = 60
OPSET = 17


def profile_bounds() -> dict[str, list[int]]:
    """The engines' optimization profile: min = opt = batch 1 at the small size, max = batch 2 at the large one."""
    (h0, w0), (h1, w1) = SIZES
    return {"min": [1, 3, h0, w0], "opt": [1, 3, h0, w0], "max": [max(BATCHES), 3, h1, w1]}


def tiny_model(steps: int = TRAIN_STEPS) -> Any:
    """``TinySeg``, trained for ``steps`` Adam steps (seed 0, deterministic) on ``synthetic_batch``."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    def block(cin: int, cout: int, stride: int = 1, k: int = 3) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

    class TinySeg(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem, self.pool = block(3, 16, 2), nn.MaxPool2d(2)  # 1/2, 1/4
            self.body, self.res = block(16, 32), block(32, 32)
            self.down = block(32, 32, 2)  # 1/8
            self.up = nn.Sequential(nn.ConvTranspose2d(32, 16, 2, 2, bias=False), nn.BatchNorm2d(16), nn.ReLU())
            self.context = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(32, 16, 1), nn.ReLU())
            self.proj, self.fuse = block(32, 16, k=1), block(48, 16)
            self.head = nn.Conv2d(16, CLASSES, 1)

        def forward(self, x):
            f = self.body(self.pool(self.stem(x)))
            f = f + self.res(f)  # residual Add
            d = self.down(f)
            context = F.interpolate(self.context(d), size=f.shape[2:], mode="bilinear", align_corners=False)
            y = self.head(self.fuse(torch.cat([self.proj(f), self.up(d), context], 1)))
            return F.interpolate(y, size=x.shape[2:], mode="bilinear", align_corners=False)

    torch.manual_seed(0)
    with torch.random.fork_rng():
        model = TinySeg()
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # deterministic and quick: the model is tiny
        try:
            for step in range(steps):
                x, y = synthetic_batch(8, seed=1000 + step)
                loss = F.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y))
                opt.zero_grad()
                loss.backward()
                opt.step()
        finally:
            torch.set_num_threads(threads)
    return model.eval()


def export_tiny(model: Any, path: Any) -> None:
    """ONNX (opset ``OPSET``, TorchScript exporter) with a dynamic batch, height and width."""
    import torch

    axes = {0: "N", 2: "H", 3: "W"}
    torch.onnx.export(model, torch.from_numpy(synthetic_images(1, seed=0)), str(path), dynamo=False,
                      opset_version=OPSET, input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": axes, "logits": axes})


def synthetic_batch(count: int, seed: int, size: tuple[int, int] = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """(images (count, 3, H, W) float32 normalised, labels (count, H, W) int64): a 4 x 6 grid of random colour
    blocks plus noise; a block's class is its dominant channel, or 3 when it is dark."""
    rng = np.random.default_rng(seed)
    h, w = size
    coarse = rng.uniform(0, 1, (count, 3, 4, 6)).astype(np.float32)
    labels = np.where(coarse.max(1) < 0.5, 3, coarse.argmax(1))
    smooth = coarse.repeat(h // 4, axis=2).repeat(w // 6, axis=3)
    images = np.clip(smooth + rng.normal(0, 0.05, smooth.shape), 0, 1).astype(np.float32)
    return (images - 0.45) / 0.25, labels.repeat(h // 4, axis=1).repeat(w // 6, axis=2).astype(np.int64)


def synthetic_images(count: int, seed: int, size: tuple[int, int] = SIZE) -> np.ndarray:
    """(count, 3, H, W) float32 inputs of ``synthetic_batch``."""
    return synthetic_batch(count, seed, size)[0]


__all__ = ["BATCHES", "CLASSES", "OPSET", "SIZE", "SIZES", "TRAIN_STEPS", "export_tiny", "profile_bounds",
           "synthetic_batch", "synthetic_images", "tiny_model"]
