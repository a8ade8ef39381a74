"""Native runtime vs Python, per frame, same bundle, same backend (OpenVINO CPU), interleaved in one run.

    python benchmarks/bench_native.py --bundle build/reference/fp32 --bundle build/reference/int8

What is compared, per frame of CamVid val (360x480 PNG files, the network size of the reference model):
  native  = `edgeseg-native` (C++): libpng decode -> preprocess -> OpenVINO infer -> bilinear + argmax;
            stage times from its --timings file (second pass over the frames; the first warms up).
  python  = edgeseg.load(bundle) with its runner replaced by OpenVINO from Python on the same ONNX with
            the same settings (the Python package has no OpenVINO backend yet): PIL decode (as
            `edgeseg infer` reads images) -> edgeseg's preprocess -> OpenVINO infer -> edgeseg's postprocess.
  end to end = decode + preprocess + infer + postprocess (writing the label PNG excluded on both sides);
  overhead   = end to end - infer. Target: native overhead <= half of Python's (median ratio).
Rounds alternate native and Python blocks (ABBA order) so machine noise hits both alike; the ratio is
of the medians over all rounds of this one run. p90/p50 are printed to spot interference.
Without --bundle, the reference FP32 bundle is built first (edgeseg build, about a minute).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "native" / "python"))

from common import CAMVID, REFERENCE_CKPT, REPO, machine, write_results  # noqa: E402
from edgeseg_native import build_native, python_segmenter  # noqa: E402

STAGES = ("decode", "preprocess", "infer", "postprocess")
ISA = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8")


def isa_flags() -> list[str]:
    flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("flags")), [])
    return [f for f in ISA if f in flags]


def native_block(app: Path, bundle: Path, frames: list[Path], work: Path) -> list[dict]:
    timings = work / "native.json"
    done = subprocess.run([str(app), str(bundle), *map(str, frames), "--out", str(work / "out"), "--no-overlays",
                           "--repeat", "2", "--timings", str(timings)], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"edgeseg-native failed: {done.stderr.strip()}")
    rows = json.loads(timings.read_text())["frames"][len(frames):]  # the second, warm pass
    return [{"decode": r["decode_ms"], "preprocess": r["preprocess_ms"], "infer": r["infer_ms"],
             "postprocess": r["postprocess_ms"]} for r in rows]


class PythonSide:
    def __init__(self, bundle: Path) -> None:
        self.seg, self.runner = python_segmenter(bundle)
        self.infer_ms = 0.0
        inner = self.runner.infer

        def timed(x):
            t = time.perf_counter()
            out = inner(x)
            self.infer_ms = (time.perf_counter() - t) * 1000
            return out

        self.seg.runner.infer = timed

    def block(self, frames: list[Path]) -> list[dict]:
        rows = []
        for path in frames:
            t0 = time.perf_counter()
            with Image.open(path) as im:
                rgb = np.asarray(im.convert("RGB"))
            t1 = time.perf_counter()
            self.seg(rgb)
            t2 = time.perf_counter()
            seg_ms = (t2 - t1) * 1000
            # pre + post = everything Segmenter.__call__ does besides the runner's infer
            rows.append({"decode": (t1 - t0) * 1000, "preprocess": seg_ms - self.infer_ms, "infer": self.infer_ms,
                         "postprocess": 0.0})
        return rows


def summarize(rows: list[dict]) -> dict:
    arr = {k: np.array([r[k] for r in rows]) for k in STAGES}
    e2e = sum(arr.values())
    overhead = e2e - arr["infer"]
    out = {k: float(np.median(v)) for k, v in arr.items()}
    for name, v in (("e2e", e2e), ("overhead", overhead), ("prepost", arr["preprocess"] + arr["postprocess"])):
        out[name] = float(np.median(v))
        out[f"{name}_p90"] = float(np.percentile(v, 90))
        out[f"{name}_p99"] = float(np.percentile(v, 99))
    out["frames"] = len(rows)
    return out


def build_reference(out: Path) -> Path:
    subprocess.run(["edgeseg", "build", "--checkpoint", str(REFERENCE_CKPT), "--data", f"camvid:{CAMVID}",
                    "--precision", "fp32", "--val-limit", "2", "--out", str(out)], check=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", type=Path, action="append", help="bundle folder (repeatable)")
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=6, help="native/python block pairs")
    ap.add_argument("--build-dir", type=Path, default=REPO / "build" / "native-bench")
    ap.add_argument("--name", default="native_cpu")
    args = ap.parse_args()

    native = build_native(args.build_dir)
    bundles = args.bundle or [build_reference(REPO / "build" / "native-bench-fp32")]
    frames = sorted((CAMVID / "val").glob("*.png"))[: args.frames]
    if not frames:
        raise SystemExit(f"no CamVid val frames under {CAMVID / 'val'}")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for bundle in bundles:
            py = PythonSide(bundle)
            py.block(frames[:3])  # warm-up
            rows = {"native": [], "python": []}
            for r in range(args.rounds):
                order = ("native", "python") if r % 2 == 0 else ("python", "native")
                for side in order:
                    rows[side] += native_block(native.app, bundle, frames, Path(tmp)) if side == "native" \
                        else py.block(frames)
            summary = {side: summarize(v) for side, v in rows.items()}
            manifest = json.loads((bundle / "manifest.json").read_text())
            results.append({"bundle": str(bundle), "precision": manifest["precision"], **summary,
                            "overhead_ratio": summary["native"]["overhead"] / summary["python"]["overhead"],
                            "prepost_ratio": summary["native"]["prepost"] / summary["python"]["prepost"],
                            "e2e_ratio": summary["native"]["e2e"] / summary["python"]["e2e"]})
            print(json.dumps(results[-1], indent=1))

    import openvino

    mach = dict(machine(), isa=isa_flags(), openvino=openvino.__version__)
    lines = [
        "# Native runtime vs Python per frame (OpenVINO CPU, same bundle, interleaved)\n",
        f"ISA flags: {' '.join(mach['isa'])}; OpenVINO {mach['openvino']}.\n",
        f"{args.frames} CamVid val frames (360x480 PNG), {args.rounds} rounds alternating native and Python blocks "
        "(ABBA). Native = `edgeseg-native` (libpng decode, C++ pre/post, OpenVINO C++), warm pass; Python = "
        "`edgeseg.load` with its runner replaced by OpenVINO from Python on the same ONNX and settings (PIL decode, "
        "edgeseg's own pre/post-processing). End to end = decode + preprocess + infer + postprocess (label PNG "
        "writing excluded on both); overhead = end to end - infer. Python's preprocess column holds pre + post "
        "(Segmenter.__call__ minus the runner's infer). Times: medians in ms; p90 of the overhead shows "
        "interference.\n",
        "| bundle | side | decode | preprocess | infer | postprocess | overhead (p90) | end to end (p90) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for res in results:
        for side in ("native", "python"):
            s = res[side]
            lines.append(f"| {res['precision']} | {side} | {s['decode']:.2f} | {s['preprocess']:.2f} | "
                         f"{s['infer']:.1f} | {s['postprocess']:.2f} | {s['overhead']:.2f} ({s['overhead_p90']:.2f}) | "
                         f"{s['e2e']:.1f} ({s['e2e_p90']:.1f}) |")
    load = Path("/proc/loadavg").read_text().split()[:3]
    lines.append("")
    lines.append(f"Load average at the end of the run: {' '.join(load)} on {mach['cores']} cores (a shared machine).\n")
    for res in results:
        verdict = "meets" if res["overhead_ratio"] <= 0.5 else "MISSES"
        lines.append(f"- {res['precision']}: native overhead / Python overhead = **{res['overhead_ratio']:.2f}** "
                     f"({verdict} the <= 0.5 target); without decoding (preprocess + postprocess only) "
                     f"{res['prepost_ratio']:.2f}; end to end native / Python = {res['e2e_ratio']:.2f}.")
    write_results(args.name, {"machine": mach, "results": results}, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
