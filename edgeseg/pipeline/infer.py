"""`edgeseg infer`: a bundle on images, folders, video files, cameras and RTSP streams.

    result = infer("bundle/", "clip.mp4", Path("out/"))   # labels/*.png + clip_overlay.mp4
    result.stats.e2e_fps, result.stats.model_fps

Three stages overlap, each a thread joined by a bounded queue (``queue_size`` items), so memory
stays flat however long the stream and frames stay in order:

    decode (source -> RGB frames) -> preprocess + infer + upsample/argmax (batched) -> encode (files)

Outputs under ``out``: ``labels/NAME.png`` (class index per pixel, 8-bit grey, frame size) for
every frame; for image inputs also ``masks/NAME.png`` (palette colours) and ``overlays/NAME.png``
(blend + legend); for video, camera and stream inputs ``STEM_overlay.mp4`` (or ``.avi``) instead.
Every file appears complete or not at all: PNGs are written atomically, the video is written under
a hidden name and renamed when it is closed, also after Ctrl-C / ``stop``. A frame that fails to
decode is skipped and counted; the stream goes on.
"""
from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from edgeseg.errors import EdgesegError
from edgeseg.io_utils import atomic_path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
QUEUE_SIZE = 4  # items per stage queue: enough to overlap the stages, small enough to keep memory flat
AUTO_BATCH = 4  # frames per inference when the bundle's batch dim is dynamic and --batch is not given
MAX_CONSECUTIVE_ERRORS = 30  # a stream whose frames keep failing this many times in a row is treated as ended
DEFAULT_VIDEO_FPS = 25.0  # output video rate when the source does not report one (cameras, some streams)
VIDEO_CODECS = ((".mp4", "mp4v"), (".avi", "MJPG"))  # tried in order; both are in opencv-python-headless
_POLL_S = 0.1  # how often blocked stages look at the stop / abort flags
_END = object()


class Frame(NamedTuple):
    index: int  # position in the source (failed frames count too)
    name: str  # output file stem
    rgb: np.ndarray  # (H, W, 3) uint8 RGB


class FrameDecodeError(EdgesegError):
    """One frame of a source could not be decoded; the source can go on."""


# ----------------------------------------------------------------------------- sources

def _cv2():
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
        from PIL import Image

        if self._i >= len(self.paths):
            raise StopIteration
        i, path = self._i, self.paths[self._i]
        self._i += 1
        try:
            with Image.open(path) as im:
                rgb = np.asarray(im.convert("RGB"))
        except Exception as e:  # Pillow raises several types for truncated / foreign files
            raise FrameDecodeError(f"{path.name}: {type(e).__name__}: {e}") from None
        return Frame(i, self._names[i], rgb)

    def close(self) -> None:
        pass


class Capture:
    """An OpenCV capture (video file, camera index, URL) as RGB frames. A frame that fails to
    decode raises FrameDecodeError; the end of a file, or of a stream, ends the iteration."""

    def __init__(self, target: str | int, kind: str, stem: str) -> None:
        cv2 = _cv2()
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
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.total: int | None = count if kind == "video" and count > 0 else None
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps: float | None = fps if 0 < fps < 1000 else None
        self._pos = 0
        self._cvt = cv2.cvtColor
        self._code = cv2.COLOR_BGR2RGB

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
    if path.is_dir():
        images = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise EdgesegError(f"folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)}); {expected}")
        return ImageFiles(images)
    if path.is_file():
        if path.suffix.lower() in IMAGE_SUFFIXES:
            return ImageFiles([path])
        return Capture(str(path), "video", path.stem)
    raise EdgesegError(f"input {spec} does not exist; {expected}")


# ----------------------------------------------------------------------------- prediction

