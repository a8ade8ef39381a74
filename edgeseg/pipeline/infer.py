"""`edgeseg infer`: a bundle on images, folders, video files, cameras and RTSP streams.

    result = infer("bundle/", "clip.mp4", Path("out/"))   # labels/*.png + clip_overlay.mp4
    result.stats.e2e_fps, result.stats.model_fps

Three stages overlap, each a thread joined by a bounded queue (``queue_size`` items), so memory
stays flat however long the stream and frames stay in order:

    decode (source -> RGB frames) -> preprocess + infer + upsample/argmax (batched) -> encode (files)

Outputs under ``out``: ``labels/NAME.png`` (class index per pixel, 8-bit grey, frame size) for
every frame; for image inputs also ``masks/NAME.png`` (palette colours) and ``overlays/NAME.png``
(blend + legend); for video, camera and stream inputs ``STEM_overlay.mp4`` (or ``.avi``) instead;
and ``edgeseg-infer.json`` (bundle and source), which marks the folder as an infer output.
``out`` follows the output-folder rule (edgeseg.out_dir): missing, empty or an earlier infer output
(exactly the files its marker lists), which is emptied first; anything else is refused unless
``overwrite``; the bundle and the source never lie inside it, whatever ``overwrite`` says. Two frames
that map to one output name are refused (DuplicateOutputName), never written over each other.
Every file appears complete or not at all: PNGs are written atomically, the video is written under
a hidden name and renamed when it is closed, also after Ctrl-C / ``stop``. A frame that fails to
decode is skipped and counted (``stats.decode_errors``); the source goes on.
"""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from edgeseg.errors import EdgesegError
from edgeseg.out_dir import check_inputs_outside
from edgeseg.pipeline.predict import BatchPredictor, resolve_batch
from edgeseg.pipeline.sinks import (
    DuplicateOutputName,
    ImageSink,
    SinkGroup,
    VideoSink,
    check_infer_out,
    prepare_out,
    record_outputs,
)
from edgeseg.pipeline.sources import open_source
from edgeseg.pipeline.threaded import QUEUE_SIZE, PipelineStats, is_finite, run_pipeline


@dataclass
class InferResult:
    stats: PipelineStats
    out: Path
    source_kind: str
    backend: str
    batch: int
    video: Path | None  # the overlay video, for video / camera / stream inputs
    choice: str = ""  # which runner the bundle loaded with, and why


def infer(bundle: str | Path, source: str | int | Iterable, out: str | Path, *, backend: str = "auto",
          batch: int | None = None, max_frames: int | None = None, overlays: bool = True, alpha: float = 0.5,
          queue_size: int = QUEUE_SIZE, threads: int = 0, verify: bool = True, overwrite: bool = False,
          stop: threading.Event | None = None,
          progress: Callable[[int, int | None, float], None] | None = None, options=None) -> InferResult:
    """Segment every frame of ``source`` (see ``open_source``) with the bundle and write the outputs
    described in the module docstring under ``out``. ``progress(done, total_or_None, fps)``."""
    from edgeseg.bundle.segmenter import load

    out = check_infer_out(out, overwrite)
    check_inputs_outside(out, {"bundle": bundle, "input": _source_path(source)})
    src = open_source(source) if isinstance(source, (str, int, Path)) else source
    seg = None
    sink = None
    about = {"bundle": str(bundle), "source": str(source) if isinstance(source, (str, int, Path))
             else type(source).__name__}
    try:
        seg = load(bundle, backend=backend, threads=threads, verify=verify, options=options)
        n = resolve_batch(batch, seg.runner.input_spec)
        out = prepare_out(out, about)
        kind = getattr(src, "kind", "frames")
        is_images = kind == "images"
        image_sink = ImageSink(out, seg.classes, seg.palette, masks=is_images, overlays=is_images and overlays,
                               alpha=alpha, record=is_finite(src))
        sinks: list = [image_sink]
        video = None
        if not is_images and overlays:
            video = VideoSink(out, getattr(src, "stem", "frames"), getattr(src, "fps", None), seg.classes,
                              seg.palette, alpha)
            sinks.append(video)
        sink = SinkGroup(sinks)
        total = getattr(src, "total", None)
        if max_frames is not None and total is not None:
            total = min(total, max_frames)
        report = (lambda done, fps: progress(done, total, fps)) if progress else None
        try:
            stats = run_pipeline(src, BatchPredictor(seg), sink, batch=n, queue_size=queue_size,
                                 max_frames=max_frames, stop=stop, progress=report)
        except DuplicateOutputName as e:
            raise _named_duplicate(e, src) from None
    finally:
        if sink is not None:
            sink.close()
            with contextlib.suppress(OSError):  # unrecorded, the next run falls back to the file patterns
                record_outputs(out, about, image_sink.names, video.path if video is not None else None)
        if hasattr(src, "close"):
            src.close()
        if seg is not None:
            seg.close()
    return InferResult(stats, out, kind, seg.backend, n, video.path if video is not None else None, seg.choice)


def _source_path(source) -> Path | None:
    """The file or folder ``source`` reads (None for a camera index, a URL or frames in memory)."""
    if not isinstance(source, (str, Path)) or str(source).isdigit() or "://" in str(source):
        return None
    return Path(source)


def _named_duplicate(e: DuplicateOutputName, src) -> EdgesegError:
    """``e`` naming the input file, for a source of files."""
    paths = getattr(src, "paths", None)
    if not paths or not 0 <= e.index < len(paths):
        return e
    return EdgesegError(f"input {paths[e.index]} maps to the output labels/{e.name}.png that an earlier input of "
                        "this run already wrote, so one would replace the other; rename one of the inputs")
