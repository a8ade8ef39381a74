"""Rendering class maps for people: colour masks, blended overlays and a legend panel.

    colors = colorize(labels, palette)              # (H, W) class indices -> (H, W, 3) uint8 RGB
    view = overlay(frame, labels, classes, palette) # blended frame | legend panel, (H, W + legend width, 3)

Everything is RGB uint8 and pure numpy + Pillow (no OpenCV), so image outputs need no video stack.
The legend panel is rendered once per (height, classes, palette) and cached: video frames only pay
for a concatenation.
"""
from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from edgeseg.errors import EdgesegError

LEGEND_BACKGROUND = (32, 32, 32)
LEGEND_TEXT = (240, 240, 240)
LEGEND_PAD = 4  # pixels around and between entries
BLEND_PIXELS = 1 << 20  # pixels blended at a time (the same bytes as all at once, in bounded memory)


def _lut(palette: Sequence[Sequence[int]], size: int) -> np.ndarray:
    """(size, 3) uint8 colour table: the palette, then black for indices it does not cover."""
    lut = np.zeros((max(size, len(palette)), 3), np.uint8)
    if len(palette):
        lut[: len(palette)] = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    return lut


def colorize(labels: np.ndarray, palette: Sequence[Sequence[int]]) -> np.ndarray:
    """(H, W) integer class map -> (H, W, 3) uint8 RGB; class c gets ``palette[c]``, unknown classes black."""
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise EdgesegError(f"expected an (H, W) integer class map, got {labels.dtype} {labels.shape}; "
                           "pass the labels a Segmenter returns")
    size = 256 if labels.dtype == np.uint8 else int(labels.max(initial=0)) + 1
    return _lut(palette, size)[labels]


def blend(frame: np.ndarray, colors: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``(1 - alpha) * frame + alpha * colors`` in uint8 (both (H, W, 3) uint8, same size)."""
    if not 0.0 <= alpha <= 1.0:
        raise EdgesegError(f"alpha must be between 0 and 1, got {alpha}; pass e.g. 0.5")
    if frame.shape != colors.shape:
        raise EdgesegError(f"frame {frame.shape} and colour mask {colors.shape} differ in size; "
                           "colorize the labels predicted for this frame")
    a = np.float32(alpha)
    out = np.empty_like(frame)
    step = max(1, BLEND_PIXELS // max(1, frame.shape[1]))  # rows at a time: the float copies stay small
    for top in range(0, frame.shape[0], step):
        rows = slice(top, top + step)
        mixed = frame[rows].astype(np.float32) * (1 - a) + colors[rows].astype(np.float32) * a
        out[rows] = np.clip(mixed + 0.5, 0, 255).astype(np.uint8)
    return out


@lru_cache(maxsize=8)
def _legend_cached(height: int, classes: tuple[str, ...], palette: tuple[tuple[int, int, int], ...]) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    boxes = [probe.textbbox((0, 0), name or " ", font=font) for name in classes]
    text_h = max(b[3] - min(b[1], 0) for b in boxes)
    text_w = max(b[2] for b in boxes)
    row = text_h + LEGEND_PAD
    swatch = text_h
    rows = max(1, (height - LEGEND_PAD) // row)
    columns = -(-len(classes) // rows)
    col_w = swatch + LEGEND_PAD + text_w + LEGEND_PAD
    panel = Image.new("RGB", (LEGEND_PAD + columns * col_w, height), LEGEND_BACKGROUND)
    draw = ImageDraw.Draw(panel)
    for i, (name, color) in enumerate(zip(classes, palette)):
        x = LEGEND_PAD + (i // rows) * col_w
        y = LEGEND_PAD + (i % rows) * row
        draw.rectangle((x, y, x + swatch - 1, y + swatch - 1), fill=tuple(color), outline=LEGEND_TEXT)
        draw.text((x + swatch + LEGEND_PAD, y), name, fill=LEGEND_TEXT, font=font)
    out = np.asarray(panel)
    out.setflags(write=False)  # shared by every frame through the cache
    return out


def legend(height: int, classes: Sequence[str], palette: Sequence[Sequence[int]]) -> np.ndarray:
    """A (height, W, 3) uint8 panel listing every class with its colour swatch, in columns when the
    classes do not fit one column. Read-only (cached)."""
    if len(palette) < len(classes):
        raise EdgesegError(f"the palette has {len(palette)} colours for {len(classes)} classes; "
                           "rebuild the bundle with one colour per class")
    return _legend_cached(int(height), tuple(classes), tuple(tuple(int(v) for v in c) for c in palette[: len(classes)]))


def overlay(frame: np.ndarray, labels: np.ndarray, classes: Sequence[str], palette: Sequence[Sequence[int]],
            alpha: float = 0.5) -> np.ndarray:
    """The frame blended with its colour mask, the legend panel to its right: (H, W + legend width, 3) uint8."""
    if frame.shape[:2] != labels.shape:
        raise EdgesegError(f"labels {labels.shape} are not at the frame's size {frame.shape[:2]}; "
                           "pass the labels predicted for this frame")
    mixed = blend(frame, colorize(labels, palette), alpha)
    return np.concatenate([mixed, legend(frame.shape[0], classes, palette)], axis=1)
