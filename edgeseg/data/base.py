"""Segmentation datasets as plain Python sequences of ``(image, mask)`` numpy pairs.

Contract for every dataset: ``ds[i]`` returns an RGB uint8 image (H, W, 3) and a uint8 mask
(H, W) whose values are class indices ``0..num_classes-1`` or ``ignore_index`` (255) for void.
Files are decoded by ``edgeseg.data.images`` (as a viewer shows them: EXIF orientation applied, 16-bit
images scaled; masks' raw values) and checked when a sample is loaded: unreadable or oversized files,
mask/image size mismatches and label values outside the class range raise :class:`DatasetError` naming the file.
No torch here: the torch wrapper lives in ``edgeseg.data.torch_dataset``.
"""
from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np

from edgeseg.data.images import read_label, read_rgb
from edgeseg.errors import DatasetError

IGNORE_INDEX = 255
SPLITS: tuple[str, ...] = ("train", "val", "test")
DATASET_KINDS: tuple[str, ...] = ("synthetic", "camvid", "voc", "cityscapes", "folder")
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp")
MAX_LISTED = 5  # how many offending file names an error message shows


def short_list(items: list, limit: int = MAX_LISTED) -> str:
    shown = ", ".join(str(x) for x in items[:limit])
    return shown + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


def color_map(n: int) -> list[tuple[int, int, int]]:
    """The PASCAL VOC bit-interleaved colour map: ``n`` distinct RGB colours, index 0 black."""
    out = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out.append((r, g, b))
    return out


def check_split(split: str, valid: tuple[str, ...], name: str) -> str:
    if split not in valid:
        raise DatasetError(
            f"unknown split {split!r} for {name} dataset: expected one of {', '.join(valid)}; pass a valid split"
        )
    return split


class SegmentationDataset:
    """Base class: a sequence of ``(image uint8 HxWx3 RGB, mask uint8 HxW)`` pairs.

    Subclasses fill ``self._pairs`` with (image path, mask path) and set ``classes``,
    ``palette``, ``name``; ``void_value`` is the raw label value meaning void in the files
    (mapped to ``ignore_index``). ``splits`` lists the accepted split names.
    """

    name: ClassVar[str] = "dataset"
    ignore_index: ClassVar[int] = IGNORE_INDEX
    void_value: ClassVar[int] = IGNORE_INDEX
    splits: ClassVar[tuple[str, ...]] = SPLITS
    label_fix: str = "fix the label file or use a dataset definition with more classes"
    classes: list[str]
    palette: list[tuple[int, int, int]]

    def __init__(self, root: str | Path | None, split: str) -> None:
        self.root: Path | None = Path(root).expanduser() if root is not None else None
        self.split: str = check_split(split, self.splits, self.name)
        self._pairs: list[tuple[Path, Path]] = []

    # -- sequence protocol -------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self._pairs)

    def _index(self, i: int) -> int:
        n = len(self)
        j = int(i) + n if int(i) < 0 else int(i)
        if not 0 <= j < n:
            raise IndexError(f"index {i} out of range for {self.name} {self.split} split of {n} samples")
        return j

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Load sample ``i``: image uint8 (H, W, 3) RGB, mask uint8 (H, W) in 0..C-1 or 255."""
        i = self._index(i)
        image, mask = self.load_image(i), self.load_mask(i)
        if image.shape[:2] != mask.shape:
            turned = (" (turned by 90 degrees: an image's EXIF orientation is applied, as viewers do; turn the mask "
                      "the same way)") if image.shape[:2] == mask.shape[::-1] else ""
            raise DatasetError(
                f"mask {self.mask_path(i)} is {mask.shape[1]}x{mask.shape[0]} (WxH) but image {self.image_path(i)} "
                f"is {image.shape[1]}x{image.shape[0]}{turned}: expected the same size; fix or regenerate the mask"
            )
        return image, mask

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root) if self.root else None!r}, split={self.split!r}, "
            f"samples={len(self)}, classes={self.num_classes})"
        )

    # -- files ---------------------------------------------------------------------------
    def image_path(self, i: int) -> Path | None:
        """Path of sample ``i``'s image file (None for generated datasets)."""
        return self._pairs[self._index(i)][0]

    def mask_path(self, i: int) -> Path | None:
        """Path of sample ``i``'s label file (None for generated datasets)."""
        return self._pairs[self._index(i)][1]

    def load_image(self, i: int) -> np.ndarray:
        """Image ``i`` alone: uint8 (H, W, 3) RGB."""
        return read_rgb(self._pairs[self._index(i)][0])

    def load_mask(self, i: int) -> np.ndarray:
        """Mask ``i`` alone, validated and with void mapped to 255 (cheaper than ``ds[i]``)."""
        path = self._pairs[self._index(i)][1]
        if path is None:
            raise DatasetError(f"{self.name} sample {i} has no label file; use a split with labels")
        return self._convert_mask(read_label(path), path)

    def _convert_mask(self, raw: np.ndarray, path: Path | str) -> np.ndarray:
        """Validate raw label values and return a uint8 mask with void -> ignore_index."""
        if raw.ndim != 2:
            raise DatasetError(
                f"label file {path} has shape {raw.shape}: expected a 2-D index mask; save it as a single-channel PNG"
            )
        c, void = self.num_classes, self.void_value
        if raw.size == 0 or (int(raw.max()) < c and int(raw.min()) >= 0):
            return raw.astype(np.uint8, copy=False)
        bad = ((raw < 0) | (raw >= c)) & (raw != void)
        if bad.any():
            value = int(raw[bad].min())
            raise DatasetError(
                f"label value {value} in {path} is out of range: expected 0..{c - 1} or {void} (void) for the "
                f"{c} {self.name} classes; {self.label_fix}"
            )
        out = raw.astype(np.uint8, copy=True)
        if void != IGNORE_INDEX:
            out[raw == void] = IGNORE_INDEX
        return out


def require_dir(path: Path, what: str, fix: str) -> None:
    if not path.is_dir():
        raise DatasetError(f"{what} {path} does not exist: expected that folder; {fix}")


