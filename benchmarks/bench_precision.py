"""INT8 / FP16 accuracy and speed of the reference model on CamVid val, on this CPU, in one run.

    python benchmarks/bench_precision.py [--checkpoint CKPT] [--calib-count 100] [--runs 30]

1. export the reference checkpoint (fused, opset 17, 1x3x360x480);
2. a class-stratified calibration set from CamVid train, saved under calibration/ (committed);
3. activation statistics once (peak RSS of the pass recorded), then every calibrator from the same
   statistics: `cpu` layout INT8 mIoU on val with ONNX Runtime;
4. the `trt` layout (best calibrator) and FP16, their mIoU in ONNX Runtime;
5. the guard with --max-miou-drop 0.5: final mIoU, layers kept in float, latency cost;
6. FP32 vs INT8 (cpu layout) latency, interleaved rounds, median, batch 1, 2 threads.
Writes benchmarks/results/precision_cpu.json and .md.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from common import CAMVID, REFERENCE_CKPT, REPO, interleaved_medians, machine, write_results


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", type=Path, default=REFERENCE_CKPT)
    ap.add_argument("--data", default=f"camvid:{CAMVID}")
    ap.add_argument("--calib-count", type=int, default=100)
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()

    from edgeseg.ort_session import make_session
    from edgeseg.bench.measure import peak_rss_mb, reset_peak_rss
    from edgeseg.export.metadata import read_preprocessing
    from edgeseg.export.onnx_export import export_onnx
    from edgeseg.models.checkpoint import load_checkpoint
    from edgeseg.quantize.calib_set import iter_calibration_inputs, manifest_from_dataset
    from edgeseg.quantize.calibrators import CALIBRATORS
    from edgeseg.quantize.fp16 import convert_fp16
    from edgeseg.quantize.histograms import collect_stats
    from edgeseg.quantize.ptq import SENSITIVITY_IMAGES, build_int8, miou_evaluator
    from edgeseg.quantize.qdq import activation_ranges, quantize_qdq

    ckpt = load_checkpoint(args.checkpoint)
    work = Path(tempfile.mkdtemp(prefix="edgeseg-precision-"))
    fp32 = work / "model.onnx"
    export_onnx(ckpt.build(), fp32, input_size=(360, 480),
                metadata=ckpt.export_metadata())
    pre = read_preprocessing(fp32)
    manifest = manifest_from_dataset(args.data, "train", args.calib_count, pre)
    manifest_path = manifest.save(REPO / "calibration")
    reset_peak_rss()
    t = time.time()
    stats = collect_stats(fp32, iter_calibration_inputs(manifest, pre))
    stats_seconds, stats_rss = time.time() - t, peak_rss_mb()
    miou_of = miou_evaluator(args.data, "val", pre)
    results: dict = {"machine": machine(), "checkpoint": str(args.checkpoint.relative_to(REPO)),
                     "calibration_manifest": str(manifest_path.relative_to(REPO)), "calib_images": manifest.count,
                     "stats_seconds": round(stats_seconds, 1), "stats_peak_rss_mb": stats_rss,
                     "fp32_miou": miou_of(fp32), "cpu_int8_miou": {}}
    for name in CALIBRATORS:
        path = work / f"int8-cpu-{name}.onnx"
        quantize_qdq(fp32, path, activation_ranges(stats, name, "cpu"), "cpu")
        results["cpu_int8_miou"][name] = miou_of(path)
        print(name, results["cpu_int8_miou"][name], flush=True)
    best = max(results["cpu_int8_miou"], key=results["cpu_int8_miou"].get)
    results["best_calibrator"] = best
    trt = work / "int8-trt.onnx"
    quantize_qdq(fp32, trt, activation_ranges(stats, best, "trt"), "trt")
    results["trt_int8_miou_in_ort"] = miou_of(trt)
    results["fp16_miou"] = miou_of(convert_fp16(fp32, work / "fp16.onnx"))

    guarded = work / "int8-guarded.onnx"
    sens = list(iter_calibration_inputs(manifest, pre))[:SENSITIVITY_IMAGES]
    report = build_int8(fp32, guarded, stats, layout="cpu", calibrator=best, max_miou_drop=0.5, miou_of=miou_of,
                        sensitivity_inputs=sens, preprocessing=pre,
                        calib_inputs=lambda: iter_calibration_inputs(manifest, pre))
    g = report.guard
    results["guard"] = {"max_drop": 0.5, "int8_miou": g.int8_miou, "final_miou": g.final_miou, "fits": g.fits,
                        "kept_high_precision": g.excluded, "tries": g.tries,
                        "most_sensitive": report.ranked_layers[:5]}

    x = np.random.default_rng(0).standard_normal((1, 3, 360, 480), dtype=np.float32)
    sessions = {name: make_session(path, threads=2, spinning=False)  # no spinning pools stealing each other's cores
                for name, path in (("fp32", fp32), ("int8_cpu", work / f"int8-cpu-{best}.onnx"),
                                   ("int8_guarded", guarded))}
    lat = interleaved_medians({k: (lambda s=s: s.run(None, {"input": x})) for k, s in sessions.items()}, args.runs)
    results["latency_ms_median"] = lat
    results["int8_speedup_vs_fp32"] = lat["fp32"] / lat["int8_cpu"]

    r = results
    rows = "\n".join(f"| INT8 `cpu` layout, {k} | {v:.2f} | {v - r['fp32_miou']:+.2f} |" for k, v in r["cpu_int8_miou"].items())
    md = f"""# Precision on CamVid val (101 images, 11 classes), ONNX Runtime CPU

Reference checkpoint `{r['checkpoint']}`; calibration set `{r['calibration_manifest']}` ({r['calib_images']}
class-stratified CamVid train images). Statistics pass: {r['stats_seconds']} s, peak RSS {r['stats_peak_rss_mb']:.0f} MB.

| model | mIoU | vs FP32 |
|---|---|---|
| FP32 | {r['fp32_miou']:.2f} | |
{rows}
| INT8 `trt` layout ({best}), run in ONNX Runtime | {r['trt_int8_miou_in_ort']:.2f} | {r['trt_int8_miou_in_ort'] - r['fp32_miou']:+.2f} |
| FP16 | {r['fp16_miou']:.2f} | {r['fp16_miou'] - r['fp32_miou']:+.2f} |
| INT8 `cpu` + guard (--max-miou-drop 0.5) | {g.final_miou:.2f} | {g.final_miou - r['fp32_miou']:+.2f} |

Guard: {len(g.excluded)} layer(s) kept in FP32 ({', '.join(g.excluded) or 'none needed'}); tries {g.tries}.

Latency, batch 1, 1x3x360x480, 2 threads (no thread spinning), median of {args.runs} interleaved rounds:
FP32 {lat['fp32']:.1f} ms, INT8 `cpu` {lat['int8_cpu']:.1f} ms (**{r['int8_speedup_vs_fp32']:.2f}x**),
INT8 guarded {lat['int8_guarded']:.1f} ms.
"""
    write_results("precision_cpu", results, md)
    print(md)


if __name__ == "__main__":
    main()
