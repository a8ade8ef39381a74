"""End-to-end video FPS against model-only FPS for bundles, measured in one run on this CPU.

    python benchmarks/bench_video.py [BUNDLE ...] [--frames 300] [--threads 2]

BUNDLE defaults to build/reference/fp32 and .../int8 (made by bench_build.py). A video is generated from the
CamVid val frames (../shared/datasets/camvid/val, looped to --frames; skipped with a message when
absent), then `edgeseg infer` runs on it for each bundle exactly as the command does: decode ->
preprocess + inference (batched when the bundle allows) -> label PNGs + overlay video, three
threads with bounded queues. End-to-end FPS is frames written / wall time; model-only FPS is
frames / the sum of the runner's own latencies in the same run. Writes
benchmarks/results/video_cpu.json and .md.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import common
from common import CAMVID, REPO, machine

DEFAULT_BUNDLES = [REPO / "build" / "reference" / p for p in ("fp32", "int8")]  # from bench_build.py
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def make_video(frames_dir: Path, path: Path, count: int, fps: float) -> tuple[int, int]:
    """Write ``count`` frames (the folder's images in name order, looped) to an mp4v video; (H, W)."""
    import cv2

    images = sorted(p for p in frames_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    first = cv2.imread(str(images[0]))
    h, w = first.shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        sys.exit(f"OpenCV cannot write mp4v video here ({path}); install opencv-python-headless from PyPI")
    for i in range(count):
        frame = cv2.imread(str(images[i % len(images)]))
        writer.write(frame if frame.shape[:2] == (h, w) else cv2.resize(frame, (w, h)))
    writer.release()
    return h, w


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundles", nargs="*", type=Path, default=DEFAULT_BUNDLES)
    ap.add_argument("--frames-dir", type=Path, default=CAMVID / "val", help="Images the video is made of.")
    ap.add_argument("--frames", type=int, default=300, help="Video length in frames (the images are looped).")
    ap.add_argument("--fps", type=float, default=30.0, help="Frame rate written into the generated video.")
    ap.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads.")
    ap.add_argument("--batch", type=int, default=None, help="Frames per inference (default: edgeseg infer's).")
    ap.add_argument("--backend", default="ort")
    ap.add_argument("--results", type=Path, default=common.RESULTS, help="Folder for video_cpu.json / .md.")
    args = ap.parse_args()

    if not args.frames_dir.is_dir():
        print(f"skipped: no frames at {args.frames_dir} (the shared CamVid dataset is absent); "
              "pass --frames-dir DIR with images")
        return
    bundles = [b for b in args.bundles if (b / "manifest.json").is_file()]
    for missing in sorted(set(args.bundles) - set(bundles)):
        print(f"skipped: {missing} is not a bundle (build it with `edgeseg build ... --out {missing}`)")
    if not bundles:
        print("no bundle to measure")
        return

    from edgeseg.bundle.manifest import read_bundle
    from edgeseg.pipeline.infer import infer

    records = []
    with tempfile.TemporaryDirectory(prefix="edgeseg-bench-video-") as tmp:
        video = Path(tmp) / "camvid_val.mp4"
        h, w = make_video(args.frames_dir, video, args.frames, args.fps)
        print(f"video: {args.frames} frames {h}x{w} from {args.frames_dir}")
        for i, bundle in enumerate(bundles):
            result = infer(bundle, str(video), Path(tmp) / f"out{i}", backend=args.backend, batch=args.batch,
                           threads=args.threads)
            s, m = result.stats, read_bundle(bundle).manifest
            rec = {"bundle": str(bundle), "model": m.get("model"), "precision": m["precision"],
                   "input_size": m["preprocessing"].get("size"), "backend": result.backend, "batch": result.batch,
                   "threads": args.threads, "frames": s.frames, "decode_errors": s.decode_errors,
                   "seconds": round(s.seconds, 3), "e2e_fps": round(s.e2e_fps, 2), "model_fps": round(s.model_fps, 2),
                   "e2e_ms_per_frame": round(1000 / s.e2e_fps, 2) if s.e2e_fps else None,
                   "model_ms_per_frame": round(1000 / s.model_fps, 2) if s.model_fps else None,
                   "queue_size": s.queue_size, "queue_peaks": s.queue_peaks}
            records.append(rec)
            print(f"{bundle}: {s.frames} frames, end-to-end {s.e2e_fps:.1f} fps, model only {s.model_fps:.1f} fps "
                  f"({result.backend}, batch {result.batch})")

    rows = [f"| {r['bundle']} | {r['precision']} | {r['backend']} | {r['batch']} | {r['frames']} | "
            f"{r['e2e_fps']:.1f} | {r['model_fps']:.1f} | {100 * r['e2e_fps'] / r['model_fps']:.0f}% |"
            for r in records if r["model_fps"]]
    md = (f"# `edgeseg infer` on a video: end-to-end vs model-only FPS (CPU)\n\n"
          f"Video: {args.frames} frames {h}x{w} (mp4v) looped from {args.frames_dir}. End to end = decode, "
          "preprocess, inference, upsampling + argmax at frame size, label PNG + overlay video written, "
          "three threads with bounded queues; model only = the runner's own latency, same run.\n\n"
          "| bundle | precision | backend | batch | frames | end-to-end fps | model-only fps | e2e / model |\n"
          "|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")
    common.RESULTS = args.results
    common.write_results("video_cpu", {"machine": machine(), "video": {"frames": args.frames, "height": h, "width": w,
                                                                      "source": str(args.frames_dir)},
                                       "records": records}, md)
    print(f"wrote {args.results / 'video_cpu.json'} and .md")


if __name__ == "__main__":
    main()
