"""`edgeseg check`: lint an ONNX file for the TensorRT parser, on CPU."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from edgeseg.backends.trt_api import RELEASE_LINES
from edgeseg.cli.group import main


@main.command("check")
@click.argument("onnx_path", type=click.Path(path_type=Path))
@click.option("--trt", "trt_version", type=click.Choice(RELEASE_LINES), default="10", show_default=True,
              help="TensorRT version whose ONNX parser to check against.")
@click.option("--dla", is_flag=True, help="Also check DLA restrictions.")
@click.option("--json", "as_json", is_flag=True, help="Print findings as JSON.")
def check_cmd(onnx_path: Path, trt_version: str, dla: bool, as_json: bool) -> None:
    """Lint an ONNX file for the TensorRT parser on CPU; exit code 1 when errors are found."""
    from dataclasses import asdict

    from edgeseg.backends.trt_lint import check_onnx

    findings = check_onnx(onnx_path, trt_version, dla=dla)
    errors = sum(f.severity == "error" for f in findings)
    if as_json:
        click.echo(json.dumps([asdict(f) for f in findings]))
    elif not findings:
        click.echo(f"{onnx_path}: no findings for TensorRT {trt_version}{' DLA' if dla else ''}")
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"{onnx_path}: TensorRT {trt_version}{' DLA' if dla else ''}: {errors} error(s), "
                            f"{len(findings) - errors} warning(s)")
        for col in ("severity", "rule", "node", "message", "fix"):
            table.add_column(col)
        for f in findings:
            table.add_row(f.severity, f.rule, f.node, f.message, f.fix)
        Console().print(table)
    if errors:
        sys.exit(1)
