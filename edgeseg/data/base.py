"""Segmentation datasets as plain Python sequences of ``(image, mask)`` numpy pairs.

Contract for every dataset: ``ds[i]`` returns an RGB uint8 image (H, W, 3) and a uint8 mask
(H, W) whose values are class indices ``0..num_classes-1`` or ``ignore_index`` (255) for void.
Files are checked when a sample is loaded: unreadable images, mask/image size mismatches and
label values outside the class range raise :class:`DatasetError` naming the file.
No torch here: the torch wrapper lives in ``edgeseg.data.torch_dataset``.
"""
from __future__ import annotations

import re
import zlib
from pathlib import Path
from typing import ClassVar

import numpy as np
from PIL import Image

from edgeseg.errors import DatasetError

IGNORE_INDEX = 255
SPLITS: tuple[str, ...] = ("train", "val", "test")
DATASET_KINDS: tuple[str, ...] = ("synthetic", "camvid", "voc", "cityscapes", "folder")
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp")
_MAX_LISTED = 5  # how many offending file names an error message shows


def _names(items: list, limit: int = _MAX_LISTED) -> str:
    shown = ", ".join(str(x) for x in items[:limit])
    return shown + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


def _read_rgb(path: Path) -> np.ndarray:
    """Read an image file as a writable uint8 (H, W, 3) RGB array; DatasetError if unreadable."""
    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DatasetError(
            f"cannot read image {path}: expected a readable PNG/JPEG/BMP file, got {type(e).__name__}: {e}; "
            "re-download or replace the file, or remove it from the dataset"
        ) from None