def resolve_batch(requested: int | None, spec: Any) -> int:
    """Frames per inference: ``requested`` within the runner's batch bounds, else up to AUTO_BATCH
    when the batch dim is dynamic (a fixed batch above 1 is filled by padding)."""
    lo, hi = int(spec.min_shape[0]), int(spec.max_shape[0])
    if requested is None:
        return min(hi, max(lo, AUTO_BATCH)) if hi > lo else lo
    if not 1 <= requested <= hi:
        bound = f"exactly {lo}" if lo == hi else f"{lo} to {hi}"
        raise EdgesegError(f"--batch {requested} does not fit the bundle (batch {bound}); pass --batch 1..{hi}, "
                           "or rebuild with `edgeseg build --dynamic batch` for larger batches")
    return requested


class BatchPredictor:
    """Frames (RGB uint8, any size) -> class maps at each frame's size, in one runner call per batch:
    the manifest's preprocessing, then edgeseg.postprocess.labels_from_logits (the path Segmenter,
    eval and bench share: bilinear resize to the frame, argmax)."""

    def __init__(self, segmenter: Any) -> None:
        self.runner = segmenter.runner
        self.preprocessing = segmenter.preprocessing
        self.min_batch = int(self.runner.input_spec.min_shape[0])

    def __call__(self, frames: list[np.ndarray]) -> tuple[list[np.ndarray], float]:
        """(labels per frame, model milliseconds spent)."""
        inputs = [self.preprocessing(np.ascontiguousarray(f)) for f in frames]
        labels: list[np.ndarray] = []
        model_ms = 0.0
        start = 0
        while start < len(inputs):  # frames whose inputs differ in size (no fixed model size) go separately
            end = start + 1
            while end < len(inputs) and inputs[end].shape == inputs[start].shape:
                end += 1
            labels += self._run(inputs[start:end], frames[start:end])
            model_ms += self.runner.last_latency_ms or 0.0
            start = end
        return labels, model_ms

    def _run(self, inputs: list[np.ndarray], frames: list[np.ndarray]) -> list[np.ndarray]:
        from edgeseg.postprocess import labels_from_logits

        x = np.stack(inputs)
        if len(x) < self.min_batch:  # a fixed batch larger than what is left: pad, drop the extra outputs
            x = np.concatenate([x, np.zeros((self.min_batch - len(x), *x.shape[1:]), x.dtype)])
        out = np.asarray(self.runner.infer(x))[: len(frames)]
        sizes = {f.shape[:2] for f in frames}
        if len(sizes) == 1:  # the usual stream: one resize + argmax for the whole batch
            return list(labels_from_logits(out, sizes.pop()))
        return [labels_from_logits(out[i: i + 1], f.shape[:2])[0] for i, f in enumerate(frames)]


# ----------------------------------------------------------------------------- pipeline

class _Queue(queue.Queue):
    """A bounded queue that remembers the most items it ever held."""

    def __init__(self, maxsize: int) -> None:
        super().__init__(maxsize)
        self.peak = 0

    def _put(self, item) -> None:  # called with the queue's lock held
        super()._put(item)
        self.peak = max(self.peak, len(self.queue))


@dataclass
class PipelineStats:
    frames: int = 0  # frames written by the sink
    decode_errors: int = 0  # frames skipped because they could not be decoded
    errors: list[str] = field(default_factory=list)  # the first few decode error messages
    notes: list[str] = field(default_factory=list)
    batches: int = 0
    inferred: int = 0
    model_seconds: float = 0.0  # sum of runner latencies
    seconds: float = 0.0  # first frame requested -> last frame written
    queue_size: int = 0
    queue_peaks: dict[str, int] = field(default_factory=dict)
    stopped: bool = False  # stop requested (or Ctrl-C) before the source ended

    @property
    def e2e_fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def model_fps(self) -> float:
        return self.inferred / self.model_seconds if self.model_seconds > 0 else 0.0


Predictor = Callable[[list[np.ndarray]], tuple[list[np.ndarray], float]]
Sink = Callable[[Frame, np.ndarray], None]
KEPT_ERRORS = 5


class _Flags:
    def __init__(self, stop: threading.Event | None) -> None:
        self.stop = stop or threading.Event()  # graceful: read no more frames, finish those in flight
        self.abort = threading.Event()  # a stage failed: everyone leaves now
        self.error: BaseException | None = None

    def put(self, q: _Queue, item) -> bool:
        while not self.abort.is_set():
            try:
                q.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                pass
        return False

    def get(self, q: _Queue):
        while not self.abort.is_set():
            try:
                return q.get(timeout=_POLL_S)
            except queue.Empty:
                pass
        return _END


