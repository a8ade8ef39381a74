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
``out`` follows the output-folder rule (edgeseg.out_dir): missing, empty or an earlier infer output,
which is emptied first; anything else is refused unless ``overwrite``.
Every file appears complete or not at all: PNGs are written atomically, the video is written under
a hidden name and renamed when it is closed, also after Ctrl-C / ``stop``. A frame that fails to
decode is skipped and counted; the stream goes on.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from edgeseg.pipeline.predict import BatchPredictor, resolve_batch
from edgeseg.pipeline.sinks import ImageSink, SinkGroup, VideoSink, check_infer_out, prepare_out
from edgeseg.pipeline.sources import open_source
from edgeseg.pipeline.threaded import QUEUE_SIZE, PipelineStats, run_pipeline


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
    src = open_source(source) if isinstance(source, (str, int, Path)) else source
    seg = None
    sink = None
    try:
        seg = load(bundle, backend=backend, threads=threads, verify=verify, options=options)
        n = resolve_batch(batch, seg.runner.input_spec)
        out = prepare_out(out, {"bundle": str(bundle), "source": str(source) if isinstance(source, (str, int, Path))
                                else type(source).__name__})
        kind = getattr(src, "kind", "frames")
        is_images = kind == "images"
        sinks: list = [ImageSink(out, seg.classes, seg.palette, masks=is_images, overlays=is_images and overlays,
                                 alpha=alpha)]
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
        stats = run_pipeline(src, BatchPredictor(seg), sink, batch=n, queue_size=queue_size, max_frames=max_frames,
                             stop=stop, progress=report)
    finally:
        if sink is not None:
            sink.close()
        if hasattr(src, "close"):
            src.close()
        if seg is not None:
            seg.close()
    return InferResult(stats, out, kind, seg.backend, n, video.path if video is not None else None, seg.choice)
