"""`edgeseg build`: an artifact bundle (or, with only --precision, the self-contained synthetic demo)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

from edgeseg.backends.artifacts import PRECISIONS
from edgeseg.bundle.build import BACKENDS, BuildOptions, BuildResult, build_bundle, check_build, finish_engine
from edgeseg.cli.group import main
from edgeseg.cli.info import print_bundle_summary
from edgeseg.cli.options import parse_size
from edgeseg.quantize.calibrators import CALIBRATOR_NAMES

DEMO_DATA = "synthetic"
DEMO_MODEL = dict(model="deeplabv3plus_mobilenet_v2", width=0.35, epochs=8, batch_size=16, optimizer="adamw", lr=5e-3,
                  weight_decay=1e-2)


def _quick_checkpoint(folder: Path, log: Callable[[str], None]) -> Path:
    """The demo's model: a light DeepLab v3+ trained on the built-in synthetic scenes for about a minute,
    into ``folder`` (a scratch folder: the bundle keeps its own copy)."""
    from edgeseg.train.config import TrainConfig
    from edgeseg.train.loop import train

    cfg = TrainConfig(data=DEMO_DATA, out=folder, workers=0, **DEMO_MODEL)
    log(f"no --checkpoint/--onnx: training the quick demo model ({cfg.model} x{cfg.width}, {cfg.epochs} epochs "
        f"on {DEMO_DATA})")
    return train(cfg, log=log).best_path


def _demo_build(opts: BuildOptions, log: Callable[[str], None]) -> BuildResult:
    """The demo: every option checked, the quick model trained in a scratch folder beside ``opts.out``
    (removed afterwards: nothing is left outside the bundle), then the bundle built from it."""
    from edgeseg.out_dir import scratch_dir

    check_build(opts, demo=True)  # before the minute of training
    with scratch_dir(opts.out) as scratch:
        opts.checkpoint = _quick_checkpoint(scratch, log)
        opts.source = f"demo: {DEMO_MODEL['model']} x{DEMO_MODEL['width']} trained on {DEMO_DATA}"
        return build_bundle(opts, log=log)


@main.command("build")
@click.option("--precision", type=click.Choice(PRECISIONS), default="int8", show_default=True)
@click.option("--checkpoint", type=click.Path(path_type=Path), default=None)
@click.option("--onnx", "onnx_path", type=click.Path(path_type=Path), default=None, help="FP32 ONNX with edgeseg metadata.")
@click.option("--data", default=None, help="Dataset spec: calibration (train split) and build-time mIoU (val split).")
@click.option("--backend", type=click.Choice(list(BACKENDS)), default="auto", show_default=True,
              help="auto: time every CPU runtime here (and build a TensorRT engine where TensorRT is); a CPU runtime: "
                   "only that one; trt: the engine.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Bundle folder (default build/PRECISION; created with its parents). Replaces an earlier bundle "
                   "or an empty folder; anything else is refused unless --overwrite.")
@click.option("--overwrite", is_flag=True, help="Replace OUT even when it holds files that are not an edgeseg bundle's.")
@click.option("--from", "from_dir", type=click.Path(path_type=Path), default=None,
              help="Existing bundle: add the TensorRT engine on the device (with --backend trt).")
@click.option("--input-size", default=None, help="Export HxW (default: the checkpoint's).")
@click.option("--dynamic", type=click.Choice(["batch", "hw", "both"]), default=None)
@click.option("--calib-count", default=64, show_default=True)
@click.option("--calibrator", type=click.Choice(CALIBRATOR_NAMES), default="entropy",
              show_default=True)
@click.option("--max-miou-drop", type=float, default=None)
@click.option("--val-limit", type=int, default=None, help="Evaluate on the first N val images only.")
@click.option("--dla-core", type=int, default=None)
def build_cmd(precision: str, checkpoint: Path | None, onnx_path: Path | None, data: str | None, backend: str,
              out: Path | None, overwrite: bool, from_dir: Path | None, input_size: str | None, dynamic: str | None, calib_count: int,
              calibrator: str, max_miou_drop: float | None, val_limit: int | None, dla_core: int | None) -> None:
    """Build an artifact bundle; with only --precision, the self-contained synthetic demo."""
    from rich.console import Console

    console = Console()
    log = console.print
    if from_dir is not None:
        result = finish_engine(from_dir, dla_core=dla_core, log=log, backend=None if backend == "auto" else backend)
    else:
        demo = checkpoint is None and onnx_path is None
        opts = BuildOptions(precision=precision, out=out or Path("build") / precision, checkpoint=checkpoint,
                            onnx=onnx_path, data=data or (DEMO_DATA if demo else None), backend=backend,
                            input_size=parse_size(input_size), dynamic=dynamic, calib_count=calib_count,
                            calibrator=calibrator, max_miou_drop=max_miou_drop, val_limit=val_limit,
                            dla_core=dla_core, overwrite=overwrite)
        result = _demo_build(opts, log) if demo else build_bundle(opts, log=log)
    print_bundle_summary(console, result.out, result.manifest, result.seconds)
    for note in result.notes:
        console.print(f"[yellow]note:[/yellow] {note}")