def _as_frame(item: Any, index: int) -> Frame:
    if isinstance(item, Frame):
        return item
    return Frame(index, f"frame_{index:06d}", item)


def _frame_problem(rgb: Any) -> str | None:
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3 or not rgb.size:
        got = f"{rgb.dtype} {rgb.shape}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
        return f"expected an HxWx3 uint8 RGB frame, got {got}"
    return None


def _decode(source: Iterable, out: _Queue, flags: _Flags, stats: PipelineStats, max_frames: int | None) -> None:
    it, attempts, taken, consecutive = iter(source), 0, 0, 0
    try:
        while not flags.stop.is_set() and (max_frames is None or taken < max_frames):
            try:
                item = next(it)
                problem = _frame_problem(item.rgb if isinstance(item, Frame) else item)
                if problem:
                    raise FrameDecodeError(f"frame {attempts}: {problem}")
            except StopIteration:
                return
            except Exception as e:  # a bad frame: skip, count, go on
                attempts += 1
                consecutive += 1
                stats.decode_errors += 1
                if len(stats.errors) < KEPT_ERRORS:
                    stats.errors.append(str(e) or type(e).__name__)
                if consecutive >= MAX_CONSECUTIVE_ERRORS:
                    stats.notes.append(f"the source ended after {consecutive} unreadable frames in a row "
                                       f"(last: {str(e) or type(e).__name__})")
                    return
                continue
            frame = _as_frame(item, attempts)
            attempts, consecutive = attempts + 1, 0
            if not flags.put(out, frame):
                return
            taken += 1
    finally:
        flags.put(out, _END)


def _infer(inp: _Queue, out: _Queue, predict: Predictor, batch: int, flags: _Flags, stats: PipelineStats) -> None:
    done = False
    while not done:
        item = flags.get(inp)
        if item is _END:
            break
        pending = [item]
        while len(pending) < batch:  # fill the batch with frames already decoded; never wait for more
            try:
                item = inp.get_nowait()
            except queue.Empty:
                break
            if item is _END:
                done = True
                break
            pending.append(item)
        labels, model_ms = predict([f.rgb for f in pending])
        stats.batches += 1
        stats.inferred += len(pending)
        stats.model_seconds += model_ms / 1000.0
        for frame, lab in zip(pending, labels):
            if not flags.put(out, (frame, lab)):
                return
    flags.put(out, _END)


def _encode(inp: _Queue, sink: Sink, flags: _Flags, stats: PipelineStats, t0: float,
            progress: Callable[[int, float], None] | None) -> None:
    while True:
        item = flags.get(inp)
        if item is _END:
            return
        frame, labels = item
        sink(frame, labels)
        stats.frames += 1
        stats.seconds = time.perf_counter() - t0
        if progress is not None:
            progress(stats.frames, stats.e2e_fps)


def _guard(fn: Callable, flags: _Flags) -> Callable[..., None]:
    def run(*args) -> None:
        try:
            fn(*args)
        except BaseException as e:  # hand it to the caller's thread; stop the other stages
            if flags.error is None:
                flags.error = e
            flags.abort.set()
    return run


