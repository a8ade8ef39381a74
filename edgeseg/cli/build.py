"""`edgeseg build` and `edgeseg info`: artifact bundles."""
from __future__ import annotations

import json
from pathlib import Path

import click

from edgeseg.bundle.build import BACKENDS
from edgeseg.cli.group import main, parse_size

DEMO_DATA = "synthetic"
DEMO_MODEL = dict(model="deeplabv3plus_mobilenet_v2", width=0.35, epochs=8, batch_size=16, optimizer="adamw", lr=5e-3,
                  weight_decay=1e-2)


def _quick_checkpoint(out: Path, log) -> Path:
    """The demo's model: a light DeepLab v3+ trained on the built-in synthetic scenes for about a minute."""
    from edgeseg.train.loop import TrainConfig, train

    cfg = TrainConfig(data=DEMO_DATA, out=out / "quick-model", workers=0, **DEMO_MODEL)
    log(f"no --checkpoint/--onnx: training the quick demo model ({cfg.model} x{cfg.width}, {cfg.epochs} epochs "
        f"on {DEMO_DATA})")
    return train(cfg, log=log).best_path


@main.command("build")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default="int8", show_default=True)
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
@click.option("--calibrator", type=click.Choice(["entropy", "percentile", "mse", "minmax"]), default="entropy",
              show_default=True)
@click.option("--max-miou-drop", type=float, default=None)
@click.option("--val-limit", type=int, default=None, help="Evaluate on the first N val images only.")
@click.option("--dla-core", type=int, default=None)
def build_cmd(precision: str, checkpoint: Path | None, onnx_path: Path | None, data: str | None, backend: str,
              out: Path | None, overwrite: bool, from_dir: Path | None, input_size: str | None, dynamic: str | None, calib_count: int,
              calibrator: str, max_miou_drop: float | None, val_limit: int | None, dla_core: int | None) -> None:
    """Build an artifact bundle; with only --precision, the self-contained synthetic demo."""
    from rich.console import Console

    from edgeseg.bundle.build import BuildOptions, build_bundle, finish_engine

    console = Console()
    log = console.print
    if from_dir is not None:
        result = finish_engine(from_dir, dla_core=dla_core, log=log)
    else:
        from edgeseg.bundle.manifest import check_bundle_out
        from edgeseg.io_utils import make_dirs

        out = check_bundle_out(out or Path("build") / precision, overwrite)  # before the demo's training
        make_dirs(out.parent)
        if checkpoint is None and onnx_path is None:
            checkpoint = _quick_checkpoint(out.parent, log)
            data = data or DEMO_DATA
        result = build_bundle(BuildOptions(precision=precision, out=out, checkpoint=checkpoint, onnx=onnx_path,
                                           data=data, backend=backend, input_size=parse_size(input_size), dynamic=dynamic,
                                           calib_count=calib_count, calibrator=calibrator,
                                           max_miou_drop=max_miou_drop, val_limit=val_limit, dla_core=dla_core,
                                           overwrite=overwrite),
                              log=log)
    _print_summary(console, result.out, result.manifest, result.seconds)
    for note in result.notes:
        console.print(f"[yellow]note:[/yellow] {note}")


def _print_summary(console, out: Path, manifest: dict, seconds: float) -> None:
    from rich.table import Table

    table = Table(title=f"bundle {out} ({manifest['precision']}, built in {seconds:.0f} s)")
    table.add_column("file", no_wrap=True)
    table.add_column("role")
    table.add_column("MB", justify="right")
    roles = {v: k for k, v in manifest.get("roles", {}).items()}
    for name, entry in manifest["files"].items():
        table.add_row(name, roles.get(name, ""), f"{entry['bytes'] / 1e6:.2f}")
    console.print(table)
    metrics = manifest.get("metrics") or {}
    if metrics.get("miou"):
        scores = ", ".join(f"{k} {v:.2f}" for k, v in metrics["miou"].items())
        console.print(f"mIoU on {metrics['data']} {metrics['split']} ({metrics['images']} images, ONNX Runtime): {scores}")
    if metrics.get("latency_ms_median"):
        lat = ", ".join(f"{k} {v:.1f} ms" for k, v in metrics["latency_ms_median"].items())
        console.print(f"latency (ONNX Runtime CPU, batch 1, median of {metrics['latency_runs']}): {lat}")
    runtime = manifest.get("runtime") or {}
    if runtime.get("paths"):
        sel = runtime["selection"]
        paths = ", ".join(f"{p['path']} {p['latency_ms_median']:.1f} ms ({-p['miou_drop']:+.2f} mIoU)"
                          for p in sorted(runtime["paths"], key=lambda p: p["latency_ms_median"]))
        console.print(f"CPU runtimes on {runtime['machine']['cpu']} (mIoU vs FP32 on {sel['images']} {sel['split']} "
                      f"images, budget {sel['max_miou_drop']}): {paths}")
    engine = manifest.get("engine")
    console.print(f"TensorRT engine: {engine['trt_version']} / sm {engine['compute_capability']}" if engine
                  else "TensorRT engine: none (no TensorRT/GPU here)")


@main.command("info")
@click.argument("bundle_dir", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True)
@click.option("--verify/--no-verify", default=True, show_default=True, help="Check file hashes.")
def info_cmd(bundle_dir: Path, as_json: bool, verify: bool) -> None:
    """Print a bundle's manifest readably (and check its files)."""
    from rich.console import Console

    from edgeseg.bundle.manifest import read_bundle, verify_bundle

    bundle = read_bundle(bundle_dir)
    if verify:
        verify_bundle(bundle)
    if as_json:
        click.echo(json.dumps(bundle.manifest, indent=1))
        return
    m = bundle.manifest
    console = Console()
    pre = m["preprocessing"]
    console.print(f"[bold]{bundle_dir}[/bold]: {m.get('model')} {m['precision']}, edgeseg {m.get('edgeseg_version')}"
                  f"{', files verified' if verify else ''}")
    console.print(f"classes ({len(m['classes'])}): {', '.join(m['classes'])}")
    console.print(f"input: {pre.get('size')} {pre['channel_order']}, (x * {pre['scale']:.6g} - {pre['mean']}) / {pre['std']}")
    if m.get("calibration"):
        c = m["calibration"]
        console.print(f"calibration: {c['count']} images ({c['calibrator']}), set sha256 {c['manifest_sha256'][:12]}")
    _print_summary(console, bundle_dir, m, m.get("build", {}).get("seconds", 0))
