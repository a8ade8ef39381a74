"""Peak RSS and time of the INT8 statistics pass against input size, bounded vs all-at-once exposure.

    nice -n 10 python benchmarks/bench_calib_memory.py [--images 8] [--sizes 360x480,720x960,1024x2048]

For each size: export the reference checkpoint at that size (fused, static shape), then in a fresh
process per mode collect the activation statistics of the first ``--images`` images of the committed
calibration manifest (CamVid train, resized to the size) and record that process's peak RSS (VmHWM)
and wall time. Modes: ``bounded`` (default --max-exposed-mb, the shipped setting) and ``unbounded``
(every activation exposed at once, the old pass; skipped above --unbounded-max-pixels, where it needs
more memory than this machine has to spare). Writes benchmarks/results/calib_memory_cpu.json / .md.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import CAMVID, REFERENCE_CKPT, REPO, machine, write_results

MANIFEST = REPO / "calibration" / "camvid-train-100-e44c1d0e.json"


def child(onnx: str, size: str, images: int, max_exposed_mb: float | None, threads: int) -> None:
    import dataclasses

    from edgeseg.bench.measure import peak_rss_mb
    from edgeseg.quantize.calib_set import iter_calibration_inputs, load_manifest
    from edgeseg.quantize.histograms import collect_stats

    manifest = load_manifest(MANIFEST)
    h, w = (int(v) for v in size.split("x"))
    pre = dataclasses.replace(manifest.preprocessing, size=(h, w))
    inputs = (x for _, x in zip(range(images), iter_calibration_inputs(manifest, pre, CAMVID)))
    t = time.time()
    stats = collect_stats(onnx, inputs, threads=threads, max_exposed_mb=max_exposed_mb)
    print(json.dumps({"seconds": time.time() - t, "peak_rss_mb": peak_rss_mb(), "tensors": len(stats)}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--sizes", default="360x480,720x960,1024x2048")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--unbounded-max-pixels", type=int, default=720 * 960)
    ap.add_argument("--previous", type=Path, default=None,
                    help="Also report the rows printed by an earlier run of this script (its stdout), e.g. when a "
                         "large size is re-run alone with fewer images.")
    ap.add_argument("--child", nargs=3, metavar=("ONNX", "SIZE", "MAX_EXPOSED_MB"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        onnx, size, mb = args.child
        child(onnx, size, args.images, None if mb == "none" else float(mb), args.threads)
        return

    from edgeseg.export.onnx_export import export_onnx
    from edgeseg.models.checkpoint import load_checkpoint
    from edgeseg.quantize.histograms import DEFAULT_MAX_EXPOSED_MB

    ckpt = load_checkpoint(REFERENCE_CKPT)
    work = Path(tempfile.mkdtemp(prefix="edgeseg-calibmem-"))
    rows = []
    if args.previous:
        import ast

        rows += [ast.literal_eval(line) for line in args.previous.read_text().splitlines() if line.startswith("{'size'")]
    for size in args.sizes.split(","):
        h, w = (int(v) for v in size.split("x"))
        onnx = work / f"ref-{size}.onnx"
        export_onnx(ckpt.build(), onnx, input_size=(h, w), metadata=ckpt.export_metadata())
        modes = [("bounded", str(DEFAULT_MAX_EXPOSED_MB))]
        if h * w <= args.unbounded_max_pixels:
            modes.append(("unbounded", "none"))
        for mode, mb in modes:
            out = subprocess.run([sys.executable, __file__, "--child", str(onnx), size, mb, "--images",
                                  str(args.images), "--threads", str(args.threads)],
                                 capture_output=True, text=True, check=True)
            row = {"size": size, "mode": mode, "max_exposed_mb": mb, "images": args.images,
                   **json.loads(out.stdout.strip().splitlines()[-1])}
            rows.append(row)
            print(row, flush=True)
    for r in rows:
        r.setdefault("images", 8)  # rows of runs before the count was recorded per row: the default count
    results = {"machine": machine(), "threads": args.threads, "rows": rows,
               "manifest": str(MANIFEST.relative_to(REPO))}
    def what(r: dict) -> str:
        return "all tensors at once" if r["mode"] == "unbounded" else f"<= {r['max_exposed_mb']} MB exposed"

    table = "\n".join(f"| {r['size']} | {r['mode']} ({what(r)}) | {r['images']} | {r['peak_rss_mb']:.0f} "
                      f"| {r['seconds']:.1f} | {r['seconds'] / r['images']:.2f} |" for r in rows)
    md = f"""# INT8 statistics pass: peak memory and time vs input size (reference DeepLab v3+ MobileNetV2)

The first images of `{results['manifest']}` (CamVid train) resized to each size, ONNX Runtime CPU,
{args.threads} threads, one fresh process per row (peak RSS = the process's VmHWM, including Python,
ONNX Runtime and the model). `bounded` is the shipped pass (graph cut into consecutive pieces whose
exposed activations fit the budget); `unbounded` exposes every activation of an image at once (the
previous pass; not run at 1024x2048, where it would need far more than this shared machine has free).

| input | pass | images | peak RSS (MB) | time (s) | s / image |
|---|---|---|---|---|---|
{table}

Times include session creation and were taken on a 2-core machine shared with other jobs (load
average 10-15 during these runs): read them as orders of magnitude, not as a speed benchmark. The
peak is reached on the first image (every image has the same activation sizes), so fewer images at
1024x2048 do not understate it.

Both passes give identical statistics (`tests/quantize/test_quantize.py::test_bounded_statistics_equal_the_unbounded_pass`).
"""
    write_results("calib_memory_cpu", results, md)
    print(md)


if __name__ == "__main__":
    main()
