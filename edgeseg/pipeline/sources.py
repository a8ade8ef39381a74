"""Frame sources for `edgeseg infer`: image files and folders, video files, cameras, RTSP streams.
Image files are decoded by ``edgeseg.data.images`` (EXIF orientation applied, 16-bit scaled, the frame
limit checked before decoding); video frames larger than that limit are refused when the capture opens."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np

from edgeseg.data.images import check_size, read_rgb
from edgeseg.errors import EdgesegError
from edgeseg.io_utils import require_file

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class Frame(NamedTuple):
    index: int  # position in the source (failed frames count too)
    name: str  # output file stem
    rgb: np.ndarray  # (H, W, 3) uint8 RGB


class FrameDecodeError(EdgesegError):
    """One frame of a source could not be decoded; the source can go on."""



def opencv():
    try:
        import cv2
    except ImportError:
        raise EdgesegError("video files, cameras and streams need OpenCV, which is not installed; "
                           "pip install opencv-python-headless (or edgeseg[video])") from None
    return cv2


class ImageFiles:
    """Image files in order; a file that cannot be decoded raises FrameDecodeError and the next one follows."""

    kind = "images"

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        self.total: int | None = len(paths)
        self.fps: float | None = None
        self.stem = paths[0].parent.name if len(paths) > 1 else paths[0].stem
        stems = [p.stem for p in paths]
        self._names = [f"{p.stem}_{p.suffix[1:]}" if stems.count(p.stem) > 1 else p.stem for p in paths]
        self._i = 0

    def __iter__(self) -> Iterator[Frame]:
        return self

    def __next__(self) -> Frame:
        if self._i >= len(self.paths):
            raise StopIteration
        i, path = self._i, self.paths[self._i]
        self._i += 1
        try:
            rgb = read_rgb(path)
        except EdgesegError as e:  # unreadable, a FIFO, above the frame limit: this frame is skipped
            raise FrameDecodeError(f"{path.name}: {e}") from None
        except Exception as e:  # noqa: BLE001 - a decoder bug on one foreign file must not end the source
            raise FrameDecodeError(f"{path.name}: {type(e).__name__}: {e}") from None
        return Frame(i, self._names[i], rgb)

    def close(self) -> None:
        pass


class Capture:
    """An OpenCV capture (video file, camera index, URL) as RGB frames. A frame that fails to
    decode raises FrameDecodeError; the end of a file, or of a stream, ends the iteration."""

    def __init__(self, target: str | int, kind: str, stem: str) -> None:
        cv2 = opencv()
        self.kind, self.stem, self.target = kind, stem, target
        level = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # our one-line error says it all
        try:
            self._cap = cv2.VideoCapture(target)
        finally:
            cv2.utils.logging.setLogLevel(level)
        if not self._cap.isOpened():
            self._cap.release()
            what = {"camera": f"camera {target} is not available",
                    "stream": f"cannot open stream {target}"}.get(kind, f"cannot open {target} as a video")
            fix = {"camera": "check the index (ls /dev/video*) and that no other program holds the camera",
                   "stream": "check the URL, the network and the credentials"}.get(
                kind, "expected a video OpenCV can decode (mp4, avi, mkv, ...); check the file or re-encode it")
            raise EdgesegError(f"{what} (OpenCV could not open it); {fix}")
        self._check_frame_size(cv2)
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.total: int | None = count if kind == "video" and count > 0 else None
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps: float | None = fps if 0 < fps < 1000 else None
        self._pos = 0
        self._cvt = cv2.cvtColor
        self._code = cv2.COLOR_BGR2RGB

    def _check_frame_size(self, cv2) -> None:
        height = int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
        width = int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0)
        if height and width:  # 0: the backend does not say; a frame of any size then goes to the frame check
            try:
                check_size(height, width, f"{self.kind} {self.target}'s frame")
            except EdgesegError:
                self.close()
                raise

    def __iter__(self) -> Iterator[Frame]:
        return self

    def __next__(self) -> Frame:
        if self._cap is None:
            raise StopIteration
        pos = self._pos
        if not self._cap.grab():
            if self.kind == "video" and (self.total is None or pos >= self.total):
                raise StopIteration  # the end of the file
            self._pos += 1
            raise FrameDecodeError(f"frame {pos}: could not be read from {self.target}")
        self._pos += 1
        ok, bgr = self._cap.retrieve()
        if not ok or bgr is None:
            raise FrameDecodeError(f"frame {pos}: could not be decoded")
        if bgr.ndim == 2:  # grey cameras
            bgr = np.repeat(bgr[:, :, None], 3, axis=2)
        if bgr.dtype != np.uint8 or bgr.shape[0] * bgr.shape[1] == 0:
            raise FrameDecodeError(f"frame {pos}: {bgr.dtype} {bgr.shape} from {self.target}: expected a non-empty "
                                   "8-bit frame")
        check_size(bgr.shape[0], bgr.shape[1], f"frame {pos} of {self.target}", FrameDecodeError)
        return Frame(pos, f"frame_{pos:06d}", self._cvt(bgr[:, :, :3], self._code))

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


def open_source(spec: str | int) -> ImageFiles | Capture:
    """An image file, a folder of images, a video file, a camera index ("0") or a URL (rtsp://, http://)."""
    expected = ("expected an image file, a folder of images, a video file, a camera index such as 0, "
                "or an rtsp:// / http:// URL")
    if isinstance(spec, int) or str(spec).isdigit():
        return Capture(int(spec), "camera", f"camera{int(spec)}")
    spec = str(spec)
    if "://" in spec:
        return Capture(spec, "stream", "stream")
    path = Path(spec)
    if path.is_dir():  # a FIFO in the folder is kept: its frame fails in one line and is counted
        images = sorted(p for p in path.iterdir() if not p.is_dir() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise EdgesegError(f"folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)}); {expected}")
        return ImageFiles(images)
    require_file(path, "input", expected)  # missing, a FIFO, a device: one line before anything opens it
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageFiles([path])
    return Capture(str(path), "video", path.stem)


