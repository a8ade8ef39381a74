"""`edgeseg bench` on the reference bundles plus a peer baseline, one run, this CPU.

    python benchmarks/bench_backends.py [--bundles build/reference] [--runs 50]

Records: PyTorch eager FP32 (from the bundle's checkpoint), ONNX Runtime FP32 / FP16 / INT8
(`cpu` layout) through edgeseg's runner, and as a peer an ONNX Runtime session with default
settings on the plain (unfused) export. Writes benchmarks/results/backends_cpu.{json,md,png}.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from common import CAMVID, REPO, RESULTS, machine, write_results


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundles", type=Path, default=REPO / "build" / "reference")
    ap.add_argument("--data", default=f"camvid:{CAMVID}")
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import onnxruntime as ort

    from edgeseg.bench.measure import latency_stats, run_bench, time_calls
    from edgeseg.bench.report import write_plot
    from edgeseg.bundle.manifest import read_bundle
    from edgeseg.export.onnx_export import export_onnx
    from edgeseg.models.checkpoint import load_checkpoint

    bundles = [args.bundles / p for p in ("fp32", "fp16", "int8") if (args.bundles / p).is_dir()]
    records, seen = [], set()
    for i, bundle in enumerate(bundles):  # PyTorch once (same checkpoint in every bundle), each ORT precision once
        for r in run_bench([bundle], args.data, "val", ["torch", "ort"] if i == 0 else ["ort"], [1], None,
                           args.runs, args.seconds, args.threads):
            if (r.backend, r.precision) not in seen:
                seen.add((r.backend, r.precision))
                records.append(r.to_dict())
    # peer: ONNX Runtime defaults on the plain export (no fusion, default session options)
    ref = read_bundle(bundles[0])
    ckpt = load_checkpoint(ref.file("checkpoint"))
    plain = Path(tempfile.mkdtemp()) / "plain.onnx"
    export_onnx(ckpt.build(), plain, input_size=tuple(ref.preprocessing.size), fuse=False,
                metadata=ckpt.export_metadata())
    session = ort.InferenceSession(str(plain), providers=["CPUExecutionProvider"])  # ORT defaults, as users run it
    x = np.random.default_rng(0).standard_normal((1, 3, *ref.preprocessing.size), dtype=np.float32)
    peer = latency_stats(time_calls(lambda: session.run(None, {"input": x}), args.runs, args.seconds))
    records.append({"bundle": "plain export", "backend": "ort-default-peer", "precision": "fp32", "batch": 1,
                    "latency_ms_p50": peer.p50_ms, "latency_ms_p90": peer.p90_ms, "latency_ms_p99": peer.p99_ms,
                    "fps": peer.fps, "miou": None, "agreement": None, "skipped": None, "threads": "ort default"})
    torch_rec = next(r for r in records if r["backend"] == "torch" and not r["skipped"])
    # cross-check of the headline ratio: PyTorch eager vs the best path, interleaved in one loop
    import torch
    from common import interleaved_medians

    from edgeseg.backends.onnxruntime import OrtRunner
    from edgeseg.backends.torch_runner import TorchRunner

    int8 = read_bundle(bundles[-1])
    torch.set_num_threads(args.threads)
    with TorchRunner(load_checkpoint(int8.file("checkpoint")).build()) as eager, \
            OrtRunner(int8.file(int8.precision if int8.precision != "fp16" else "fp32"), threads=args.threads,
                      spinning=False) as best_rt:
        from edgeseg.data import open_dataset

        xi = int8.preprocessing(open_dataset(args.data, "val")[0][0])[None]  # a real frame: real activations
        cross = interleaved_medians({"torch_eager_fp32": lambda: eager.infer(xi),
                                     f"ort_{int8.precision}": lambda: best_rt.infer(xi)}, rounds=30)
    done = [r for r in records if not r["skipped"] and r["miou"] is not None]
    within = [r for r in done if abs(r["miou"] - torch_rec["miou"]) <= 1.0]
    best = min(within, key=lambda r: r["latency_ms_p50"])
    speedup = torch_rec["latency_ms_p50"] / best["latency_ms_p50"]
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_plot([r for r in done], RESULTS / "backends_cpu.png")
    rows = "\n".join(
        f"| {Path(r['bundle']).name} | {r['backend']} | {r['precision']} | "
        f"{'' if r['miou'] is None else format(r['miou'], '.2f')} | "
        f"{'' if r['agreement'] is None else format(r['agreement'], '.2f')} | {r['latency_ms_p50']:.1f} | "
        f"{r['latency_ms_p90']:.1f} | {r['latency_ms_p99']:.1f} | {r['fps']:.1f} | "
        f"{'' if r.get('e2e_fps') is None else format(r['e2e_fps'], '.1f')} | "
        f"{'' if r.get('roofline_pct') is None else format(r['roofline_pct'], '.1f')} |"
        for r in records if not r["skipped"])
    md = f"""# Backends on CamVid val (101 images, 360x480, batch 1), one run

| bundle | backend | precision | mIoU | agreement with PyTorch FP32 % | p50 ms | p90 ms | p99 ms | fps | end-to-end fps | % of FP32 matmul peak |
|---|---|---|---|---|---|---|---|---|---|---|
{rows}

Best edgeseg CPU path within 1 mIoU point of PyTorch FP32: **{best['backend']} {best['precision']}**, p50
{best['latency_ms_p50']:.1f} ms vs PyTorch eager FP32 {torch_rec['latency_ms_p50']:.1f} ms: **{speedup:.2f}x**.
Threads: {args.threads} for edgeseg runners and PyTorch; the peer uses ONNX Runtime's defaults.
Latency is model-only (preprocessed batch in, logits out); end-to-end adds preprocessing, resize and argmax.
The roofline column divides 2 x multiply-adds / latency by the best FP32 GEMM rate measured here
(max of torch.mm and ONNX Runtime MatMul on 2048^3, best of 5): INT8 can exceed 100 %.

![latency vs mIoU](backends_cpu.png)
"""
    cross_ratio = cross["torch_eager_fp32"] / cross[f"ort_{int8.precision}"]
    md += (f"\nInterleaved cross-check on a CamVid val frame (30 rounds alternating PyTorch eager FP32 and ORT "
           f"{int8.precision}, medians): "
           f"{cross['torch_eager_fp32']:.1f} ms vs {cross[f'ort_{int8.precision}']:.1f} ms = **{cross_ratio:.2f}x**.\n")
    write_results("backends_cpu", {"machine": machine(), "records": records, "speedup_vs_torch": speedup,
                                   "best": [best["backend"], best["precision"]], "interleaved_ms": cross,
                                   "interleaved_speedup": cross_ratio}, md)
    print(md)


if __name__ == "__main__":
    main()
