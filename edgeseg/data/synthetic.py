"""The built-in synthetic scenes: deterministic procedural images with 8 classes at many scales,
thin structures and textures; no files needed."""
from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from edgeseg.data.base import SegmentationDataset
from edgeseg.data.images import check_size
from edgeseg.errors import DatasetError

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
        check_size(int(size[0]), int(size[1]), "the synthetic size", DatasetError)
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


