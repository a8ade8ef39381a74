"""Logits -> class maps at the label / frame size: the one post-processing every path shares."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

CLASS_AT_A_TIME = 1 << 24  # score values (N*C*H*W) above which classes are resized one at a time: same labels,
#                            about 12 bytes per pixel instead of 4 per class and pixel (+ 8 for numpy's argmax)


def resize_logits(logits: Any, size: tuple[int, int]) -> np.ndarray:
    """(N, C, h, w) logits (array or tensor) -> float32 numpy (N, C, H, W), bilinear, half-pixel centres."""
    t = torch.as_tensor(np.asarray(logits) if not isinstance(logits, torch.Tensor) else logits).float()
    if tuple(t.shape[-2:]) != tuple(size):
        t = F.interpolate(t, size=tuple(size), mode="bilinear", align_corners=False)
    return t.cpu().numpy()


def labels_from_logits(logits: Any, size: tuple[int, int]) -> np.ndarray:
    """(N, C, h, w) logits -> (N, H, W) class indices (uint8 up to 256 classes, else int32).

    numpy's argmax over the class axis: torch's is ~15x slower on CPU for this layout. Large outputs take the
    classes one at a time (a running maximum, the first maximum winning as argmax's does, NaN included):
    bilinear resizing treats each channel on its own, so the labels are the same."""
    t = torch.as_tensor(np.asarray(logits) if not isinstance(logits, torch.Tensor) else logits)
    n, c = t.shape[:2]
    dtype = np.uint8 if c <= 256 else np.int32
    if n * c * int(size[0]) * int(size[1]) <= CLASS_AT_A_TIME:
        return resize_logits(t, size).argmax(1).astype(dtype)
    best = resize_logits(t[:, :1], size)[:, 0]
    labels = np.zeros(best.shape, dtype)
    for k in range(1, c):
        scores = resize_logits(t[:, k: k + 1], size)[:, 0]
        better = scores > best
        better |= np.isnan(scores) & ~np.isnan(best)  # argmax takes the first NaN as the maximum
        labels[better] = k
        np.maximum(best, scores, out=best)
    return labels
