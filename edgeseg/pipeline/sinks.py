"""Output sinks for `edgeseg infer`: label / palette / overlay PNGs and the overlay video."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edgeseg.errors import EdgesegError
from edgeseg.io_utils import atomic_path
from edgeseg.pipeline.sources import Frame, opencv

DEFAULT_VIDEO_FPS = 25.0  # output video rate when the source does not report one (cameras, some streams)
VIDEO_CODECS = ((".mp4", "mp4v"), (".avi", "MJPG"))  # tried in order; both are in opencv-python-headless

def _save_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


class ImageSink:
    """labels/NAME.png always; masks/NAME.png and overlays/NAME.png when asked."""

    def __init__(self, out: Path, classes: list[str], palette: list[list[int]], masks: bool = True,
                 overlays: bool = True, alpha: float = 0.5) -> None:
        self.out, self.classes, self.palette, self.alpha = Path(out), classes, palette, alpha
        self.dirs = {"labels": True, "masks": masks, "overlays": overlays}
        for name, wanted in self.dirs.items():
            if wanted:
                (self.out / name).mkdir(exist_ok=True)

    def __call__(self, frame: Frame, labels: np.ndarray) -> None:
        from edgeseg.pipeline.overlay import colorize, overlay

        _save_png(self.out / "labels" / f"{frame.name}.png",
                  labels if labels.dtype == np.uint8 else labels.astype(np.uint16))
        if self.dirs["masks"]:
            _save_png(self.out / "masks" / f"{frame.name}.png", colorize(labels, self.palette))
        if self.dirs["overlays"]:
            _save_png(self.out / "overlays" / f"{frame.name}.png",
                      overlay(frame.rgb, labels, self.classes, self.palette, self.alpha))

    def close(self) -> None:
        pass


class VideoSink:
    """Overlays (blend + legend) into one video, written under a hidden name and renamed on close(),
    so the named file is always complete. mp4v (.mp4) when OpenCV can write it here, else MJPG (.avi)."""

    def __init__(self, out: Path, stem: str, fps: float | None, classes: list[str], palette: list[list[int]],
                 alpha: float = 0.5) -> None:
        self.out, self.stem, self.fps = Path(out), stem, fps or DEFAULT_VIDEO_FPS
        self.classes, self.palette, self.alpha = classes, palette, alpha
        self.path: Path | None = None
        self.frames = 0
        self._writer = None
        self._tmp: Path | None = None
        self._size: tuple[int, int] | None = None

    def _open(self, width: int, height: int) -> None:
        cv2 = opencv()
        for suffix, fourcc in VIDEO_CODECS:
            tmp = self.out / f".{self.stem}_overlay.partial{suffix}"
            writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*fourcc), self.fps, (width, height))
            if writer.isOpened():
                self._writer, self._tmp, self._size = writer, tmp, (width, height)
                self.path = self.out / f"{self.stem}_overlay{suffix}"
                return
            writer.release()
            tmp.unlink(missing_ok=True)
        raise EdgesegError(f"OpenCV here cannot write {' or '.join(c for _, c in VIDEO_CODECS)} video into {self.out}; "
                           "install opencv-python-headless from PyPI (it bundles FFmpeg) or pass --no-overlay")

    def __call__(self, frame: Frame, labels: np.ndarray) -> None:
        from edgeseg.pipeline.overlay import overlay

        cv2 = opencv()
        view = overlay(frame.rgb, labels, self.classes, self.palette, self.alpha)
        if view.shape[0] % 2 or view.shape[1] % 2:  # codecs want even sizes: pad one row / column rather than crop
            view = np.pad(view, ((0, view.shape[0] % 2), (0, view.shape[1] % 2), (0, 0)), mode="edge")
        if self._writer is None:
            self._open(view.shape[1], view.shape[0])
        if (view.shape[1], view.shape[0]) != self._size:  # the stream changed resolution: keep the video's
            view = cv2.resize(view, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(cv2.cvtColor(view, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> None:
        if self._writer is None:
            return
        self._writer.release()
        self._writer = None
        if self.frames:
            os.replace(self._tmp, self.path)
        else:
            self._tmp.unlink(missing_ok=True)


class SinkGroup:
    def __init__(self, sinks: list) -> None:
        self.sinks = sinks

    def __call__(self, frame: Frame, labels: np.ndarray) -> None:
        for sink in self.sinks:
            sink(frame, labels)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


def prepare_out(out: str | Path) -> Path:
    """Create ``out`` (and its parents) and check that files can be written there."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".edgeseg-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise EdgesegError(f"cannot write to output folder {out} ({e.strerror or type(e).__name__}); "
                           "expected a folder you can create and write; choose another --out") from None
    return out


