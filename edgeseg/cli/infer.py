"""`edgeseg infer`: a bundle on images, folders, video files, cameras and streams."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from edgeseg.backends.registry import RunnerOptions
from edgeseg.bundle.runtimes import BACKEND_CHOICES
from edgeseg.cli.group import main
from edgeseg.cli.options import runner_options
from edgeseg.errors import EdgesegError


@main.command("infer")
@click.argument("bundle_dir", type=click.Path(path_type=Path))
@click.argument("source")
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="Output folder (created with its parents). Replaces an earlier infer output or an empty folder; "
                   "anything else is refused unless --overwrite.")
@click.option("--overwrite", is_flag=True, help="Replace OUT even when it holds files an earlier infer did not write.")
@click.option("--backend", type=click.Choice(BACKEND_CHOICES), default="auto", show_default=True,
              help="auto: the TensorRT engine where it runs, else the fastest CPU path measured (see the log line).")
@click.option("--max-frames", type=click.IntRange(min=1), default=None, help="Stop after N frames.")
@click.option("--batch", type=click.IntRange(min=1), default=None,
              help="Frames per inference (default: up to 4 when the bundle's batch dim is dynamic, else its batch).")
@click.option("--no-overlay", is_flag=True,
              help="Only label PNGs (and colour masks for images): no overlays, no video.")
@click.option("--alpha", type=click.FloatRange(0, 1), default=0.5, show_default=True, help="Mask opacity in overlays.")
@click.option("--threads", default=0, show_default=True, help="Runtime threads (0: the runtime's default).")
@click.option("--queue-size", type=click.IntRange(min=1), default=4, show_default=True, help="Items per stage queue.")
@runner_options
def infer_cmd(bundle_dir: Path, source: str, out: Path, overwrite: bool, backend: str, max_frames: int | None,
              batch: int | None, no_overlay: bool, alpha: float, threads: int, queue_size: int,
              options: RunnerOptions) -> None:
    """Segment SOURCE (image, folder, video file, camera index, rtsp:// URL) with a bundle.

    Writes OUT/labels/*.png (class index per pixel) and, for images, OUT/masks and OUT/overlays;
    for video, cameras and streams an overlay video. Ctrl-C stops cleanly (outputs stay complete, exit 130);
    frames that cannot be decoded are skipped, named at the end, and the exit code is 1."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    import torch

    from edgeseg.pipeline.infer import infer

    # Per-frame resize / upsampling run in torch on small tensors inside the pipeline's own threads: its
    # OpenMP pool would only spin against ONNX Runtime's (200 frames at 40x56 here: 34 -> 110 fps with one thread).
    torch.set_num_threads(1)
    console = Console(stderr=True)
    with Progress(TextColumn("[bold]infer"), BarColumn(), TextColumn("{task.completed} frames"),
                  TextColumn("{task.fields[fps]:.1f} fps"), TimeElapsedColumn(), console=console, transient=True,
                  disable=not sys.stderr.isatty()) as bar:
        task = bar.add_task("infer", total=None, fps=0.0)

        def on_frame(done: int, total: int | None, fps: float) -> None:
            bar.update(task, completed=done, total=total, fps=fps)

        result = infer(bundle_dir, source, out, backend=backend, batch=batch, max_frames=max_frames,
                       overlays=not no_overlay, alpha=alpha, queue_size=queue_size, threads=threads,
                       overwrite=overwrite, progress=on_frame, options=options)
    s = result.stats
    if s.frames == 0 and not s.stopped:
        first = f", e.g. {s.errors[0]}" if s.errors else ""
        raise EdgesegError(f"no frame of {source} could be decoded ({s.decode_errors} tried{first}); "
                           "expected images or video OpenCV/Pillow can read; check the input")
    click.echo(f"runner: {result.choice}")
    click.echo(f"{s.frames} frames from {source} ({result.source_kind}) in {s.seconds:.1f} s: end-to-end "
               f"{s.e2e_fps:.1f} fps, model only {s.model_fps:.1f} fps ({result.backend}, batch {result.batch})")
    for note in s.notes:
        click.echo(f"note: {note}")
    click.echo(f"outputs: {result.out}" + (f", video {result.video}" if result.video else ""))
    if s.decode_errors:  # the other frames are written, but the run did not do all its work
        click.echo(f"error: {s.decode_errors} frame(s) of {source} could not be decoded and have no output (e.g. "
                   f"{s.errors[0]}); the other {s.frames} are in {result.out}; fix or remove those inputs", err=True)
    if s.stopped:
        click.echo("stopped before the end of the input; the files written are complete", err=True)
        sys.exit(130)
    if s.decode_errors:
        sys.exit(1)
