"""edgeseg.load's Segmenter refuses frames it cannot segment in one line (empty, wrong dtype or shape, above the
frame limit) and segments the smallest frame there is; a FIFO in place of a bundle file is one line, not a hang."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import edgeseg
from edgeseg.data import images
from edgeseg.errors import EdgesegError


@pytest.fixture(scope="module")
def seg(tiny_dynamic_bundle: Path):
    segmenter = edgeseg.load(tiny_dynamic_bundle, backend="ort")
    yield segmenter
    segmenter.close()


@pytest.mark.parametrize(("frame", "message"), [
    (np.zeros((0, 64, 3), np.uint8), r"the frame is 0x64 pixels \(HxW\): expected at least 1x1"),
    (np.zeros((48, 0, 3), np.uint8), r"the frame is 48x0 pixels"),
    (np.zeros((0, 0, 3), np.uint8), r"the frame is 0x0 pixels"),
    (np.zeros((48, 64, 3), np.float32), r"expected an HxWx3 uint8 RGB frame, got float32 \(48, 64, 3\)"),
    (np.zeros((48, 64), np.uint8), r"got uint8 \(48, 64\)"),
    (np.zeros((48, 64, 4), np.uint8), r"got uint8 \(48, 64, 4\)"),
    (np.zeros((2, 48, 64, 3), np.uint8), r"got uint8 \(2, 48, 64, 3\)"),
    (None, r"got NoneType"),
])
def test_a_frame_that_cannot_be_segmented_is_refused_in_one_line(seg, frame, message: str) -> None:
    for logits in (False, True):
        with pytest.raises(EdgesegError, match=message) as info:
            seg(frame, logits=logits)
        assert "\n" not in str(info.value)


def test_a_frame_above_the_frame_limit_is_refused_before_any_work(seg, monkeypatch) -> None:
    monkeypatch.setattr(images, "MAX_PIXELS", 48 * 63)
    monkeypatch.setattr(seg.preprocessing.__class__, "__call__", lambda *a: pytest.fail("preprocessed"))
    with pytest.raises(EdgesegError, match=r"the frame is 48x64 pixels \(HxW\), 0 megapixels: expected at most 0 "
                                           r"megapixels .*frame limit; downscale it first"):
        seg(np.zeros((48, 64, 3), np.uint8))


def test_the_smallest_frames_are_segmented(seg) -> None:
    for shape in [(1, 1, 3), (1, 7, 3), (9, 1, 3)]:
        labels = seg(np.zeros(shape, np.uint8))
        assert labels.shape == shape[:2] and labels.dtype == np.uint8


def test_a_fifo_in_place_of_the_model_is_one_line_even_without_verifying(tiny_dynamic_bundle: Path,
                                                                        tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_dynamic_bundle, bundle)
    (bundle / "model.onnx").unlink()
    os.mkfifo(bundle / "model.onnx")  # ONNX Runtime would wait on it forever
    code = f"import edgeseg; edgeseg.load({str(bundle)!r}, backend='ort', verify=False)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    last = done.stderr.strip().splitlines()[-1]  # the bundle reader (meaning check) or the runner refuses it first
    assert done.returncode == 1 and last.startswith(
        f"edgeseg.errors.EdgesegError: ONNX file {bundle / 'model.onnx'} is a named pipe (FIFO): expected a regular "
        "file; "), last
