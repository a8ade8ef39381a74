"""Soak: `edgeseg infer` on a long generated video; RSS over time, and every frame written, in order.

    nice -n 10 python benchmarks/bench_soak.py [--frames 10000] [--bundle DIR] [--size 48x64]

Without --bundle a tiny DeepLab v3+ (width 0.35, dynamic batch) is trained for one epoch on the
built-in synthetic scenes and built as an fp32 bundle (about a minute). The stream: an MJPG video
of --frames distinct frames (synthetic scenes, each shifted by its index), so consecutive frames
give different masks. `edgeseg infer BUNDLE video.avi --out OUT` runs as a child process exactly
as a user runs it; its RSS (VmRSS) and the label files written so far are sampled every 0.5 s.
Then every frame is checked: OUT/labels/frame_K.png must equal `edgeseg.load(BUNDLE)` on frame K
of the same video decoded here (a lost, duplicated or reordered frame fails), and the overlay video
must hold --frames frames. Writes benchmarks/results/soak_cpu.json and .md.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import common
from common import machine

SPEC = "synthetic:64x96"
FLAT_MB_PER_1000 = 0.5  # fixed in advance: RSS is "flat" when it grows < 0.5 MB per 1000 frames over the second half
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
             "avx512_bf16", "amx_tile", "amx_int8")


def isa_flags() -> list[str]:
    flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("flags")), [])
    return [f for f in ISA_FLAGS if f in flags]


def tiny_bundle(root: Path) -> Path:
    from edgeseg.bundle.build import BuildOptions, build_bundle
    from edgeseg.train.loop import TrainConfig, train

    ckpt = train(TrainConfig(model="deeplabv3plus_mobilenet_v2", data=SPEC, width=0.35, batch_size=8, epochs=1,
                             max_train_samples=16, max_val_samples=2, workers=0, out=root / "ckpt"),
                 log=lambda s: None).best_path
    out = root / "bundle"
    build_bundle(BuildOptions(precision="fp32", out=out, checkpoint=ckpt, dynamic="batch"), log=lambda s: None)
    return out


def make_video(path: Path, count: int, size: tuple[int, int]) -> None:
    """``count`` distinct frames: 64 synthetic scenes, frame k = scene k % 64 rolled by 3 * (k // 64) pixels."""
    import cv2

    from edgeseg.data.synthetic import SyntheticDataset

    scenes = SyntheticDataset("test", size=size, length=64)
    base = [cv2.cvtColor(scenes[i][0], cv2.COLOR_RGB2BGR) for i in range(64)]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (size[1], size[0]))
    if not writer.isOpened():
        sys.exit(f"OpenCV cannot write MJPG video here ({path})")
    for k in range(count):
        writer.write(np.ascontiguousarray(np.roll(base[k % 64], 3 * (k // 64), axis=1)))
    writer.release()


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def run_infer(bundle: Path, video: Path, out: Path, threads: int) -> tuple[list[dict], str, float]:
    """`edgeseg infer` as a child process; (samples of t / rss / labels written, its stdout, seconds)."""
    cmd = [sys.executable, "-m", "edgeseg", "infer", str(bundle), str(video), "--out", str(out),
           "--threads", str(threads)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    samples = []
    labels = out / "labels"
    while proc.poll() is None:
        rss = rss_mb(proc.pid)
        if rss is not None:
            written = sum(1 for _ in os.scandir(labels)) if labels.is_dir() else 0
            samples.append({"t": round(time.perf_counter() - t0, 2), "rss_mb": round(rss, 1), "frames": written})
        time.sleep(0.5)
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        sys.exit(f"edgeseg infer failed ({proc.returncode}): {stderr.strip()[-2000:]}")
    return samples, stdout.strip(), time.perf_counter() - t0


def check_frames(bundle: Path, video: Path, out: Path, count: int) -> dict:
    """Every label PNG against edgeseg.load on the same decoded frame; the overlay video's length."""
    import cv2
    from PIL import Image

    import edgeseg

    seg = edgeseg.load(bundle, color="BGR", threads=1)
    cap = cv2.VideoCapture(str(video))
    names = sorted(p.name for p in (out / "labels").iterdir())
    expected = [f"frame_{k:06d}.png" for k in range(count)]
    mismatched, previous, distinct = [], None, 0
    for k in range(count):
        ok, frame = cap.read()
        if not ok:
            sys.exit(f"could not decode frame {k} of {video} for the check")
        want = seg(frame)
        path = out / "labels" / f"frame_{k:06d}.png"
        if not path.is_file() or not (np.asarray(Image.open(path)) == want).all():
            mismatched.append(k)
        if previous is not None and not (previous == want).all():
            distinct += 1
        previous = want
    cap.release()
    seg.close()
    overlay = next(out.glob("*_overlay.*"))
    cap = cv2.VideoCapture(str(overlay))
    overlay_frames = 0
    while cap.grab():
        overlay_frames += 1
    cap.release()
    return {"label_files": len(names), "names_as_expected": names == expected, "mismatched_frames": mismatched[:20],
            "mismatched_count": len(mismatched), "consecutive_pairs_with_different_masks": distinct,
            "overlay_video": overlay.name, "overlay_frames": overlay_frames}


def rss_summary(samples: list[dict], count: int) -> dict:
    """RSS after the first 5 % of frames (warm), at the end, its peak, and the slope over the second half."""
    warm = [s for s in samples if s["frames"] >= 0.05 * count] or samples
    second = [s for s in samples if s["frames"] >= 0.5 * count]
    slope = None
    if len(second) >= 3:
        x = np.array([s["frames"] for s in second], float)
        y = np.array([s["rss_mb"] for s in second], float)
        slope = float(np.polyfit(x, y, 1)[0] * 1000) if np.ptp(x) > 0 else None
    return {"rss_mb_warm": warm[0]["rss_mb"], "rss_mb_end": samples[-1]["rss_mb"],
            "rss_mb_peak": max(s["rss_mb"] for s in samples), "rss_mb_min_after_warm": min(s["rss_mb"] for s in warm),
            "rss_mb_per_1000_frames_second_half": None if slope is None else round(slope, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=10_000)
    ap.add_argument("--size", default="48x64", help="Frame HxW of the generated video.")
    ap.add_argument("--bundle", type=Path, default=None, help="Bundle to run (default: a tiny one trained here).")
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads for edgeseg infer.")
    ap.add_argument("--results", type=Path, default=common.RESULTS)
    args = ap.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))

    with tempfile.TemporaryDirectory(prefix="edgeseg-soak-") as tmp:
        tmp = Path(tmp)
        bundle = args.bundle or tiny_bundle(tmp)
        video = tmp / "stream.avi"
        make_video(video, args.frames, size)
        print(f"stream: {args.frames} frames {size[0]}x{size[1]} MJPG ({video.stat().st_size / 1e6:.1f} MB); "
              f"bundle {bundle}")
        samples, summary_line, seconds = run_infer(bundle, video, tmp / "out", args.threads)
        print(summary_line)
        check = check_frames(bundle, video, tmp / "out", args.frames)
    rss = rss_summary(samples, args.frames)
    slope = rss["rss_mb_per_1000_frames_second_half"]
    rss["flat"] = slope is not None and abs(slope) < FLAT_MB_PER_1000 and rss["rss_mb_end"] - rss["rss_mb_warm"] < 20
    ok = (check["label_files"] == args.frames and check["names_as_expected"] and check["mismatched_count"] == 0
          and check["overlay_frames"] == args.frames and rss["flat"])
    print(f"{'ok' if ok else 'FAILED'}: {check}; RSS {rss}; {seconds:.0f} s")
    m = dict(machine(), isa_flags=isa_flags())
    md = (f"# Soak: `edgeseg infer` on {args.frames} generated frames (CPU)\n\n"
          f"ISA flags: {' '.join(m['isa_flags'])}. Bundle: {'tiny DeepLab v3+ x0.35 fp32 (trained 1 epoch here)' if args.bundle is None else args.bundle}, "
          f"ONNX Runtime, {args.threads} thread(s), run under `nice -n 10` on a machine shared with other jobs.\n\n"
          f"Stream: MJPG video, {args.frames} distinct frames {size[0]}x{size[1]}; `edgeseg infer` as a child process "
          f"({seconds:.0f} s wall, {args.frames / seconds:.0f} frames/s end to end including the label PNGs, each "
          "fsynced, and the overlay video).\n\n"
          f"`edgeseg infer` said: {summary_line.splitlines()[0]}\n\n"
          "| check | result |\n|---|---|\n"
          f"| label PNGs written | {check['label_files']} (names frame_000000.. in order: {check['names_as_expected']}) |\n"
          f"| label PNGs equal to edgeseg.load on the same decoded frame | {args.frames - check['mismatched_count']} / {args.frames} |\n"
          f"| consecutive frames whose masks differ (so a swap would show) | {check['consecutive_pairs_with_different_masks']} / {args.frames - 1} |\n"
          f"| overlay video frames | {check['overlay_frames']} |\n"
          f"| RSS after 5 % of the frames | {rss['rss_mb_warm']:.1f} MB |\n"
          f"| RSS at the end | {rss['rss_mb_end']:.1f} MB |\n"
          f"| RSS peak | {rss['rss_mb_peak']:.1f} MB |\n"
          f"| RSS slope over the second half | {rss['rss_mb_per_1000_frames_second_half']} MB per 1000 frames "
          f"(flat means < {FLAT_MB_PER_1000} and end - warm < 20 MB: {rss['flat']}) |\n"
          f"| verdict | {'every frame written once, in order; RSS flat' if ok else 'FAILED'} |\n")
    common.RESULTS = args.results
    common.write_results("soak_cpu", {"machine": m, "frames": args.frames, "size": size, "seconds": round(seconds, 1),
                                      "infer_summary": summary_line, "check": check, "rss": rss, "ok": ok,
                                      "samples": samples}, md)
    print(f"wrote {args.results / 'soak_cpu.json'} and .md")
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