def _read_label(path: Path) -> np.ndarray:
    """Read a label PNG as raw class indices (palette PNGs are NOT converted to RGB)."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L", "I", "I;16", "I;16L", "I;16B", "1"):
                raise DatasetError(
                    f"label file {path} has image mode {im.mode!r}: expected a single-channel PNG of class "
                    "indices (mode L or P); convert colour masks to index masks"
                )
            arr = np.array(im)
    except DatasetError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DatasetError(
            f"cannot read label file {path}: expected a readable PNG, got {type(e).__name__}: {e}; "
            "re-download or replace the file"
        ) from None
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    return arr


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


def _check_split(split: str, valid: tuple[str, ...], name: str) -> str:
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
        self.split: str = _check_split(split, self.splits, self.name)
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
            raise DatasetError(
                f"mask {self.mask_path(i)} is {mask.shape[1]}x{mask.shape[0]} (WxH) but image {self.image_path(i)} "
                f"is {image.shape[1]}x{image.shape[0]}: expected the same size; fix or regenerate the mask"
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
        return _read_rgb(self._pairs[self._index(i)][0])

    def load_mask(self, i: int) -> np.ndarray:
        """Mask ``i`` alone, validated and with void mapped to 255 (cheaper than ``ds[i]``)."""
        path = self._pairs[self._index(i)][1]
        if path is None:
            raise DatasetError(f"{self.name} sample {i} has no label file; use a split with labels")
        return self._convert_mask(_read_label(path), path)

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


def _require_dir(path: Path, what: str, fix: str) -> None:
    if not path.is_dir():
        raise DatasetError(f"{what} {path} does not exist: expected that folder; {fix}")


class CamVidDataset(SegmentationDataset):
    """CamVid in the SegNet layout: ``{split}/*.png`` + ``{split}annot/*.png`` (+ optional ``{split}.txt``).

    Images and labels are matched by file name. When ``{split}.txt`` exists it fixes the order
    (its absolute ``/SegNet/CamVid/...`` prefixes are ignored); otherwise names are sorted.
    Raw label 11 (Unlabelled) becomes 255.
    """

    name = "camvid"
    void_value = 11
    classes = [
        "Sky", "Building", "Pole", "Road", "Pavement", "Tree",
        "SignSymbol", "Fence", "Car", "Pedestrian", "Bicyclist",
    ]
    palette = [
        (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
        (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
    ]
    label_fix = "CamVid labels must be SegNet index PNGs (0..10, 11 = Unlabelled), not colour labels"

    def __init__(self, root: str | Path, split: str) -> None:
        super().__init__(root, split)
        assert self.root is not None
        fix = "point camvid:PATH at the SegNet CamVid folder holding train/, trainannot/, val/, valannot/"
        img_dir, ann_dir = self.root / split, self.root / f"{split}annot"
        _require_dir(img_dir, f"CamVid {split} image folder", fix)
        _require_dir(ann_dir, f"CamVid {split} label folder", fix)
        listing = self.root / f"{split}.txt"
        if listing.is_file():
            pairs = []
            for line in listing.read_text().splitlines():
                parts = line.split()
                if not parts:
                    continue
                img_name = Path(parts[0]).name
                ann_name = Path(parts[1]).name if len(parts) > 1 else img_name
                pairs.append((img_dir / img_name, ann_dir / ann_name))
            missing = [p.name for p, _ in pairs if not p.is_file()]
            if missing:
                raise DatasetError(
                    f"{len(missing)} image(s) listed in {listing} are missing from {img_dir}: {_names(missing)}; "
                    "restore them or remove those lines"
                )
        else:
            pairs = [(p, ann_dir / p.name) for p in sorted(img_dir.glob("*.png"))]
        if not pairs:
            raise DatasetError(f"no CamVid images in {img_dir}: expected {split}/*.png; {fix}")
        missing = [a.name for _, a in pairs if not a.is_file()]
        if missing:
            raise DatasetError(
                f"{len(missing)} CamVid {split} image(s) have no label in {ann_dir}: expected {_names(missing)}; "
                "restore the label files"
            )
        self._pairs = pairs


class VOCDataset(SegmentationDataset):
    """PASCAL VOC 2012: ``JPEGImages/*.jpg``, palette ``SegmentationClass/*.png``, ``ImageSets/Segmentation/{split}.txt``.

    ``root`` may be the VOC2012 folder itself or a folder containing ``VOC2012`` or
    ``VOCdevkit/VOC2012``. Labels are read as raw palette indices; 255 stays void.
    """

    name = "voc"
    splits = ("train", "val", "trainval")
    classes = [
        "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
        "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
    ]
    palette = color_map(21)
    label_fix = "VOC labels must be palette PNGs from SegmentationClass (not SegmentationObject)"

    def __init__(self, root: str | Path, split: str) -> None:
        super().__init__(root, split)
        assert self.root is not None
        base = self.root
        for candidate in (self.root, self.root / "VOC2012", self.root / "VOCdevkit" / "VOC2012"):
            if (candidate / "JPEGImages").is_dir():
                base = candidate
                break
        fix = "point voc:PATH at the VOC2012 folder holding JPEGImages/, SegmentationClass/, ImageSets/"
        _require_dir(base / "JPEGImages", "VOC image folder", fix)
        _require_dir(base / "SegmentationClass", "VOC label folder", fix)
        listing = base / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not listing.is_file():
            raise DatasetError(f"VOC split list {listing} does not exist: expected that file; {fix}")
        ids = [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]
        if not ids:
            raise DatasetError(f"VOC split list {listing} is empty: expected one image id per line; fix the file")
        self.root = base
        pairs = [(base / "JPEGImages" / f"{s}.jpg", base / "SegmentationClass" / f"{s}.png") for s in ids]
        missing = [str(p.relative_to(base)) for pair in pairs for p in pair if not p.is_file()]
        if missing:
            raise DatasetError(
                f"{len(missing)} file(s) listed by {listing} are missing: {_names(missing)}; "
                "restore them or remove those ids from the list"
            )
        self._pairs = pairs


class CityscapesDataset(SegmentationDataset):
    """Cityscapes fine annotations: ``leftImg8bit/{split}/*/*_leftImg8bit.png`` + ``*_gtFine_labelTrainIds.png``.

    Uses the 19 train ids (255 void); the trainId PNGs come from cityscapesscripts'
    ``createTrainIdLabelImgs``.
    """

    name = "cityscapes"
    classes = [
        "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
        "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
    ]
    palette = [
        (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
        (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
        (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
    ]
    label_fix = "use the *_gtFine_labelTrainIds.png files (train ids 0..18, 255 void), not labelIds"

    def __init__(self, root: str | Path, split: str) -> None:
        super().__init__(root, split)
        assert self.root is not None
        fix = "point cityscapes:PATH at the folder holding leftImg8bit/ and gtFine/"
        img_dir, gt_dir = self.root / "leftImg8bit" / split, self.root / "gtFine" / split
        _require_dir(img_dir, f"Cityscapes {split} image folder", fix)
        _require_dir(gt_dir, f"Cityscapes {split} label folder", fix)
        images = sorted(img_dir.glob("*/*_leftImg8bit.png"))
        if not images:
            raise DatasetError(f"no Cityscapes images in {img_dir}: expected CITY/*_leftImg8bit.png; {fix}")
        pairs = []
        for p in images:
            stem = p.name[: -len("_leftImg8bit.png")]
            pairs.append((p, gt_dir / p.parent.name / f"{stem}_gtFine_labelTrainIds.png"))
        missing = [a.name for _, a in pairs if not a.is_file()]
        if missing:
            raise DatasetError(
                f"{len(missing)} Cityscapes {split} image(s) have no train-id label in {gt_dir}: expected "
                f"{_names(missing)}; run cityscapesscripts' createTrainIdLabelImgs"
            )
        self._pairs = pairs


class FolderDataset(SegmentationDataset):
    """A plain folder: ``images/`` (png/jpg/jpeg/bmp) + ``masks/`` (png) matched by file stem.

    ``root/{split}/images`` is used when it exists, else ``root/images`` for every split.
    Classes come from ``root/classes.txt`` (one name per line) when present, else
    ``max label + 1`` over every mask folder under ``root`` (scanned once, on first use, so
    all splits agree); names are then ``class_0``, ``class_1``, ... Void is 255.
    """

    name = "folder"

    def __init__(self, root: str | Path, split: str) -> None:
        super().__init__(root, split)
        assert self.root is not None
        fix = f"create {self.root}/images/ + masks/ (or {self.root}/{split}/images/ + masks/)"
        _require_dir(self.root, "dataset folder", "pass an existing folder")
        base = self.root / split if (self.root / split / "images").is_dir() else self.root
        img_dir, mask_dir = base / "images", base / "masks"
        _require_dir(img_dir, "image folder", fix)
        _require_dir(mask_dir, "mask folder", fix)
        images: dict[str, Path] = {}
        for p in sorted(img_dir.iterdir()):
            if p.suffix.lower() not in IMAGE_EXTENSIONS or not p.is_file():
                continue
            if p.stem in images:
                raise DatasetError(
                    f"two images share the stem {p.stem!r} in {img_dir} ({images[p.stem].name}, {p.name}): "
                    "expected one image per mask; remove or rename one"
                )
            images[p.stem] = p
        if not images:
            raise DatasetError(f"no images in {img_dir}: expected files ending in {', '.join(IMAGE_EXTENSIONS)}; {fix}")
        pairs = [(images[s], mask_dir / f"{s}.png") for s in sorted(images)]
        missing = [m.name for _, m in pairs if not m.is_file()]
        if missing:
            raise DatasetError(
                f"{len(missing)} image(s) in {img_dir} have no mask: expected {_names(missing)} in {mask_dir}; "
                "add the masks or remove those images"
            )
        self._pairs = pairs
        self._classes: list[str] | None = None
        classes_file = self.root / "classes.txt"
        if classes_file.is_file():
            names = [ln.strip() for ln in classes_file.read_text().splitlines() if ln.strip()]
            if not names:
                raise DatasetError(f"{classes_file} is empty: expected one class name per line; fill it or delete it")
            self._classes = names
            self.label_fix = f"add the missing class to {classes_file} or fix the mask"
        else:
            self.label_fix = "fix the mask"

    @property
    def classes(self) -> list[str]:  # type: ignore[override]
        if self._classes is None:
            self._classes = [f"class_{k}" for k in range(self._scan_num_classes())]
        return self._classes

    @property
    def palette(self) -> list[tuple[int, int, int]]:  # type: ignore[override]
        return color_map(self.num_classes)

    def _scan_num_classes(self) -> int:
        assert self.root is not None
        dirs = [self.root / "masks"] + [self.root / s / "masks" for s in SPLITS]
        top = -1
        for d in dirs:
            if not d.is_dir():
                continue
            for p in sorted(d.glob("*.png")):
                raw = _read_label(p)
                if raw.ndim != 2:
                    raise DatasetError(f"label file {p} has shape {raw.shape}: expected a 2-D index mask; fix it")
                counts = np.bincount(raw.ravel().astype(np.int64).clip(0), minlength=256)
                counts[IGNORE_INDEX] = 0
                nz = np.flatnonzero(counts)
                if nz.size:
                    top = max(top, int(nz[-1]))
        if top < 0:
            raise DatasetError(
                f"every mask under {self.root} is void (255): expected class indices 0..C-1; "
                f"fix the masks or add {self.root / 'classes.txt'}"
            )
        return top + 1


# ---------------------------------------------------------------------------------------
# Synthetic scenes
# ---------------------------------------------------------------------------------------

_SYN_CLASSES = ["background", "sky", "building", "circle", "pole", "stripes", "checker", "triangle"]
_SYN_PALETTE = [
    (0, 0, 0), (70, 130, 180), (170, 60, 40), (250, 200, 40),
    (230, 230, 230), (130, 40, 170), (40, 170, 170), (60, 180, 60),
]
# Mean colours used to paint each class. Pairs share a mean on purpose (building/circle differ
# only by size and shape, stripes/checker only by texture), so colour alone cannot separate them.
_BG_MEAN = (110.0, 110.0, 105.0)
_SKY_MEAN = (120.0, 165.0, 215.0)
_OBJ_MEAN = (175.0, 95.0, 75.0)
_LINE_MEAN = (55.0, 55.0, 60.0)
_TEX_A_MEAN = (205.0, 190.0, 95.0)
_TEX_B_MEAN = (70.0, 75.0, 150.0)
_TRI_MEAN = (85.0, 165.0, 90.0)
_SYN_LENGTHS = {"train": 384, "val": 48, "test": 48}


def _colour(rng: np.random.Generator, mean: tuple[float, float, float], sd: float) -> np.ndarray:
    return np.clip(np.asarray(mean, np.float32) + rng.normal(0.0, sd, 3).astype(np.float32), 0, 255)


def _bbox(h: int, w: int, y0: float, y1: float, x0: float, x1: float) -> tuple[slice, slice] | None:
    ya, yb = max(0, int(np.floor(y0))), min(h, int(np.ceil(y1)) + 1)
    xa, xb = max(0, int(np.floor(x0))), min(w, int(np.ceil(x1)) + 1)
    if ya >= yb or xa >= xb:
        return None
    return slice(ya, yb), slice(xa, xb)


def _paint(img: np.ndarray, lab: np.ndarray, box: tuple[slice, slice], m: np.ndarray, col, cls: int) -> None:
    img[box][m] = col
    lab[box][m] = cls


def render_synthetic(rng: np.random.Generator, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Draw one procedural scene of ``size`` (H, W): uint8 RGB image and uint8 mask (8 classes).

    Background always, sky often, stripe/checker regions often, 1-3 large buildings,
    3-12 small circles, 1-4 triangles and 2-6 thin (1-3 px) lines, with per-object colour noise,
    global gain and pixel noise.
    """
    h, w = size
    yy = np.arange(h, dtype=np.float32)[:, None]
    xx = np.arange(w, dtype=np.float32)[None, :]
    lab = np.zeros((h, w), np.uint8)
    small = min(h, w)

    # 0 background: smooth low-frequency colour field plus grain
    coarse = np.clip(np.asarray(_BG_MEAN) + rng.normal(0, 30, (4, 5, 3)), 0, 255).astype(np.uint8)
    img = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BILINEAR), dtype=np.float32)
    img += rng.normal(0, 10, (h, w, 1)).astype(np.float32)

    # 1 sky: above a wavy horizon, smooth vertical gradient
    if rng.random() < 0.65:
        h0 = rng.uniform(0.15, 0.45) * h
        amp, period, phase = rng.uniform(0, 0.06) * h, rng.uniform(0.5, 2.0) * w, rng.uniform(0, 2 * np.pi)
        horizon = h0 + amp * np.sin(2 * np.pi * xx / period + phase)
        m = yy < horizon
        top = _colour(rng, _SKY_MEAN, 25)
        bottom = np.clip(top + np.float32(rng.uniform(15, 50)), 0, 255)
        t = (yy / max(h0, 1.0)).clip(0, 1)[:, :, None]
        grad = top * (1 - t) + bottom * t
        img[m] = np.broadcast_to(grad, (h, w, 3))[m]
        lab[m] = 1

    # 5 stripes / 6 checker: rotated rectangular regions, two colours each, texture at many scales
    for cls in (5, 6):
        if rng.random() >= 0.6:
            continue
        cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
        a, b = rng.uniform(0.12, 0.3) * w, rng.uniform(0.12, 0.3) * h
        ang = rng.uniform(0, np.pi)
        ca, sa = np.float32(np.cos(ang)), np.float32(np.sin(ang))
        u = (xx - cx) * ca + (yy - cy) * sa
        v = -(xx - cx) * sa + (yy - cy) * ca
        region = (np.abs(u) < a) & (np.abs(v) < b)
        tex_ang = rng.uniform(0, np.pi)
        tc, ts = np.float32(np.cos(tex_ang)), np.float32(np.sin(tex_ang))
        p = xx * tc + yy * ts
        q = -xx * ts + yy * tc
        if cls == 5:
            period = rng.uniform(3, max(4.0, small / 10))
            on = (p / period) % 1.0 < 0.5
        else:
            cell = rng.uniform(2, max(3.0, small / 16))
            on = (np.floor(p / cell) + np.floor(q / cell)) % 2 == 0
        ca_col, cb_col = _colour(rng, _TEX_A_MEAN, 35), _colour(rng, _TEX_B_MEAN, 35)
        if rng.random() < 0.5:
            ca_col, cb_col = cb_col, ca_col
        img[region & on] = ca_col
        img[region & ~on] = cb_col
        lab[region] = cls

    # 2 building: 1-3 large rectangles/ellipses, flat colour (same colour law as circles)
    for _ in range(int(rng.integers(1, 4))):
        ry, rx = rng.uniform(h / 7, h / 3.5), rng.uniform(w / 7, w / 3.5)
        cy, cx = rng.uniform(0.1, 0.9) * h, rng.uniform(0.1, 0.9) * w
        box = _bbox(h, w, cy - ry, cy + ry, cx - rx, cx + rx)
        if box is None:
            continue
        yb, xb = yy[box[0]], xx[:, box[1]]
        if rng.random() < 0.5:
            m = (np.abs(yb - cy) <= ry) & (np.abs(xb - cx) <= rx)
        else:
            m = ((yb - cy) / ry) ** 2 + ((xb - cx) / rx) ** 2 <= 1.0
        _paint(img, lab, box, m, _colour(rng, _OBJ_MEAN, 40), 2)

    # 7 triangle: 1-4 triangles, 6 px to a third of the image
    for _ in range(int(rng.integers(1, 5))):
        s = rng.uniform(6, max(8.0, small / 3))
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        angles = rng.uniform(0, 2 * np.pi) + np.array([0, 2 * np.pi / 3, 4 * np.pi / 3]) + rng.uniform(-0.5, 0.5, 3)
        vy, vx = cy + s * np.sin(angles), cx + s * np.cos(angles)
        box = _bbox(h, w, vy.min(), vy.max(), vx.min(), vx.max())
        if box is None:
            continue
        yb, xb = yy[box[0]], xx[:, box[1]]
        d = [(xb - vx[k]) * (vy[(k + 1) % 3] - vy[k]) - (yb - vy[k]) * (vx[(k + 1) % 3] - vx[k]) for k in range(3)]
        m = ((d[0] >= 0) & (d[1] >= 0) & (d[2] >= 0)) | ((d[0] <= 0) & (d[1] <= 0) & (d[2] <= 0))
        _paint(img, lab, box, m, _colour(rng, _TRI_MEAN, 40), 7)

    # 3 circle: 3-12 small discs (radius 2 px .. ~small/14), same colour law as buildings
    r_max = max(3.0, small / 14)
    for _ in range(int(rng.integers(3, 13))):
        r = rng.uniform(2, r_max)
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        box = _bbox(h, w, cy - r, cy + r, cx - r, cx + r)
        if box is None:
            continue
        m = (yy[box[0]] - cy) ** 2 + (xx[:, box[1]] - cx) ** 2 <= r * r
        _paint(img, lab, box, m, _colour(rng, _OBJ_MEAN, 40), 3)

    # 4 pole/wire: 2-6 thin segments, 1-3 px wide; mostly near-vertical poles, some wires
    for _ in range(int(rng.integers(2, 7))):
        width = float(rng.integers(1, 4))
        if rng.random() < 0.6:
            ang = np.pi / 2 + rng.uniform(-0.15, 0.15)
            length = rng.uniform(0.3, 0.9) * h
        else:
            ang = rng.uniform(0, np.pi)
            length = rng.uniform(0.4, 1.2) * small
        y0, x0 = rng.uniform(0, h), rng.uniform(0, w)
        dy, dx = length * np.sin(ang), length * np.cos(ang)
        half = width / 2
        box = _bbox(h, w, min(y0, y0 + dy) - half, max(y0, y0 + dy) + half,
                    min(x0, x0 + dx) - half, max(x0, x0 + dx) + half)
        if box is None:
            continue
        yb, xb = yy[box[0]] - np.float32(y0), xx[:, box[1]] - np.float32(x0)
        t = ((xb * dx + yb * dy) / (dx * dx + dy * dy)).clip(0, 1)
        m = (xb - t * dx) ** 2 + (yb - t * dy) ** 2 <= half * half + 0.05
        _paint(img, lab, box, m, _colour(rng, _LINE_MEAN, 30), 4)

    img *= np.float32(rng.uniform(0.75, 1.25))
    img += rng.standard_normal((h, w, 3), dtype=np.float32) * np.float32(6.0)
    return np.clip(img, 0, 255).astype(np.uint8), lab


