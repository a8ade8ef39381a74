"""The one image decoder: frames as a viewer shows them (EXIF orientation, 16-bit scaled, not clipped), label
masks never scaled, FIFOs and oversized files refused in one line before decoding, bounded memory."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from edgeseg.data import images
from edgeseg.data.folder import FolderDataset
from edgeseg.errors import DatasetError

REPO = Path(__file__).resolve().parents[2]


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


def test_a_16_bit_grey_png_is_scaled_to_8_bits_not_clipped(tmp_path: Path) -> None:
    ramp = np.linspace(0, 65535, 64 * 96).reshape(64, 96).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "grey16.png")
    rgb = images.read_rgb(tmp_path / "grey16.png")
    assert rgb.dtype == np.uint8 and rgb.shape == (64, 96, 3) and rgb.flags.writeable
    assert np.array_equal(rgb[:, :, 0], (ramp >> 8).astype(np.uint8))  # the top byte: mid-grey stays mid-grey
    assert np.array_equal(rgb[:, :, 0], rgb[:, :, 2])


def test_16_bit_grey_and_16_bit_rgb_pngs_get_the_same_scaling(tmp_path: Path) -> None:
    import cv2

    ramp = np.linspace(0, 65535, 32 * 40).reshape(32, 40).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "grey16.png")
    cv2.imwrite(str(tmp_path / "rgb16.png"), np.stack([ramp] * 3, axis=2))  # 16-bit RGB PNG
    assert np.array_equal(images.read_rgb(tmp_path / "grey16.png"), images.read_rgb(tmp_path / "rgb16.png"))


def test_a_16_bit_label_png_keeps_its_values(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    mask = np.array([[0, 1, 2, 255, 2, 1]] * 4, np.uint16)
    Image.fromarray(mask).save(tmp_path / "masks" / "a.png")
    assert Image.open(tmp_path / "masks" / "a.png").mode.startswith("I;16")
    assert np.array_equal(images.read_label(tmp_path / "masks" / "a.png"), mask)
    (tmp_path / "classes.txt").write_text("a\nb\nc\n")
    assert np.array_equal(FolderDataset(tmp_path, "train")[0][1], mask.astype(np.uint8))  # 255 stays void


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_viewers_do(orientation: int, tmp_path: Path) -> None:
    pixels = np.random.default_rng(orientation).integers(0, 256, (6, 10, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "photo.png", exif=_exif(orientation))
    with Image.open(tmp_path / "photo.png") as im:
        viewer = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    got = images.read_rgb(tmp_path / "photo.png")
    assert got.shape == viewer.shape and np.array_equal(got, viewer) and got.flags.c_contiguous


def test_exif_orientation_of_a_jpeg_matches_opencv(tmp_path: Path) -> None:
    import cv2

    pixels = np.zeros((40, 80, 3), np.uint8)
    pixels[:, :40] = 255
    Image.fromarray(pixels).save(tmp_path / "photo.jpg", exif=_exif(6), quality=95)
    ours = images.read_rgb(tmp_path / "photo.jpg")
    theirs = cv2.imread(str(tmp_path / "photo.jpg"))[:, :, ::-1]
    assert ours.shape == theirs.shape == (80, 40, 3)
    assert np.abs(ours.astype(int) - theirs).mean() < 2


def test_a_mask_turned_against_its_image_is_explained(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(tmp_path / "images" / "a.png", exif=_exif(6))
    Image.fromarray(np.zeros((4, 6), np.uint8)).save(tmp_path / "masks" / "a.png")
    with pytest.raises(DatasetError, match=r"is 6x4 \(WxH\) but image .* is 4x6 \(turned by 90 degrees: an "
                                           r"image's EXIF orientation is applied"):
        FolderDataset(tmp_path, "train")[0]


def test_float_images_are_refused(tmp_path: Path) -> None:
    Image.fromarray(np.ones((4, 4), np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(DatasetError, match=r"floating-point pixels .*expected an 8- or 16-bit image"):
        images.read_rgb(tmp_path / "f.tif")


@pytest.mark.parametrize("kind", ["fifo", "folder", "missing"])
def test_a_fifo_or_folder_is_refused_before_it_is_opened(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    if kind == "fifo":
        os.mkfifo(path)  # opening it would wait for a writer forever
    elif kind == "folder":
        path.mkdir()
    expected = {"fifo": "is a named pipe \\(FIFO\\): expected a regular file", "folder": "is a folder",
                "missing": "does not exist"}[kind]
    for read in (images.read_rgb, images.read_label):
        with pytest.raises(DatasetError, match=expected):
            read(path)


def test_an_image_above_the_frame_limit_is_refused_before_it_is_decoded(tmp_path: Path, monkeypatch) -> None:
    Image.fromarray(np.zeros((100, 120, 3), np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setattr(images, "MAX_PIXELS", 100 * 119)
    monkeypatch.setattr(Image.Image, "load", lambda self: pytest.fail("decoded before the size check"))
    for read in (images.read_rgb, images.read_label):
        with pytest.raises(DatasetError, match=r"big\.png is 100x120 pixels \(HxW\), 0 megapixels: expected at most "):
            read(tmp_path / "big.png")


def test_frame_check_refuses_empty_and_foreign_frames_in_one_line() -> None:
    assert images.check_frame(np.zeros((1, 1, 3), np.uint8)).shape == (1, 1, 3)
    for frame, message in [(np.zeros((0, 5, 3), np.uint8), "0x5 pixels .*at least 1x1"),
                           (np.zeros((5, 0, 3), np.uint8), "5x0 pixels"),
                           (np.zeros((5, 5, 3), np.float32), "HxWx3 uint8 RGB frame, got float32"),
                           (np.zeros((5, 5), np.uint8), r"got uint8 \(5, 5\)"),
                           ([[0]], "got list")]:
        with pytest.raises(Exception, match=message) as info:
            images.check_frame(frame)
        assert "\n" not in str(info.value)


MEMORY_SCRIPT = r"""
import resource, sys
import numpy as np
from PIL import Image
from edgeseg.data.images import read_rgb
from edgeseg.data.preprocess import Preprocessing
from edgeseg.postprocess import labels_from_logits

def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

side, path = int(sys.argv[1]), sys.argv[2]
pre = Preprocessing(size=(64, 96))
logits = np.random.default_rng(0).standard_normal((1, 19, 64, 96)).astype(np.float32)
labels_from_logits(logits, (32, 32)), pre(np.zeros((32, 32, 3), np.uint8))  # warm: kernels, allocators
Image.fromarray(np.full((side, side, 3), 100, np.uint8)).save(path)  # then freed: the baseline's peak
base = peak()
frame = read_rgb(path)
labels = labels_from_logits(logits, frame.shape[:2]) if pre(frame).shape == (3, 64, 96) else None
print((peak() - base) / (side * side))
"""


def test_decode_preprocess_and_labels_of_a_big_frame_take_bounded_memory(tmp_path: Path) -> None:
    """A 3000x3000 frame through decode, resize to the model input and 19-class labels at frame size: under
    24 bytes per pixel above the baseline (it was about 70: Pillow copies, a float frame, C float maps)."""
    out = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, "3000", str(tmp_path / "f.png")], capture_output=True,
                         text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert float(out.stdout.split()[-1]) < 24
