"""`edgeseg bench`: latency and mIoU across backends and precisions, with a parity report."""
from __future__ import annotations

from pathlib import Path

import click

from edgeseg.backends.registry import RunnerOptions, backend_names
from edgeseg.cli.group import main
from edgeseg.cli.options import runner_options
from edgeseg.errors import EdgesegError

TABLE_COLUMNS = [("backend", "backend"), ("precision", "precision"), ("batch", "batch"), ("mIoU", "miou"),
                 ("agree %", "agreement"), ("p50 ms", "latency_ms_p50"), ("p90 ms", "latency_ms_p90"),
                 ("p99 ms", "latency_ms_p99"), ("fps", "fps"), ("e2e fps", "e2e_fps"), ("RSS MB", "peak_rss_mb"),
                 ("% peak", "roofline_pct")]


def _ints(value: str) -> list[int]:
    try:
        out = [int(v) for v in value.split(",") if v]
        if not out or min(out) < 1:
            raise ValueError
        return out
    except ValueError:
        raise click.BadParameter(f"expected comma-separated positive integers like 1,4, got {value!r}") from None


@main.command("bench")
@click.argument("bundles", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--data", required=True)
@click.option("--split", default="val", show_default=True)
@click.option("--backends", default=",".join(backend_names()), show_default=True,
              help="Comma-separated; one missing here is skipped with the reason.")
@click.option("--batch", "batches", default="1", show_default=True, help="Comma-separated batch sizes.")
@click.option("--limit", type=int, default=None, help="Only the first N images for accuracy.")
@click.option("--min-iters", default=50, show_default=True)
@click.option("--min-seconds", default=5.0, show_default=True)
@click.option("--threads", default=0, show_default=True, help="CPU threads (0: library default).")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None)
@click.option("--csv", "csv_path", type=click.Path(path_type=Path), default=None)
@click.option("--plot", "plot_path", type=click.Path(path_type=Path), default=None)
@click.option("--parity-images", default=0, show_default=True, help="PNGs marking disagreement with PyTorch FP32.")
@click.option("--parity-dir", type=click.Path(path_type=Path), default=Path("parity"), show_default=True)
@runner_options
def bench_cmd(bundles: tuple[Path, ...], data: str, split: str, backends: str, batches: str, limit: int | None,
              min_iters: int, min_seconds: float, threads: int, json_path: Path | None, csv_path: Path | None,
              plot_path: Path | None, parity_images: int, parity_dir: Path, options: RunnerOptions) -> None:
    """Latency, memory, mIoU and parity for every bundle x backend x precision x batch available here."""
    from rich.console import Console

    from edgeseg.bench.measure import run_bench
    from edgeseg.bench.report import machine_description, write_csv, write_json, write_plot

    wanted = [b.strip() for b in backends.split(",") if b.strip()]
    unknown = [b for b in wanted if b not in backend_names()]
    if unknown:
        raise EdgesegError(f"unknown backend {unknown[0]!r}: expected a comma-separated subset of "
                           f"{', '.join(backend_names())}")
    console = Console(width=max(Console().width, 140))
    records: list[dict] = []

    def on_record(rec) -> None:
        records.append(rec.to_dict())
        what = f"{Path(rec.bundle).name} {rec.backend} {rec.precision} b{rec.batch}"
        console.print(f"{what}: skipped ({rec.skipped})" if rec.skipped else
                      f"{what}: mIoU {rec.miou:.2f}, p50 {rec.latency_ms_p50:.1f} ms, {rec.fps:.1f} fps")

    interrupted = False
    try:
        run_bench(list(bundles), data, split, wanted, _ints(batches), limit, min_iters, min_seconds, threads,
                  on_record, parity_dir if parity_images else None, parity_images, options)
    except KeyboardInterrupt:
        interrupted = True
        console.print("[yellow]interrupted: results so far[/yellow]")
    _print_table(console, records, f"edgeseg bench on {data} {split} ({machine_description()['cpu']})")
    if json_path:
        write_json(records, json_path)
    if csv_path:
        write_csv(records, csv_path)
    if plot_path:
        write_plot(records, plot_path)
    if interrupted:
        raise SystemExit(130)


def _print_table(console, records: list[dict], title: str) -> None:
    """One row per record (skipped ones say so), then why each was skipped."""
    from rich.table import Table

    table = Table(title=title)
    for heading, _ in TABLE_COLUMNS:
        table.add_column(heading, justify="right")
    skipped = []
    for r in records:
        if r["skipped"]:
            skipped.append(f"{Path(r['bundle']).name} {r['backend']} {r['precision']} batch {r['batch']}: {r['skipped']}")
            table.add_row(r["backend"], r["precision"], str(r["batch"]), "skipped", *[""] * (len(TABLE_COLUMNS) - 4))
            continue
        table.add_row(*["" if r[k] is None else f"{r[k]:.2f}" if isinstance(r[k], float) else str(r[k])
                        for _, k in TABLE_COLUMNS])
    console.print(table)
    for line in skipped:
        console.print(f"skipped: {line}")
