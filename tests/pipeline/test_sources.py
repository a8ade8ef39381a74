"""`edgeseg infer`'s frame sources decode as the datasets do (the one decoder: EXIF orientation, 16-bit scaled),
and a FIFO, an oversized image or an oversized video is one line, never a hang or a huge allocation."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgeseg.data import images
from edgeseg.errors import EdgesegError
from edgeseg.pipeline.sources import FrameDecodeError, open_source


def test_image_files_are_decoded_as_a_viewer_shows_them(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 40x80 (HxW), shown turned clockwise: 80x40
    Image.fromarray(np.zeros((40, 80, 3), np.uint8)).save(tmp_path / "a_turned.jpg", exif=exif)
    Image.fromarray(np.full((8, 8), 40000, np.uint16)).save(tmp_path / "b_grey16.png")
    frames = list(open_source(str(tmp_path)))
    assert frames[0].rgb.shape == (80, 40, 3)
    assert frames[1].rgb.shape == (8, 8, 3) and (frames[1].rgb == 40000 >> 8).all()  # not clipped to 255


def test_a_fifo_in_a_folder_fails_its_frame_in_one_line_and_the_next_follows(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "a.png")
    os.mkfifo(tmp_path / "b.png")  # reading it would wait forever for a writer
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "c.png")
    source = open_source(str(tmp_path))
    assert next(source).name == "a"
    with pytest.raises(FrameDecodeError, match=r"^b\.png: image .*b\.png is a named pipe \(FIFO\): expected a "
                                               r"regular file"):
        next(source)
    assert next(source).name == "c"


@pytest.mark.parametrize("kind", ["fifo", "character device"])
def test_a_single_input_that_is_not_a_regular_file_is_one_line(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "in.png" if kind == "fifo" else Path("/dev/null")
    if kind == "fifo":
        os.mkfifo(path)
    said = "is a named pipe (FIFO)" if kind == "fifo" else "is a character device"
    with pytest.raises(EdgesegError, match=rf"^input {path} {said.replace('(', '[(]').replace(')', '[)]')}: "
                                           "expected a regular file; expected an image file, a folder"):
        open_source(str(path))


def test_an_image_above_the_frame_limit_fails_its_frame_before_decoding(tmp_path: Path, monkeypatch) -> None:
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setattr(images, "MAX_PIXELS", 30 * 39)
    monkeypatch.setattr(Image.Image, "load", lambda self: pytest.fail("decoded before the size check"))
    with pytest.raises(FrameDecodeError, match=r"^big\.png: image .*big\.png is 30x40 pixels \(HxW\), 0 megapixels: "
                                               r"expected at most 0 megapixels"):
        next(open_source(str(tmp_path / "big.png")))


def test_a_video_above_the_frame_limit_is_refused_when_it_opens(tmp_path: Path, monkeypatch) -> None:
    cv2 = pytest.importorskip("cv2", reason="opencv-python-headless is not installed")
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for _ in range(3):
        writer.write(np.zeros((48, 64, 3), np.uint8))
    writer.release()
    assert len(list(open_source(str(video)))) == 3
    monkeypatch.setattr(images, "MAX_PIXELS", 48 * 63)
    with pytest.raises(EdgesegError, match=r"video .*clip\.avi's frame is 48x64 pixels \(HxW\), 0 megapixels: "
                                           "expected at most"):
        open_source(str(video))
