"""`edgeseg doctor`: what this machine has and whether each edgeseg path works on it."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from edgeseg.cli.group import main


@main.command("doctor")
@click.option("--keep", "keep", type=click.Path(path_type=Path), default=None,
              help="Keep the tiny model's ONNX files and engines in this folder.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of the table.")
def doctor_cmd(keep: Path | None, as_json: bool) -> None:
    """Check Python, PyTorch/CUDA, GPU, TensorRT, pycuda, ONNX Runtime, DLA and JetPack, then build and run
    FP32 / FP16 / INT8 engines of a tiny model and compare them with ONNX Runtime on CPU. Exit 1 when a
    check fails."""
    from edgeseg.doctor import FAIL, PASS, run_doctor

    report = run_doctor(keep)
    if as_json:
        click.echo(json.dumps(report.to_dict()))
    else:
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        table = Table(title="edgeseg doctor")
        for col in ("check", "result", "seconds", "detail", "fix"):
            table.add_column(col, overflow="fold")
        style = {PASS: "green", FAIL: "bold red"}
        for c in report.checks:
            table.add_row(escape(c.name), f"[{style.get(c.status, 'yellow')}]{c.status}[/]", f"{c.seconds:.2f}",
                          escape(c.detail), escape(c.fix))
        Console(width=max(160, Console().width)).print(table)
        counts = {s: sum(c.status == s for c in report.checks) for s in ("PASS", "FAIL", "SKIPPED")}
        click.echo(", ".join(f"{n} {s}" for s, n in counts.items()))
    if report.failed:
        sys.exit(1)
