"""Segmentation metrics from a confusion matrix (numpy only).

Convention: ``matrix[t, p]`` counts pixels with target class ``t`` predicted as ``p`` (rows =
target, columns = prediction). Pixels whose target is ``ignore_index`` are skipped.
IoU[c] = TP / (TP + FP + FN); mIoU is the mean over classes present in target or prediction,
on a 0-100 scale; pixel accuracy = correct / counted pixels, 0-100.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from edgeseg.errors import EdgesegError


def _to_numpy(x: Any) -> np.ndarray:
    """numpy arrays pass through; torch tensors (any device) and other ``.numpy()`` objects convert."""
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "detach"):
        x = x.detach()
    if hasattr(x, "cpu"):
        x = x.cpu()
    if hasattr(x, "numpy"):
        return np.asarray(x.numpy())
    return np.asarray(x)


def confusion_matrix(pred: Any, target: Any, num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """int64 ``(C, C)`` matrix of (target, pred) pixel counts over same-shaped class maps.

    ``pred`` and ``target`` hold class indices (argmax already taken). Raises EdgesegError when
    shapes differ, or when a counted pixel has a pred or target value outside 0..C-1.
    """
    p, t = _to_numpy(pred), _to_numpy(target)
    c = int(num_classes)
    if c < 1:
        raise EdgesegError(f"num_classes must be >= 1, got {num_classes!r}")
    if p.shape != t.shape:
        raise EdgesegError(
            f"pred shape {p.shape} does not match target shape {t.shape}: expected class maps of the same shape; "
            "take argmax over the class axis and resize predictions to the label size"
        )
    for name, a in (("pred", p), ("target", t)):
        if not (np.issubdtype(a.dtype, np.integer) or a.dtype == bool):
            raise EdgesegError(f"{name} must hold integer class indices, got dtype {a.dtype}; take argmax of logits")
    p, t = p.ravel(), t.ravel()
    valid = t != ignore_index
    all_valid = bool(valid.all())
    pv, tv = (p, t) if all_valid else (p[valid], t[valid])
    if pv.size == 0:
        return np.zeros((c, c), np.int64)
    for name, a in (("pred", pv), ("target", tv)):
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi >= c:
            bad = lo if lo < 0 else hi
            raise EdgesegError(
                f"{name} value {bad} is out of range: expected 0..{c - 1}"
                + (f" or {ignore_index} (ignored)" if name == "target" else "")
                + f" for {c} classes; check num_classes and the label/prediction maps"
            )
    idx = tv.astype(np.intp) * c + pv.astype(np.intp)
    return np.bincount(idx, minlength=c * c).reshape(c, c).astype(np.int64, copy=False)


class ConfusionMatrix:
    """Accumulates a confusion matrix over batches; ``matrix`` is public (e.g. to all-reduce it)."""

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        if int(num_classes) < 1:
            raise EdgesegError(f"num_classes must be >= 1, got {num_classes!r}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.matrix = np.zeros((self.num_classes, self.num_classes), np.int64)

    def reset(self) -> None:
        self.matrix[:] = 0

    def update(self, pred: Any, target: Any) -> None:
        """Add a batch of class maps (numpy arrays or tensors, any matching shape)."""
        self.matrix += confusion_matrix(pred, target, self.num_classes, self.ignore_index)

    @property
    def num_pixels(self) -> int:
        return int(self.matrix.sum())

    def iou_per_class(self) -> np.ndarray:
        """float64 ``(C,)`` IoU in 0..1; NaN for classes absent from both target and prediction."""
        m = self.matrix
        tp = np.diag(m).astype(np.float64)
        union = m.sum(0) + m.sum(1) - np.diag(m)
        iou = np.full(self.num_classes, np.nan)
        nz = union > 0
        iou[nz] = tp[nz] / union[nz]
        return iou

    def miou(self) -> float:
        """Mean IoU over classes that occur (NaN-skipping), 0-100; NaN when nothing was counted."""
        iou = self.iou_per_class()
        if np.isnan(iou).all():
            return float("nan")
        return float(np.nanmean(iou) * 100.0)

    def pixel_accuracy(self) -> float:
        """Correct / counted pixels, 0-100; NaN when nothing was counted."""
        total = self.matrix.sum()
        return float(np.trace(self.matrix) / total * 100.0) if total else float("nan")

    def summary(self, class_names: Sequence[str] | None = None) -> dict[str, Any]:
        """JSON-ready dict: ``miou``, ``pixel_acc`` (0-100, None if nothing counted), ``per_class_iou``
        (name -> IoU 0-100 or None when the class is absent), ``num_pixels``."""
        names = list(class_names) if class_names is not None else [f"class_{k}" for k in range(self.num_classes)]
        if len(names) != self.num_classes:
            raise EdgesegError(
                f"got {len(names)} class names for a {self.num_classes}-class confusion matrix; "
                "pass the dataset's class list"
            )
        iou = self.iou_per_class()
        miou, acc = self.miou(), self.pixel_accuracy()
        return {
            "miou": None if np.isnan(miou) else miou,
            "pixel_acc": None if np.isnan(acc) else acc,
            "per_class_iou": {n: (None if np.isnan(v) else float(v * 100.0)) for n, v in zip(names, iou)},
            "num_pixels": self.num_pixels,
        }
