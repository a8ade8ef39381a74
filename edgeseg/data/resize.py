"""The image resize definitions a Preprocessing can name (its ``resize`` field), and the mask resize.

``"bilinear"`` (the default for new checkpoints, training included) is plain bilinear with half-pixel
centres and no antialiasing, the filter every deployment consumer reproduces (DeepStream nvinfer
``scaling-filter=1``, OpenCV ``INTER_LINEAR``, TensorRT-side preprocessing, edgeseg's native runtime):

    src = (dst + 0.5) * in / out - 0.5, clamped to [0, in - 1]; the two neighbours of src blended
    linearly per axis; computed in float32 on the uint8 values exactly as
    torch.nn.functional.interpolate(mode="bilinear", align_corners=False, antialias=False) does,
    then rounded half up (floor(v + 0.5)) and stored as uint8.

``"pil_bilinear"`` is PIL's BILINEAR, which antialiases when downscaling (its kernel widens with the
scale factor): what edgeseg used before the field existed, so a preprocessing dict without the
field means "pil_bilinear" and old checkpoints and bundles keep the resize they were trained with.

Masks are always resized nearest-neighbour (PIL NEAREST).
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from edgeseg.errors import EdgesegError

RESIZE_METHODS = ("bilinear", "pil_bilinear")
DEFAULT_RESIZE = "bilinear"  # new checkpoints
LEGACY_RESIZE = "pil_bilinear"  # a preprocessing dict without "resize"
PLANE_PIXELS = 1 << 22  # above this (input or output), "bilinear" runs one channel at a time: same bytes, 1/3 the floats


def check_resize_method(method: str) -> str:
    if method not in RESIZE_METHODS:
        raise EdgesegError(f"resize must be one of {', '.join(RESIZE_METHODS)}, got {method!r}; fix the "
                           "preprocessing metadata (bilinear for new models)")
    return method


def bilinear(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 -> (h, w, 3) uint8 by the "bilinear" definition above."""
    import torch

    h, w = int(size[0]), int(size[1])
    if max(image.shape[0] * image.shape[1], h * w) > PLANE_PIXELS:  # big frames: one channel at a time
        out = np.empty((h, w, 3), np.uint8)
        for c in range(3):
            out[:, :, c] = _interpolate(torch.from_numpy(np.ascontiguousarray(image[:, :, c]))[None, None], h, w)[0, 0]
        return out
    if not image.flags.writeable or not image.flags.c_contiguous:  # torch wants its own writable memory
        image = np.ascontiguousarray(image).copy() if not image.flags.writeable else np.ascontiguousarray(image)
    # HWC memory seen as NCHW: torch picks its channels-last kernel, no copy of the frame
    out = _interpolate(torch.from_numpy(image).permute(2, 0, 1)[None], h, w)
    return np.ascontiguousarray(out[0].permute(1, 2, 0).numpy())


def _interpolate(t, h: int, w: int):
    """(N, C, H, W) uint8 tensor -> (N, C, h, w) uint8 tensor: float32 bilinear, half-pixel, rounded half up.
    Each channel's values do not depend on the others (so a channel at a time gives the same bytes)."""
    import torch
    import torch.nn.functional as F

    out = F.interpolate(t.float(), size=(h, w), mode="bilinear", align_corners=False, antialias=False)
    return torch.floor(out.add_(0.5)).clamp_(0, 255).to(torch.uint8)


def resize_image(image: np.ndarray, size: tuple[int, int], method: str = DEFAULT_RESIZE) -> np.ndarray:
    """Resize an (H, W, 3) uint8 frame to ``size`` = (h, w) with ``method`` (unchanged at that size)."""
    if tuple(image.shape[:2]) == tuple(size):
        return image
    if check_resize_method(method) == "bilinear":
        return bilinear(image, size)
    return np.asarray(Image.fromarray(image).resize((int(size[1]), int(size[0])), Image.BILINEAR))


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an (H, W) label mask to ``size`` = (h, w)."""
    if tuple(mask.shape[:2]) == tuple(size):
        return mask
    return np.asarray(Image.fromarray(mask).resize((int(size[1]), int(size[0])), Image.NEAREST))
