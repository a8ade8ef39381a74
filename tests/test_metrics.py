"""Confusion matrix, IoU, mIoU and pixel accuracy against hand-computed and brute-force values."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from edgeseg.errors import EdgesegError
from edgeseg.metrics import ConfusionMatrix, confusion_matrix

# Hand-worked example: 2x3 image, 3 classes.
#   target = [[0, 0, 1],     pred = [[0, 1, 1],
#             [1, 2, 2]]             [1, 2, 0]]
# Confusion (rows = target, cols = pred):
#   t0: p0=1 p1=1 p2=0
#   t1: p0=0 p1=2 p2=0
#   t2: p0=1 p1=0 p2=1
# IoU = TP / (row + col - TP):
#   c0: 1 / (2 + 2 - 1) = 1/3     c1: 2 / (2 + 3 - 2) = 2/3     c2: 1 / (2 + 1 - 1) = 1/2
# mIoU = (1/3 + 2/3 + 1/2) / 3 = 0.5 -> 50.0 ; pixel accuracy = 4 correct / 6 = 66.666...
# With target[0, 1] = 255 (ignored; that pixel was t0/p1):
#   t0 row becomes [1, 0, 0]: c0: 1 / (1 + 2 - 1) = 1/2, c1: 2 / (2 + 2 - 2) = 1, c2 unchanged 1/2
#   mIoU = (1/2 + 1 + 1/2) / 3 = 66.666... ; pixel accuracy = 4 / 5 = 80.0
TARGET = np.array([[0, 0, 1], [1, 2, 2]], np.uint8)
PRED = np.array([[0, 1, 1], [1, 2, 0]], np.uint8)


def test_hand_computed_example() -> None:
    m = confusion_matrix(PRED, TARGET, 3)
    assert m.dtype == np.int64
    np.testing.assert_array_equal(m, [[1, 1, 0], [0, 2, 0], [1, 0, 1]])
    cm = ConfusionMatrix(3)
    cm.update(PRED, TARGET)
    np.testing.assert_allclose(cm.iou_per_class(), [1 / 3, 2 / 3, 1 / 2])
    assert cm.miou() == pytest.approx(50.0)
    assert cm.pixel_accuracy() == pytest.approx(400 / 6)


def test_ignore_index_hand_computed() -> None:
    target = TARGET.copy()
    target[0, 1] = 255
    cm = ConfusionMatrix(3)
    cm.update(PRED, target)
    np.testing.assert_array_equal(cm.matrix, [[1, 0, 0], [0, 2, 0], [1, 0, 1]])
    np.testing.assert_allclose(cm.iou_per_class(), [1 / 2, 1.0, 1 / 2])
    assert cm.miou() == pytest.approx(200 / 3)
    assert cm.pixel_accuracy() == pytest.approx(80.0)
    assert cm.num_pixels == 5


def test_absent_class_is_nan_and_skipped() -> None:
    cm = ConfusionMatrix(4)
    cm.update(PRED, TARGET)
    iou = cm.iou_per_class()
    assert math.isnan(iou[3])
    assert cm.miou() == pytest.approx(50.0)
    s = cm.summary(["a", "b", "c", "d"])
    assert set(s) == {"miou", "pixel_acc", "per_class_iou", "num_pixels"}
    assert s["per_class_iou"]["d"] is None
    assert s["per_class_iou"]["b"] == pytest.approx(200 / 3)
    assert s["miou"] == pytest.approx(50.0) and s["pixel_acc"] == pytest.approx(400 / 6)
    assert s["num_pixels"] == 6


def _reference_iou(pred: np.ndarray, target: np.ndarray, c: int, ignore: int = 255) -> tuple[np.ndarray, float]:
    """Straightforward per-class loop: IoU per class (NaN if absent) and pixel accuracy (0-1)."""
    keep = target != ignore
    p, t = pred[keep], target[keep]
    ious = []
    for k in range(c):
        inter = np.sum((p == k) & (t == k))
        union = np.sum((p == k) | (t == k))
        ious.append(inter / union if union else float("nan"))
    return np.array(ious), float(np.mean(p == t))


def test_matches_reference_loop_on_random_data() -> None:
    rng = np.random.default_rng(0)
    c = 6
    target = rng.integers(0, c, (4, 17, 23)).astype(np.uint8)
    target[rng.random(target.shape) < 0.1] = 255
    # correlated prediction, class 5 never predicted nor present -> NaN
    target[target == 5] = 4
    pred = np.where(rng.random(target.shape) < 0.6, np.minimum(target, c - 2), rng.integers(0, c - 1, target.shape))
    pred = pred.astype(np.int64)
    ref_iou, ref_acc = _reference_iou(pred, target, c)
    cm = ConfusionMatrix(c)
    cm.update(pred, target)
    np.testing.assert_allclose(cm.iou_per_class(), ref_iou, equal_nan=True)
    assert math.isnan(cm.iou_per_class()[5])
    assert cm.miou() == pytest.approx(np.nanmean(ref_iou) * 100)
    assert cm.pixel_accuracy() == pytest.approx(ref_acc * 100)


def test_accumulation_equals_one_shot_and_accepts_tensors() -> None:
    rng = np.random.default_rng(1)
    target = rng.integers(0, 5, (6, 8, 9)).astype(np.uint8)
    target[rng.random(target.shape) < 0.2] = 255
    pred = rng.integers(0, 5, target.shape).astype(np.uint8)
    batched = ConfusionMatrix(5)
    for k in range(0, 6, 2):
        batched.update(torch.from_numpy(pred[k : k + 2]).long(), torch.from_numpy(target[k : k + 2]))
    one = ConfusionMatrix(5)
    one.update(pred, target)
    np.testing.assert_array_equal(batched.matrix, one.matrix)
    assert batched.miou() == one.miou()
    batched.reset()
    assert batched.num_pixels == 0


def test_errors() -> None:
    with pytest.raises(EdgesegError, match="pred value 3 is out of range: expected 0..2"):
        confusion_matrix(np.array([[3, 0]]), np.array([[0, 0]]), 3)
    with pytest.raises(EdgesegError, match="pred value -1 is out of range"):
        confusion_matrix(np.array([[-1, 0]]), np.array([[0, 0]]), 3)
    with pytest.raises(EdgesegError, match="target value 7 is out of range"):
        confusion_matrix(np.array([[0, 0]]), np.array([[7, 0]]), 3)
    with pytest.raises(EdgesegError, match="does not match target shape"):
        confusion_matrix(np.zeros((2, 3), int), np.zeros((3, 2), int), 3)
    with pytest.raises(EdgesegError, match="integer class indices"):
        confusion_matrix(np.zeros((2, 3), np.float32), np.zeros((2, 3), int), 3)
    with pytest.raises(EdgesegError, match="class names"):
        ConfusionMatrix(3).summary(["a", "b"])
    # a prediction at an ignored pixel is not counted, so it is not checked either
    m = confusion_matrix(np.array([[9, 1]]), np.array([[255, 1]]), 3)
    assert m.sum() == 1 and m[1, 1] == 1


def test_empty_matrix() -> None:
    cm = ConfusionMatrix(3)
    cm.update(np.zeros((2, 2), np.uint8), np.full((2, 2), 255, np.uint8))
    assert cm.num_pixels == 0 and math.isnan(cm.miou())
    s = cm.summary(["a", "b", "c"])
    assert s["miou"] is None and s["pixel_acc"] is None
