"""Image files -> arrays as a viewer shows them, in bounded memory: the one decoder of dataset images and
masks, calibration images and ``edgeseg infer`` inputs, and the one check of frames handed over as arrays
(``check_frame``: ``edgeseg.load``'s Segmenter, video frames).

Frames (``read_rgb``, ``decode_rgb``) come back as writable uint8 (H, W, 3) RGB:
- the file's EXIF orientation is applied, as image viewers, browsers and OpenCV's ``imread`` do;
- 16-bit (and 32-bit integer) grey images are scaled to 8 bits by their top byte (``v >> 8``, what Pillow
  does for 16-bit RGB PNGs), never clipped at 255; palette, grey, CMYK and alpha images are converted to
  RGB (alpha dropped); floating-point images are refused.
Label masks (``read_label``) keep their raw values, never scaled (a 16-bit mask's values go to the
dataset's class-range check as they are); the mask file's own EXIF orientation is applied, like an image's.

Memory: files and frames above ``MAX_PIXELS`` (64 megapixels, e.g. 8000x8000) are refused in one line
before they are decoded; below it a frame costs Pillow's decoded image (4 bytes per pixel) plus the array
(3), converted in strips of ``STRIP_PIXELS`` so no third full-size copy is made.
"""
from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from edgeseg.errors import DatasetError, EdgesegError
from edgeseg.io_utils import require_file

MAX_PIXELS = 64_000_000  # frames, images, masks, --input-size, synthetic:HxW
STRIP_PIXELS = 1 << 20  # pixels converted to numpy at a time
LABEL_MODES = ("P", "L", "I", "I;16", "I;16L", "I;16B", "1")
_WIDE_GREY = ("I", "I;16", "I;16L", "I;16B")  # 16/32-bit integer grey: scaled to 8 bits
_EXIF_ORIENTATION = 0x0112
_ORIENT: dict[int, Callable[[np.ndarray], np.ndarray]] = {  # EXIF orientation -> the viewer's transform
    2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1], 5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1), 7: lambda a: np.rot90(a, 2).swapaxes(0, 1), 8: lambda a: np.rot90(a, 1),
}
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


def check_size(height: int, width: int, what: str, error: type[EdgesegError] = EdgesegError) -> None:
    """A one-line ``error`` unless an image of ``height`` x ``width`` fits the frame limit (and is not empty)."""
    if height < 1 or width < 1:
        raise error(f"{what} is {height}x{width} pixels (HxW): expected at least 1x1; pass a non-empty image")
    if height * width > MAX_PIXELS:
        raise error(f"{what} is {height}x{width} pixels (HxW), {height * width / 1e6:.0f} megapixels: expected at "
                    f"most {MAX_PIXELS // 1_000_000} megapixels (e.g. 8000x8000), edgeseg's frame limit; "
                    "downscale it first")


def check_frame(frame: object, color: str = "RGB", what: str = "frame") -> np.ndarray:
    """``frame`` when it is a non-empty HxWx3 uint8 array within the frame limit; a one-line error otherwise."""
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        got = f"{frame.dtype} {frame.shape}" if isinstance(frame, np.ndarray) else type(frame).__name__
        raise EdgesegError(f"expected an HxWx3 uint8 {color} {what}, got {got}; convert it first "
                           "(e.g. cv2.cvtColor for grey or BGRA frames, .astype(np.uint8))")
    check_size(frame.shape[0], frame.shape[1], f"the {what}")
    return frame


def read_rgb(path: str | Path) -> np.ndarray:
    """An image file as a viewer shows it: writable uint8 (H, W, 3) RGB (see the module docstring)."""
    path = require_file(path, "image", "pass an image file", DatasetError)
    return _decode(path, str(path), label=False)


def decode_rgb(data: bytes, name: str | Path) -> np.ndarray:
    """``read_rgb`` for bytes already read (``name`` is what errors call them)."""
    return _decode(data, str(name), label=False)


def read_label(path: str | Path) -> np.ndarray:
    """A label PNG's raw class indices, (H, W), never scaled (palette PNGs are NOT converted to RGB)."""
    path = require_file(path, "label file", "pass a label PNG", DatasetError)
    return _decode(path, str(path), label=True)


def _decode(source: Path | bytes, name: str, label: bool) -> np.ndarray:
    what = "label file" if label else "image"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # check_size says it in one line
            image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
        with image:
            check_size(image.height, image.width, f"{what} {name}", DatasetError)
            _check_mode(image, name, label)
            image.load()
            array = _strips(image, _label_strip if label else _rgb_strip)
            orient = _ORIENT.get(image.getexif().get(_EXIF_ORIENTATION, 1))
    except EdgesegError:
        raise
    except Image.DecompressionBombError as e:
        raise DatasetError(f"{what} {name} is too large ({e}); expected at most {MAX_PIXELS // 1_000_000} "
                           "megapixels, edgeseg's frame limit; downscale it first") from None
    except _DECODE_ERRORS as e:
        raise DatasetError(f"cannot read {what} {name}: expected a readable PNG/JPEG/BMP file, got "
                           f"{type(e).__name__}: {e}; re-download or replace the file, or remove it") from None
    return np.ascontiguousarray(orient(array)) if orient else array


def _check_mode(image: Image.Image, name: str, label: bool) -> None:
    if label and image.mode not in LABEL_MODES:
        raise DatasetError(f"label file {name} has image mode {image.mode!r}: expected a single-channel PNG of class "
                           "indices (mode L or P); convert colour masks to index masks")
    if not label and image.mode.startswith("F"):
        raise DatasetError(f"image {name} holds floating-point pixels (mode {image.mode}): expected an 8- or 16-bit "
                           "image; convert it to 8-bit RGB")


def _strips(image: Image.Image, strip: Callable[[Image.Image], np.ndarray]) -> np.ndarray:
    """``strip`` applied to horizontal bands of a loaded image, written into one array (bounded extra memory)."""
    width, height = image.size
    rows = max(1, STRIP_PIXELS // width)
    first = strip(image.crop((0, 0, width, min(rows, height))))
    out = np.empty((height, *first.shape[1:]), first.dtype)
    out[: first.shape[0]] = first
    for top in range(rows, height, rows):
        out[top: top + rows] = strip(image.crop((0, top, width, min(top + rows, height))))
    return out


def _rgb_strip(band: Image.Image) -> np.ndarray:
    if band.mode in _WIDE_GREY:
        grey = (np.asarray(band).astype(np.int64).clip(0, 65535) >> 8).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    return np.asarray(band if band.mode == "RGB" else band.convert("RGB"))


def _label_strip(band: Image.Image) -> np.ndarray:
    raw = np.asarray(band)
    return raw.astype(np.uint8) if raw.dtype == bool else raw.astype(raw.dtype.newbyteorder("="), copy=False)