class SyntheticDataset(SegmentationDataset):
    """Built-in procedural scenes (no files), deterministic per (split, index).

    8 classes whose identity needs texture, colour and context together (buildings and circles
    share a colour law and differ by size; stripes and checker share colours and differ by
    texture). Default lengths: train 384, val 48, test 48. Splits draw from disjoint seeds.
    """

    name = "synthetic"
    classes = list(_SYN_CLASSES)
    palette = list(_SYN_PALETTE)

    def __init__(self, split: str, size: tuple[int, int] = (128, 160), length: int | None = None) -> None:
        super().__init__(None, split)
        if len(size) != 2 or any(int(s) != s or s < 16 for s in size):
            raise DatasetError(f"synthetic size must be two integers >= 16 (H, W), got {size!r}; e.g. (128, 160)")
        if length is not None and (int(length) != length or length < 1):
            raise DatasetError(f"synthetic length must be a positive integer, got {length!r}; pass e.g. 64")
        self.size: tuple[int, int] = (int(size[0]), int(size[1]))
        self.length: int = int(length) if length is not None else _SYN_LENGTHS[split]
        self._split_key = zlib.crc32(f"edgeseg-synthetic/{split}".encode())

    def __len__(self) -> int:
        return self.length

    def __repr__(self) -> str:
        return f"SyntheticDataset(split={self.split!r}, size={self.size}, length={self.length})"

    def rng(self, i: int) -> np.random.Generator:
        """The generator that draws sample ``i`` (seeded from a hash of split and index)."""
        return np.random.default_rng([self._split_key, self._index(i)])

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return render_synthetic(self.rng(i), self.size)

    def image_path(self, i: int) -> Path | None:
        self._index(i)
        return None

    def mask_path(self, i: int) -> Path | None:
        self._index(i)
        return None

    def load_image(self, i: int) -> np.ndarray:
        return self[i][0]

    def load_mask(self, i: int) -> np.ndarray:
        return self[i][1]


