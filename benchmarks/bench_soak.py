"""Soak: `edgeseg infer` on a long generated video; RSS over time, and every frame written, in order.

    nice -n 10 python benchmarks/bench_soak.py [--frames 10000] [--bundle DIR] [--size 48x64]

Without --bundle an untrained DeepLab v3+ x0.35 is exported at --input-size and built as an fp32
bundle. The stream: an MJPG video of --frames distinct frames (64 synthetic scenes in turn, each
round shifted by 3 more pixels), so consecutive frames look different. `edgeseg infer BUNDLE video.avi --out OUT` runs as a child process exactly
as a user runs it; its RSS (VmRSS) and the label files written so far are sampled every 0.5 s.
Then every frame is checked: OUT/labels/frame_K.png must exist and equal `edgeseg.load(BUNDLE)` on
frame K of the same video decoded here, and frame K of the overlay video (which shows the input
frame under the mask) must be closer to the overlay of input K than to those of inputs K-1 and K+1
(a lost, duplicated or reordered frame fails even when the masks look alike). Writes benchmarks/results/soak_cpu.json and .md.
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


def tiny_bundle(root: Path, size: tuple[int, int]) -> Path:
    """An untrained DeepLab v3+ x0.35 exported with explicit preprocessing at ``size`` (dynamic batch) and
    built as an fp32 bundle (seconds, no training): the soak measures the pipeline, not accuracy."""
    import torch

    from edgeseg.bundle.build import BuildOptions, build_bundle
    from edgeseg.data import Preprocessing
    from edgeseg.export.onnx_export import export_onnx
    from edgeseg.models import ModelConfig, build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig("deeplabv3plus_mobilenet_v2", 8, width=0.35)).eval()
    onnx = root / "random.onnx"
    export_onnx(model, onnx, input_size=size, dynamic="batch",
                metadata={"model": "deeplabv3plus_mobilenet_v2", "preprocessing": Preprocessing(size=size)})
    out = root / "bundle"
    build_bundle(BuildOptions(precision="fp32", out=out, onnx=onnx), log=lambda s: None)
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
    """Every label PNG against edgeseg.load on the same decoded frame; every overlay video frame against
    the overlays of its input frame and of the two neighbouring ones."""
    import cv2
    from PIL import Image

    import edgeseg
    from edgeseg.pipeline.overlay import overlay

    seg = edgeseg.load(bundle, threads=1)
    names = sorted(p.name for p in (out / "labels").iterdir())
    expected_names = [f"frame_{k:06d}.png" for k in range(count)]
    overlay_path = next(out.glob("*_overlay.*"))
    source, written = cv2.VideoCapture(str(video)), cv2.VideoCapture(str(overlay_path))

    def next_input(k: int):
        ok, bgr = source.read()
        if not ok:
            return None
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        labels = seg(rgb)
        return labels, overlay(rgb, labels, seg.classes, seg.palette).astype(np.int16)

    window = [None, next_input(0), next_input(1)]  # inputs k-1, k, k+1
    label_mismatch, order_mismatch, distinct, overlay_frames = [], [], 0, 0
    for k in range(count):
        if window[1] is None:
            sys.exit(f"could not decode input frame {k} of {video} for the check")
        labels, expected = window[1]
        path = out / "labels" / f"frame_{k:06d}.png"
        if not path.is_file() or not (np.asarray(Image.open(path)) == labels).all():
            label_mismatch.append(k)
        ok, bgr = written.read()
        if ok:
            overlay_frames += 1
            got = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)[: expected.shape[0], : expected.shape[1]].astype(np.int16)
            dist = {j: float(np.abs(got - w[1]).mean()) for j, w in zip((k - 1, k, k + 1), window) if w is not None}
            if min(dist, key=dist.get) != k:
                order_mismatch.append(k)
        else:
            order_mismatch.append(k)
        if window[2] is not None and not (window[2][0] == labels).all():
            distinct += 1
        window = [window[1], window[2], next_input(k + 2)]
    while written.grab():
        overlay_frames += 1
    source.release()
    written.release()
    seg.close()
    return {"label_files": len(names), "names_as_expected": names == expected_names,
            "label_mismatched_count": len(label_mismatch), "label_mismatched_frames": label_mismatch[:20],
            "overlay_order_mismatched_count": len(order_mismatch), "overlay_order_mismatched": order_mismatch[:20],
            "consecutive_pairs_with_different_masks": distinct, "overlay_video": overlay_path.name,
            "overlay_frames": overlay_frames}


def rss_summary(samples: list[dict], count: int) -> dict:
    """RSS while frames stream: after the first 5 % (warm), at the last sample before the end, its peak,
    and the slope over the second half; then the most RSS while the command closes its outputs."""
    streaming = [s for s in samples if s["rss_mb"] > 0 and 0 < s["frames"] < count]
    warm = [s for s in streaming if s["frames"] >= 0.05 * count] or streaming
    second = [s for s in streaming if s["frames"] >= 0.5 * count]
    slope = None
    if len(second) >= 3:
        x = np.array([s["frames"] for s in second], float)
        y = np.array([s["rss_mb"] for s in second], float)
        slope = float(np.polyfit(x, y, 1)[0] * 1000) if np.ptp(x) > 0 else None
    closing = [s["rss_mb"] for s in samples if s["frames"] >= count]
    return {"samples_streaming": len(streaming), "rss_mb_warm": warm[0]["rss_mb"], "frames_at_warm": warm[0]["frames"],
            "rss_mb_end": streaming[-1]["rss_mb"], "frames_at_end": streaming[-1]["frames"],
            "rss_mb_peak": max(s["rss_mb"] for s in streaming),
            "rss_mb_per_1000_frames_second_half": None if slope is None else round(slope, 3),
            "rss_mb_while_closing": max(closing) if closing else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=10_000)
    ap.add_argument("--size", default="40x56", help="Frame HxW of the generated video.")
    ap.add_argument("--input-size", default="32x48", help="Network input HxW of the generated bundle.")
    ap.add_argument("--bundle", type=Path, default=None, help="Bundle to run (default: a tiny one trained here).")
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads for edgeseg infer.")
    ap.add_argument("--results", type=Path, default=common.RESULTS)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)  # as edgeseg infer does: the checks run torch on tiny tensors
    size = tuple(int(v) for v in args.size.split("x"))
    input_size = tuple(int(v) for v in args.input_size.split("x"))

    with tempfile.TemporaryDirectory(prefix="edgeseg-soak-") as tmp:
        tmp = Path(tmp)
        bundle = args.bundle or tiny_bundle(tmp, input_size)
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
    ok = (check["label_files"] == args.frames and check["names_as_expected"] and check["label_mismatched_count"] == 0
          and check["overlay_order_mismatched_count"] == 0 and check["overlay_frames"] == args.frames and rss["flat"])
    print(f"{'ok' if ok else 'FAILED'}: {check}; RSS {rss}; {seconds:.0f} s")
    m = dict(machine(), isa_flags=isa_flags())
    md = (f"# Soak: `edgeseg infer` on {args.frames} generated frames (CPU)\n\n"
          f"ISA flags: {' '.join(m['isa_flags'])}. Bundle: {f'untrained DeepLab v3+ x0.35 fp32 at {input_size[0]}x{input_size[1]}, dynamic batch' if args.bundle is None else args.bundle}, "
          f"ONNX Runtime, {args.threads} thread(s), run under `nice -n 10` on a machine shared with other jobs.\n\n"
          f"Stream: MJPG video, {args.frames} distinct frames {size[0]}x{size[1]}; `edgeseg infer` as a child process "
          f"({seconds:.0f} s wall, {args.frames / seconds:.0f} frames/s end to end including the label PNGs, each "
          "fsynced, and the overlay video).\n\n"
          f"`edgeseg infer` said: {summary_line.splitlines()[0]}\n\n"
          "| check | result |\n|---|---|\n"
          f"| label PNGs written | {check['label_files']} (names frame_000000.. in order: {check['names_as_expected']}) |\n"
          f"| label PNGs equal to edgeseg.load on the same decoded frame | {args.frames - check['label_mismatched_count']} / {args.frames} |\n"
          f"| consecutive frames whose masks differ | {check['consecutive_pairs_with_different_masks']} / {args.frames - 1} "
          "(an untrained model: masks alike, so order is proven by the overlay frames below) |\n"
          f"| overlay video frames | {check['overlay_frames']} |\n"
          f"| overlay frame K closest to input K (not K-1, K+1) | {args.frames - check['overlay_order_mismatched_count']} / {args.frames} |\n"
          f"| RSS after {rss['frames_at_warm']} frames (warm) | {rss['rss_mb_warm']:.1f} MB |\n"
          f"| RSS after {rss['frames_at_end']} frames (last sample while streaming) | {rss['rss_mb_end']:.1f} MB |\n"
          f"| RSS peak while streaming | {rss['rss_mb_peak']:.1f} MB |\n"
          f"| RSS while closing the outputs (after the last frame) | {rss['rss_mb_while_closing']} MB |\n"
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
