"""Training-time augmentation on numpy arrays (images resized by the model's resize definition,
edgeseg.data.resize; masks nearest-neighbour).

Contract: ``TrainAugment(crop)(image, mask, rng)`` takes an RGB uint8 image (H, W, 3) and a
uint8 mask (H, W) and returns a new pair of exactly ``crop`` = (h, w). The mask is only
resized with nearest-neighbour, flipped, cropped and padded with 255, so its values stay in
the input's set of values plus 255 (void).
"""
from __future__ import annotations

import numpy as np
from edgeseg.data.resize import DEFAULT_RESIZE, check_resize_method, resize_image, resize_mask
from edgeseg.errors import EdgesegError

PAD_IMAGE = (124, 116, 104)  # ImageNet mean in 0..255: padding normalises to ~0
PAD_MASK = 255


class TrainAugment:
    """Random scale -> pad (grey / 255) -> random crop -> horizontal flip -> colour jitter.

    ``scale`` is the (min, max) resize factor drawn uniformly; ``color_jitter`` = j draws
    brightness, contrast and saturation factors from [1 - j, 1 + j] (0 disables). Pass an
    ``rng`` per call for reproducible, per-sample randomness; without one an internal
    generator seeded with ``seed`` is used. ``resize`` is the image resize definition of the model's
    preprocessing (edgeseg.data.resize), so training sees the frames deployment produces.
    """

    def __init__(
        self,
        crop: tuple[int, int],
        scale: tuple[float, float] = (0.5, 2.0),
        hflip: bool = True,
        color_jitter: float = 0.2,
        seed: int | None = None,
        resize: str = DEFAULT_RESIZE,
    ) -> None:
        if len(crop) != 2 or any(int(c) != c or c < 1 for c in crop):
            raise EdgesegError(f"crop must be two positive integers (H, W), got {crop!r}; e.g. --crop 256x256")
        if len(scale) != 2 or not 0 < scale[0] <= scale[1]:
            raise EdgesegError(f"scale must be (min, max) with 0 < min <= max, got {scale!r}; e.g. (0.5, 2.0)")
        if not 0 <= color_jitter < 1:
            raise EdgesegError(f"color_jitter must be in [0, 1), got {color_jitter!r}; e.g. 0.2")
        self.crop = (int(crop[0]), int(crop[1]))
        self.scale = (float(scale[0]), float(scale[1]))
        self.hflip = bool(hflip)
        self.color_jitter = float(color_jitter)
        self.seed = seed
        self.resize = check_resize_method(resize)
        self._rng = np.random.default_rng(seed)

    def __repr__(self) -> str:
        return (
            f"TrainAugment(crop={self.crop}, scale={self.scale}, hflip={self.hflip}, "
            f"color_jitter={self.color_jitter}, seed={self.seed})"
        )

    def __call__(
        self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Augment one pair; returns (uint8 crop_h x crop_w x 3, uint8 crop_h x crop_w)."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise EdgesegError(
                f"expected an HxWx3 uint8 RGB image, got shape {image.shape} dtype {image.dtype}; convert it first"
            )
        if mask.shape != image.shape[:2]:
            raise EdgesegError(
                f"mask shape {mask.shape} does not match image shape {image.shape[:2]}: expected equal H, W; "
                "fix the dataset"
            )
        rng = self._rng if rng is None else rng
        mask = mask.astype(np.uint8, copy=False)
        ch, cw = self.crop

        # 1. random scale
        s = rng.uniform(*self.scale)
        h, w = mask.shape
        nh, nw = max(1, int(round(h * s))), max(1, int(round(w * s)))
        if (nh, nw) != (h, w):
            image = resize_image(image, (nh, nw), self.resize)
            mask = resize_mask(mask, (nh, nw))

        # 2. pad to at least the crop, at a random offset
        ph, pw = max(ch - nh, 0), max(cw - nw, 0)
        if ph or pw:
            top, left = int(rng.integers(0, ph + 1)), int(rng.integers(0, pw + 1))
            padded_img = np.empty((nh + ph, nw + pw, 3), np.uint8)
            padded_img[:] = PAD_IMAGE
            padded_img[top : top + nh, left : left + nw] = image
            padded_mask = np.full((nh + ph, nw + pw), PAD_MASK, np.uint8)
            padded_mask[top : top + nh, left : left + nw] = mask
            image, mask = padded_img, padded_mask

        # 3. random crop
        y = int(rng.integers(0, mask.shape[0] - ch + 1))
        x = int(rng.integers(0, mask.shape[1] - cw + 1))
        image, mask = image[y : y + ch, x : x + cw], mask[y : y + ch, x : x + cw]

        # 4. horizontal flip
        if self.hflip and rng.random() < 0.5:
            image, mask = image[:, ::-1], mask[:, ::-1]

        # 5. colour jitter (brightness, contrast, saturation)
        if self.color_jitter > 0:
            image = self._jitter(image, rng)
        return np.ascontiguousarray(image), np.ascontiguousarray(mask)

    def _jitter(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        j = self.color_jitter
        b, c, s = rng.uniform(1 - j, 1 + j, 3).astype(np.float32)
        x = image.astype(np.float32) * b
        weights = np.asarray([0.299, 0.587, 0.114], np.float32)
        gray_mean = np.float32((x @ weights).mean())
        x = (x - gray_mean) * c + gray_mean
        gray = (x @ weights)[:, :, None]
        x = gray + (x - gray) * s
        return np.clip(x, 0, 255).astype(np.uint8)
