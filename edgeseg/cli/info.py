"""`edgeseg info`: a bundle's manifest, readably (and its files checked)."""
from __future__ import annotations

import json
from pathlib import Path

import click

from edgeseg.cli.group import main


def print_bundle_summary(console, out: Path, manifest: dict, seconds: float) -> None:
    """The bundle's files and roles, mIoU, latency, CPU runtime paths and engine (build and info print it)."""
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
    print_bundle_summary(console, bundle_dir, m, m.get("build", {}).get("seconds", 0))
