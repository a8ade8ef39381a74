"""The three-stage pipeline: decode -> infer -> encode threads joined by small bounded queues."""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Sized
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeseg.errors import EdgesegError
from edgeseg.pipeline.sources import Frame, FrameDecodeError

QUEUE_SIZE = 4  # items per stage queue: enough to overlap the stages, small enough to keep memory flat
MAX_CONSECUTIVE_ERRORS = 30  # an endless source (camera, stream) failing this many frames in a row has ended
_POLL_S = 0.1  # how often blocked stages look at the stop / abort flags
_END = object()

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


def is_finite(source: Iterable) -> bool:
    """Whether ``source`` has a known length (image files, a video with a frame count, a list): it is read to
    its end whatever fails; an endless one (camera, stream) ends after MAX_CONSECUTIVE_ERRORS failures."""
    return getattr(source, "total", None) is not None or isinstance(source, Sized)


def _decode(source: Iterable, out: _Queue, flags: _Flags, stats: PipelineStats, max_frames: int | None) -> None:
    it, attempts, taken, consecutive, finite = iter(source), 0, 0, 0, is_finite(source)
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
                if not finite and consecutive >= MAX_CONSECUTIVE_ERRORS:
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
    raises, or it is not an HxWx3 uint8 array) is skipped and counted in ``decode_errors``; a source of
    known length is read to its end, an endless one ends after MAX_CONSECUTIVE_ERRORS failures in a row.
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