def run_pipeline(frames: Iterable, predict: Predictor, sink: Sink, *, batch: int = 1, queue_size: int = QUEUE_SIZE,
                 max_frames: int | None = None, stop: threading.Event | None = None,
                 progress: Callable[[int, float], None] | None = None) -> PipelineStats:
    """Run ``frames`` (Frame or HxWx3 uint8 RGB arrays) through ``predict`` into ``sink``, in order.

    Decode, inference and encode run in three threads joined by queues of ``queue_size`` items, so at
    most about ``2 * queue_size + batch`` frames are in memory. An item that fails (the iterator
    raises, or it is not an HxWx3 uint8 array) is skipped and counted in ``decode_errors``.
    ``stop.set()`` or Ctrl-C ends reading; frames already read are finished, the sink is called
    for each, and ``stopped`` is True (a second Ctrl-C drops them and raises KeyboardInterrupt once
    the stages have left, so the caller can still close its files). A failure in ``predict`` or
    ``sink`` is raised here.
    ``progress(frames_done, fps)`` is called from the encode thread.
    """
    if queue_size < 1 or batch < 1:
        raise EdgesegError(f"queue_size and batch must be >= 1, got {queue_size} and {batch}")
    flags = _Flags(stop)
    stats = PipelineStats(queue_size=queue_size)
    decoded, predicted = _Queue(queue_size), _Queue(queue_size)
    t0 = time.perf_counter()
    threads = [threading.Thread(target=_guard(fn, flags), args=args, name=f"edgeseg-{name}", daemon=True)
               for name, fn, args in (
                   ("decode", _decode, (frames, decoded, flags, stats, max_frames)),
                   ("infer", _infer, (decoded, predicted, predict, batch, flags, stats)),
                   ("encode", _encode, (predicted, sink, flags, stats, t0, progress)))]
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(_POLL_S)
    except KeyboardInterrupt:
        flags.stop.set()  # first Ctrl-C: read no more, finish what is in flight
        try:
            for t in threads:
                t.join()
        except KeyboardInterrupt:  # second Ctrl-C: drop what is in flight, but let the stages leave first
            flags.abort.set()
            for t in threads:
                t.join()
            raise
    stats.stopped = flags.stop.is_set()
    stats.queue_peaks = {"decoded": decoded.peak, "predicted": predicted.peak}
    if flags.error is not None:
        raise flags.error
    return stats


# ----------------------------------------------------------------------------- sinks

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
        from edgeseg.overlay import colorize, overlay

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
        cv2 = _cv2()
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
        from edgeseg.overlay import overlay

        cv2 = _cv2()
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


class _Sinks:
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


# ----------------------------------------------------------------------------- the whole command

@dataclass
class InferResult:
    stats: PipelineStats
    out: Path
    source_kind: str
    backend: str
    batch: int
    video: Path | None  # the overlay video, for video / camera / stream inputs


def infer(bundle: str | Path, source: str | int | Iterable, out: str | Path, *, backend: str = "auto",
          batch: int | None = None, max_frames: int | None = None, overlays: bool = True, alpha: float = 0.5,
          queue_size: int = QUEUE_SIZE, threads: int = 0, verify: bool = True, stop: threading.Event | None = None,
          progress: Callable[[int, int | None, float], None] | None = None) -> InferResult:
    """Segment every frame of ``source`` (see ``open_source``) with the bundle and write the outputs
    described in the module docstring under ``out``. ``progress(done, total_or_None, fps)``."""
    from edgeseg.segmenter import load

    src = open_source(source) if isinstance(source, (str, int, Path)) else source
    seg = None
    sink = None
    try:
        seg = load(bundle, backend=backend, threads=threads, verify=verify)
        n = resolve_batch(batch, seg.runner.input_spec)
        out = prepare_out(out)
        kind = getattr(src, "kind", "frames")
        is_images = kind == "images"
        sinks: list = [ImageSink(out, seg.classes, seg.palette, masks=is_images, overlays=is_images and overlays,
                                 alpha=alpha)]
        video = None
        if not is_images and overlays:
            video = VideoSink(out, getattr(src, "stem", "frames"), getattr(src, "fps", None), seg.classes,
                              seg.palette, alpha)
            sinks.append(video)
        sink = _Sinks(sinks)
        total = getattr(src, "total", None)
        if max_frames is not None and total is not None:
            total = min(total, max_frames)
        report = (lambda done, fps: progress(done, total, fps)) if progress else None
        stats = run_pipeline(src, BatchPredictor(seg), sink, batch=n, queue_size=queue_size, max_frames=max_frames,
                             stop=stop, progress=report)
    finally:
        if sink is not None:
            sink.close()
        if hasattr(src, "close"):
            src.close()
        if seg is not None:
            seg.close()
    return InferResult(stats, out, kind, seg.backend, n, video.path if video is not None else None)