# ---------------------------------------------------------------------------------------
# Spec parsing
# ---------------------------------------------------------------------------------------

_FILE_DATASETS: dict[str, type[SegmentationDataset]] = {
    "camvid": CamVidDataset,
    "voc": VOCDataset,
    "cityscapes": CityscapesDataset,
    "folder": FolderDataset,
}
_KIND_SPLITS: dict[str, tuple[str, ...]] = {
    "synthetic": SyntheticDataset.splits,
    **{k: c.splits for k, c in _FILE_DATASETS.items()},
}


def open_dataset(spec: str, split: str) -> SegmentationDataset:
    """Open ``spec`` = ``KIND:PATH`` (KIND in DATASET_KINDS) or ``synthetic`` / ``synthetic:HxW``.

    Raises DatasetError for an unknown kind, a missing or non-existent path, a malformed
    synthetic size, or a split the kind does not have.
    """
    kinds = ", ".join(DATASET_KINDS)
    if not isinstance(spec, str) or not spec.strip():
        raise DatasetError(
            f"dataset spec must be KIND:PATH with KIND in {kinds}, got {spec!r}; e.g. camvid:/data/CamVid or synthetic"
        )
    kind, _, arg = spec.strip().partition(":")
    kind, arg = kind.strip().lower(), arg.strip()
    if kind not in DATASET_KINDS:
        raise DatasetError(
            f"unknown dataset kind {kind!r} in {spec!r}: expected one of {kinds}; write KIND:PATH, "
            "e.g. camvid:/data/CamVid or synthetic:96x128"
        )
    valid_splits = _KIND_SPLITS[kind]
    if split not in valid_splits:
        raise DatasetError(
            f"unknown split {split!r} for {kind} dataset: expected one of {', '.join(valid_splits)}; pass a valid split"
        )
    if kind == "synthetic":
        if not arg:
            return SyntheticDataset(split)
        m = re.fullmatch(r"(\d+)\s*[xX]\s*(\d+)", arg)
        if not m:
            raise DatasetError(
                f"synthetic size {arg!r} in {spec!r} is not HxW: expected e.g. synthetic:96x128; fix the spec"
            )
        return SyntheticDataset(split, size=(int(m.group(1)), int(m.group(2))))
    if not arg:
        raise DatasetError(f"dataset spec {spec!r} has no path: expected {kind}:PATH; add the dataset folder")
    path = Path(arg).expanduser()
    if not path.is_dir():
        raise DatasetError(
            f"dataset folder {path} does not exist (from spec {spec!r}): expected an existing folder; fix the path"
        )
    return _FILE_DATASETS[kind](path, split)
