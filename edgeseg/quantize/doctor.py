"""Calibration doctor: warnings about a calibration set that would silently ruin INT8."""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from edgeseg.data.preprocess import Preprocessing

MIN_IMAGES = 32
DOCTOR_IMAGES = 16  # how many calibration images the doctor looks at


def diagnose(images: Iterable[np.ndarray], preprocessing: Preprocessing, count: int, num_classes: int | None,
             classes_covered: list[int], class_names: list[str] | None = None) -> list[str]:
    """Warnings (empty when all is well) from the first calibration images (uint8 RGB frames)."""
    warnings = []
    if count < MIN_IMAGES:
        warnings.append(f"only {count} calibration images: ranges are unstable below {MIN_IMAGES} "
                        "(TensorRT suggests about 500); pass --count with more images")
    if num_classes is not None and classes_covered:
        missing = sorted(set(range(num_classes)) - set(classes_covered))
        if missing:
            names = [class_names[c] if class_names else str(c) for c in missing]
            warnings.append(f"classes missing from the calibration set: {', '.join(names)}; their activations "
                            "are not calibrated: use a split that contains them or a larger --count")
    sums, sq, n, sizes = np.zeros(3), np.zeros(3), 0, set()
    for image in images:
        sizes.add(tuple(image.shape[:2]))
        x = preprocessing(image).reshape(3, -1).astype(np.float64)
        sums += x.sum(1)
        sq += (x ** 2).sum(1)
        n += x.shape[1]
    if n:
        mean = sums / n
        std = np.sqrt(np.maximum(sq / n - mean ** 2, 0))
        if np.abs(mean).max() > 3 or std.max() > 10 or std.min() < 0.05:
            warnings.append(f"normalised calibration inputs have mean {np.round(mean, 2).tolist()} and std "
                            f"{np.round(std, 2).tolist()} (expected about 0 and 1): the model's preprocessing "
                            f"(scale {preprocessing.scale:g}, mean {list(preprocessing.mean)}, std {list(preprocessing.std)}) "
                            "does not match these images (0-255 vs 0-1?); fix the ONNX metadata or --mean/--std/--scale")
    if preprocessing.size is not None:
        for h, w in sorted(sizes):
            th, tw = preprocessing.size
            if max(h / th, th / h, w / tw, tw / w) > 2 or abs((h / w) / (th / tw) - 1) > 0.1:
                warnings.append(f"calibration images are {h}x{w} but the model input is {th}x{tw}: they are "
                                "resized with a large factor or another aspect ratio, unlike deployment frames; "
                                "calibrate on frames like the camera's")
                break
    return warnings
