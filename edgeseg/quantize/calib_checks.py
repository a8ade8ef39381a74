"""Checks of a calibration set: warnings about images that would silently ruin INT8 (too few, classes
missing, preprocessing that does not fit them, sizes unlike the model input)."""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from edgeseg.data.preprocess import Preprocessing

MIN_IMAGES = 32
CHECKED_IMAGES = 16  # how many calibration images the input checks look at


def calibration_warnings(images: Iterable[np.ndarray], preprocessing: Preprocessing, count: int,
                         num_classes: int | None, classes_covered: list[int],
                         class_names: list[str] | None = None) -> list[str]:
    """Warnings (empty when all is well) about a set of ``count`` images covering ``classes_covered``,
    from its first images (uint8 RGB frames)."""
    warnings = _count_warnings(count) + _class_warnings(num_classes, classes_covered, class_names)
    moments, sizes = _input_statistics(images, preprocessing)
    if moments is not None:
        warnings += _normalisation_warnings(*moments, preprocessing)
    return warnings + _size_warnings(sizes, preprocessing)


def _count_warnings(count: int) -> list[str]:
    if count < MIN_IMAGES:
        return [f"only {count} calibration images: ranges are unstable below {MIN_IMAGES} "
                "(TensorRT suggests about 500); pass --count with more images"]
    return []


def _class_warnings(num_classes: int | None, covered: list[int], names: list[str] | None) -> list[str]:
    if num_classes is None or not covered:
        return []
    missing = sorted(set(range(num_classes)) - set(covered))
    if not missing:
        return []
    listed = [names[c] if names else str(c) for c in missing]
    return [f"classes missing from the calibration set: {', '.join(listed)}; their activations "
            "are not calibrated: use a split that contains them or a larger --count"]


def _input_statistics(images: Iterable[np.ndarray], preprocessing: Preprocessing
                      ) -> tuple[tuple[np.ndarray, np.ndarray] | None, set[tuple[int, int]]]:
    """((mean, std) per channel of the normalised inputs, or None without images; the image sizes), in
    one pass that holds one image at a time."""
    sums, sq, n, sizes = np.zeros(3), np.zeros(3), 0, set()
    for image in images:
        sizes.add(tuple(image.shape[:2]))
        x = preprocessing(image).reshape(3, -1).astype(np.float64)
        sums += x.sum(1)
        sq += (x ** 2).sum(1)
        n += x.shape[1]
    if not n:
        return None, sizes
    mean = sums / n
    return (mean, np.sqrt(np.maximum(sq / n - mean ** 2, 0))), sizes


def _normalisation_warnings(mean: np.ndarray, std: np.ndarray, preprocessing: Preprocessing) -> list[str]:
    """A warning when the normalised inputs are far from mean 0, std 1 (0-255 vs 0-1 preprocessing)."""
    if np.abs(mean).max() > 3 or std.max() > 10 or std.min() < 0.05:
        return [f"normalised calibration inputs have mean {np.round(mean, 2).tolist()} and std "
                f"{np.round(std, 2).tolist()} (expected about 0 and 1): the model's preprocessing "
                f"(scale {preprocessing.scale:g}, mean {list(preprocessing.mean)}, std {list(preprocessing.std)}) "
                "does not match these images (0-255 vs 0-1?); fix the ONNX metadata or --mean/--std/--scale"]
    return []


def _size_warnings(sizes: set[tuple[int, int]], preprocessing: Preprocessing) -> list[str]:
    """A warning when some image is resized with a large factor or another aspect ratio to the model input."""
    if preprocessing.size is None:
        return []
    th, tw = preprocessing.size
    for h, w in sorted(sizes):
        if max(h / th, th / h, w / tw, tw / w) > 2 or abs((h / w) / (th / tw) - 1) > 0.1:
            return [f"calibration images are {h}x{w} but the model input is {th}x{tw}: they are "
                    "resized with a large factor or another aspect ratio, unlike deployment frames; "
                    "calibrate on frames like the camera's"]
    return []
