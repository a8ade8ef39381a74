"""Build the reference bundles (fp32, fp16, int8) on this CPU: build time and artifact sizes.

    python benchmarks/bench_build.py [--checkpoint CKPT] [--out build/reference]

The bundles land in --out (not committed: they are rebuilt from the committed checkpoint);
benchmarks/results/build_cpu.json and .md record the figures.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from common import CAMVID, REFERENCE_CKPT, REPO, machine, write_results


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", type=Path, default=REFERENCE_CKPT)
    ap.add_argument("--data", default=f"camvid:{CAMVID}")
    ap.add_argument("--out", type=Path, default=REPO / "build" / "reference")
    ap.add_argument("--calib-count", type=int, default=100)
    args = ap.parse_args()

    from edgeseg.bundle.build import BuildOptions, build_bundle

    args.out.mkdir(parents=True, exist_ok=True)
    rows, data = [], {"machine": machine(), "checkpoint": str(args.checkpoint), "bundles": {}}
    for precision in ("fp32", "fp16", "int8"):
        t = time.time()
        result = build_bundle(BuildOptions(precision=precision, out=args.out / precision, checkpoint=args.checkpoint,
                                           data=args.data, calib_count=args.calib_count), log=print)
        seconds = time.time() - t
        m = result.manifest
        sizes = {name: e["bytes"] for name, e in m["files"].items()}
        data["bundles"][precision] = {"seconds": round(seconds, 1), "files": sizes, "miou": m["metrics"]["miou"]}
        variant = m["roles"].get(precision, m["roles"]["fp32"])
        rows.append(f"| {precision} | {seconds:.0f} | {variant} {sizes[variant] / 1e6:.2f} MB | "
                    f"{sum(sizes.values()) / 1e6:.1f} MB | {m['metrics']['miou'][precision]:.2f} |")
    md = ("# Reference bundles built on this CPU (CamVid, 360x480)\n\n"
          "| precision | build s | model file | bundle total | mIoU (val, ORT) |\n|---|---|---|---|---|\n"
          + "\n".join(rows) + "\n\nBuild time includes export + parity, calibration (int8, statistics cache cold "
          "unless the same model and set were calibrated before) and the val mIoU of FP32 and the variant. No "
          "TensorRT engine here (no GPU); `edgeseg build --from DIR --backend trt` adds it on the device.\n")
    write_results("build_cpu", data, md)
    print(md)


if __name__ == "__main__":
    main()
