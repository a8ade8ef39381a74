"""The one preprocessing definition shared by training, evaluation, calibration and deployment.

Contract: an RGB uint8 frame (H, W, 3) becomes a float32 tensor (3, H', W') by
  1. resizing to ``size`` (H', W') by the ``resize`` definition when ``size`` is set (edgeseg.data.resize:
     "bilinear", plain half-pixel bilinear, the default for new models; "pil_bilinear", PIL's
     antialiasing BILINEAR, what a dict without the field means, so old checkpoints keep theirs),
  2. reordering channels to ``channel_order`` (the order the network was trained on),
  3. ``(pixel * scale - mean) / std`` per channel, mean/std listed in ``channel_order``.
Masks follow step 1 with nearest-neighbour resizing. Every runner reads this from the
checkpoint / ONNX metadata / bundle manifest, never from its own defaults.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import edgeseg.data.resize as _resize
from edgeseg.errors import EdgesegError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    scale: float = 1.0 / 255.0
    channel_order: str = "RGB"
    size: tuple[int, int] | None = None  # (H, W) network input; None keeps the frame size
    resize: str = _resize.DEFAULT_RESIZE  # see edgeseg.data.resize

    def __post_init__(self) -> None:
        if self.channel_order not in ("RGB", "BGR"):
            raise EdgesegError(
                f"channel_order must be 'RGB' or 'BGR', got {self.channel_order!r}; fix the preprocessing metadata"
            )
        if len(self.mean) != 3 or len(self.std) != 3 or any(s <= 0 for s in self.std):
            raise EdgesegError(
                f"mean and std need 3 values with std > 0, got mean={self.mean} std={self.std}; pass three positive stds"
            )
        _resize.check_resize_method(self.resize)

    def resize_image(self, image: np.ndarray) -> np.ndarray:
        """Resize an (H, W, 3) uint8 RGB frame to ``size`` by ``resize``; unchanged when size is None."""
        return image if self.size is None else _resize.resize_image(image, self.size, self.resize)

    def resize_mask(self, mask: np.ndarray) -> np.ndarray:
        """Nearest-neighbour resize of an (H, W) label mask to ``size``."""
        return mask if self.size is None else _resize.resize_mask(mask, self.size)

    def normalize(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 RGB -> (3, H, W) float32 network input, without resizing."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise EdgesegError(
                f"expected an HxWx3 uint8 RGB image, got shape {image.shape} dtype {image.dtype}; "
                "convert the frame to 8-bit RGB first"
            )
        if self.channel_order == "BGR":
            image = image[:, :, ::-1]
        x = image.astype(np.float32) * np.float32(self.scale)
        x -= np.asarray(self.mean, dtype=np.float32)
        x /= np.asarray(self.std, dtype=np.float32)
        return np.ascontiguousarray(x.transpose(2, 0, 1))

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Resize then normalize: the full frame -> network input path."""
        return self.normalize(self.resize_image(image))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        d["size"] = list(self.size) if self.size is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Preprocessing":
        try:
            size = d.get("size")
            return cls(
                mean=tuple(float(v) for v in d["mean"]),
                std=tuple(float(v) for v in d["std"]),
                scale=float(d.get("scale", 1.0 / 255.0)),
                channel_order=str(d.get("channel_order", "RGB")),
                size=(int(size[0]), int(size[1])) if size else None,
                resize=str(d.get("resize", _resize.LEGACY_RESIZE)),
            )
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise EdgesegError(
                f"preprocessing needs mean, std (3 values each), scale, channel_order, size, resize; got {d!r} ({e}); "
                "re-export the model or pass --mean/--std"
            ) from None
