"""Output sinks for `edgeseg infer`: label / palette / overlay PNGs and the overlay video."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from edgeseg.errors import EdgesegError
from edgeseg.io_utils import atomic_path, atomic_write_text, fsync_path, make_dirs
from edgeseg.out_dir import check_out_dir, clear_dir, first_foreign
from edgeseg.pipeline.sources import Frame, opencv

DEFAULT_VIDEO_FPS = 25.0  # output video rate when the source does not report one (cameras, some streams)
VIDEO_CODECS = ((".mp4", "mp4v"), (".avi", "MJPG"))  # tried in order; both are in opencv-python-headless

INFER_MARKER = "edgeseg-infer.json"  # written first into every infer output folder: what makes it one
IMAGE_DIRS = ("labels", "masks", "overlays")
_PARTIAL = re.compile(r"\..+\.partial\.(mp4|avi)|\..+\.tmp")  # what a killed run leaves half-written
_VIDEO = re.compile(r"[^/]+_overlay\.(mp4|avi)")


class DuplicateOutputName(EdgesegError):
    """Two frames of one run map to the same output file; ``index`` is the second frame's."""

    def __init__(self, name: str, index: int) -> None:
        super().__init__(f"two input frames map to the output labels/{name}.png (the second is frame {index} of the "
                         "source), so one would replace the other; rename one of the inputs")
        self.name, self.index = name, index


def _save_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    with atomic_path(path, sync_folder=False) as tmp:  # the folders are fsynced once, at close()
        Image.fromarray(array).save(tmp, format="PNG")


class ImageSink:
    """labels/NAME.png always; masks/NAME.png and overlays/NAME.png when asked. A name is written once:
    a second frame of the same name is refused (DuplicateOutputName), never written over the first.
    ``names`` lists the names written, in order, when ``record`` (a finite source; an endless one would
    grow it without bound)."""

    def __init__(self, out: Path, classes: list[str], palette: list[list[int]], masks: bool = True,
                 overlays: bool = True, alpha: float = 0.5, record: bool = True) -> None:
        self.out, self.classes, self.palette, self.alpha = Path(out), classes, palette, alpha
        self.dirs = {"labels": True, "masks": masks, "overlays": overlays}
        self.names: list[str] | None = [] if record else None
        for name, wanted in self.dirs.items():
            if wanted:
                (self.out / name).mkdir(exist_ok=True)

    def __call__(self, frame: Frame, labels: np.ndarray) -> None:
        from edgeseg.pipeline.overlay import colorize, overlay

        label_path = self.out / "labels" / f"{frame.name}.png"
        if label_path.exists():  # the folder was emptied before the run: this run wrote it
            raise DuplicateOutputName(frame.name, frame.index)
        _save_png(label_path, labels if labels.dtype == np.uint8 else labels.astype(np.uint16))
        if self.names is not None:
            self.names.append(frame.name)
        if self.dirs["masks"]:
            _save_png(self.out / "masks" / f"{frame.name}.png", colorize(labels, self.palette))
        if self.dirs["overlays"]:
            _save_png(self.out / "overlays" / f"{frame.name}.png",
                      overlay(frame.rgb, labels, self.classes, self.palette, self.alpha))

    def close(self) -> None:
        for name, wanted in self.dirs.items():
            if wanted:
                fsync_path(self.out / name)


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
            fsync_path(self._tmp)
            os.replace(self._tmp, self.path)
            fsync_path(self.out)
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


def _record(out: Path) -> dict:
    """What INFER_MARKER says the earlier run wrote ({} when it cannot be read)."""
    try:
        record = json.loads((out / INFER_MARKER).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _is_plain_file(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()


def infer_foreign(out: Path) -> Path | None:
    """For the output-folder rule: the first file of ``out`` (labels/, masks/ and overlays/ included) that an
    earlier `edgeseg infer` did not write (any entry when the folder has no INFER_MARKER, i.e. is not an
    infer output). The marker of a run that finished lists its frames and video: only those count as its
    own; for a run killed before (or from an endless source) its PNGs and ``*_overlay`` video do."""
    if not _is_plain_file(out / INFER_MARKER):
        return next(iter(sorted(out.iterdir())), None)
    record = _record(out)
    frames = record.get("frames")
    names = {f"{n}.png" for n in frames} if isinstance(frames, list) else None
    listed = "frames" in record  # a finished run: its video, if any, is named too

    def own_image(path: Path) -> bool:
        return _is_plain_file(path) and (bool(_PARTIAL.fullmatch(path.name)) or (
            path.suffix == ".png" if names is None else path.name in names))

    def own_entry(path: Path) -> bool:
        if path.is_dir() and not path.is_symlink():
            return path.name in IMAGE_DIRS
        return _is_plain_file(path) and (path.name == INFER_MARKER or bool(_PARTIAL.fullmatch(path.name)) or (
            path.name == record.get("video") if listed else bool(_VIDEO.fullmatch(path.name))))

    for entry in sorted(out.iterdir()):
        if not own_entry(entry):
            return entry
        if entry.is_dir():
            victim = first_foreign(entry, own_image)
            if victim is not None:
                return victim
    return None


def check_infer_out(out: str | Path, overwrite: bool = False) -> Path:
    """The output-folder rule (edgeseg.out_dir) for an infer output folder, before any work."""
    return check_out_dir(out, infer_foreign, "edgeseg infer output", overwrite=overwrite)


def _write_marker(out: Path, record: dict) -> None:
    atomic_write_text(out / INFER_MARKER, json.dumps({"format": "edgeseg.infer", **record}, indent=1))


def prepare_out(out: str | Path, about: dict | None = None) -> Path:
    """Create ``out`` (and its parents), empty it (call ``check_infer_out`` first: it holds an earlier
    infer output, or --overwrite was given) and write INFER_MARKER, which also checks it is writable."""
    out = Path(out)
    try:
        make_dirs(out)
        clear_dir(out)
        _write_marker(out, about or {})
    except OSError as e:
        raise EdgesegError(f"cannot write to output folder {out} ({e.strerror or type(e).__name__}); "
                           "expected a folder you can create and write; choose another --out") from None
    return out


def record_outputs(out: Path, about: dict, frames: list[str] | None, video: Path | None) -> None:
    """Rewrite INFER_MARKER with what the run wrote (the frame names, when recorded, and the video), so the
    next run replaces exactly these files and refuses any other (``infer_foreign``)."""
    _write_marker(Path(out), {**about, "frames": frames, "video": video.name if video is not None else None})


