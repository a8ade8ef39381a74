"""INT8 graphs for TensorRT, side by side on CPU (ONNX Runtime), with NVIDIA ModelOpt as a peer.

Issue 11 points 2 and 9. On the reference model (benchmarks/reference), one calibration set
(CamVid train, 64 class-stratified images, drawn by edgeseg), it builds

  edgeseg q32   the trt layout with FP32 scales, opset 17  (TensorRT 8.6 / 10.x, weakly typed + FP16 flags)
  edgeseg q16   the same placement with FP16 scales and FP16 compute, opset 19 (TensorRT 11, strongly typed)
  modelopt fp32 ModelOpt's ONNX PTQ, high_precision_dtype="fp32"  (when nvidia-modelopt imports)
  modelopt fp16 ModelOpt's ONNX PTQ, high_precision_dtype="fp16"  (its default mixed graph)

and reports the mIoU of each on CamVid val in ONNX Runtime on CPU (the choices are fixed in
advance: entropy calibration for both tools, 64 train images; nothing is tuned on val), the Q/DQ
placement differences against edgeseg's (which op inputs are fed by a DequantizeLinear), and, for
each FP16 graph, the mIoU with ONNX Runtime's graph optimizations off, to tell ONNX Runtime's CPU FP16
handling from the graph itself, plus which op types run in FP16.

    python benchmarks/bench_trt_mix.py --data camvid:../shared/datasets/camvid [--val-limit N] [--out F.json]

Install ModelOpt without its [onnx] extra (that pins onnxruntime-gpu): pip install nvidia-modelopt, then
pip install --no-deps onnx-graphsurgeon polygraphy ml_dtypes lief cppimport onnxscript onnx_ir.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import CAMVID, REFERENCE_CKPT, REPO, machine


def _consumer_inputs_fed_by_dq(path: Path) -> set[str]:
    """'<consumer op type>:<consumer name>#<input index>' for every activation input fed by a DequantizeLinear."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    fed = set()
    for n in model.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for k, name in enumerate(n.input):
            p = producers.get(name)
            if p is None or p.op_type != "DequantizeLinear":
                continue
            q = producers.get(p.input[0])
            if p.input[0] in inits or (q is not None and q.input[0] in inits):
                continue  # a weight
            fed.add(f"{n.op_type}:{n.name}#{k}")
    return fed


def _fp16_op_types(path: Path) -> dict[str, int]:
    """Op types whose first output is FP16 (after shape inference): what runs in half precision."""
    import onnx

    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    types = {v.name: v.type.tensor_type.elem_type for v in (*model.graph.value_info, *model.graph.output)}
    counts: dict[str, int] = {}
    for n in model.graph.node:
        if n.output and types.get(n.output[0]) == onnx.TensorProto.FLOAT16:
            counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return dict(sorted(counts.items()))


def _miou(path: Path, dataset, pre, limit: int | None, optimize: bool = True) -> float:
    import onnxruntime as ort

    from edgeseg.metrics import ConfusionMatrix
    from edgeseg.postprocess import labels_from_logits

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.set_denormal_as_zero", "1")
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    cm = ConfusionMatrix(dataset.num_classes)
    for i in range(min(len(dataset), limit or len(dataset))):
        image, label = dataset[i]
        logits = session.run(None, {"input": pre(image)[None]})[0]
        cm.update(labels_from_logits(logits, label.shape[:2])[0], label)
    return round(cm.miou(), 2)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=f"camvid:{CAMVID}")
    ap.add_argument("--checkpoint", default=str(REFERENCE_CKPT))
    ap.add_argument("--calib-count", type=int, default=64)
    ap.add_argument("--val-limit", type=int, default=None)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "trt_mix_cpu.json")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--reuse", action="store_true",
                    help="keep ModelOpt graphs already in --workdir (same calibration set: it is drawn deterministically)")
    args = ap.parse_args(argv)

    from edgeseg.data.spec import open_dataset
    from edgeseg.export.onnx_export import export_onnx
    from edgeseg.models.checkpoint import load_checkpoint
    from edgeseg.quantize.calib_set import draw_calibration_set, iter_calibration_inputs
    from edgeseg.quantize.ptq import calibration_stats
    from edgeseg.quantize.qdq import activation_ranges, fp16_qdq_graph, quantize_qdq, upgrade_opset

    tmp = tempfile.TemporaryDirectory(prefix="edgeseg-mix-")
    work = args.workdir or Path(tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    ckpt = load_checkpoint(args.checkpoint)
    pre = ckpt.preprocessing
    size = pre.size or (360, 480)
    fp32 = work / "model.onnx"
    export_onnx(ckpt.build(), fp32, input_size=size, metadata=ckpt.export_metadata())
    calib, _ = draw_calibration_set(args.data, "train", args.calib_count, pre)
    stats, _ = calibration_stats(fp32, calib, pre)
    ranges = activation_ranges(stats, "entropy", "trt")
    t = time.time()
    graphs = {"fp32": fp32, "edgeseg q32": quantize_qdq(fp32, work / "q32.onnx", ranges, "trt"),
              "edgeseg q16": fp16_qdq_graph(fp32, work / "q16.onnx", ranges)}
    timings = {"edgeseg quantize (both graphs) s": round(time.time() - t, 1)}
    notes = []
    try:
        from modelopt.onnx.quantization import quantize as modelopt_quantize

        o19 = upgrade_opset(fp32, work / "model.o19.onnx")
        data = np.concatenate(list(iter_calibration_inputs(calib, pre)))
        for dtype in ("fp32", "fp16"):
            t = time.time()
            out = work / f"modelopt.{dtype}.onnx"
            if args.reuse and out.is_file():
                graphs[f"modelopt {dtype}"] = out
                notes.append(f"{out.name} reused from an earlier run of this script with the same calibration set")
                continue
            modelopt_quantize(str(o19), quantize_mode="int8", calibration_data=data, calibration_method="entropy",
                              calibration_eps=["cpu"], high_precision_dtype=dtype, output_path=str(out),
                              log_level="WARNING")
            graphs[f"modelopt {dtype}"] = out
            timings[f"modelopt {dtype} s"] = round(time.time() - t, 1)
    except Exception as e:  # not installed, or it cannot run here: say so with the exact error
        notes.append(f"ModelOpt peer not run: {type(e).__name__}: {' '.join(str(e).split())[:300]}")

    val = open_dataset(args.data, "val")
    result = {"command": "python benchmarks/bench_trt_mix.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "machine": machine(), "calibration": {
                  "split": "train", "count": calib.count, "method": "entropy", "sha256": calib.sha256},
              "val_images": min(len(val), args.val_limit or len(val)), "miou": {}, "miou_ort_no_optimizations": {},
              "fp16_op_types": {}, "placement_vs_edgeseg_q32": {}, "timings": timings, "notes": notes}
    ours = _consumer_inputs_fed_by_dq(graphs["edgeseg q32"])
    for name, path in graphs.items():
        t = time.time()
        result["miou"][name] = _miou(path, val, pre, args.val_limit)
        timings[f"mIoU {name} s"] = round(time.time() - t, 1)
        if name.endswith("16"):
            result["miou_ort_no_optimizations"][name] = _miou(path, val, pre, args.val_limit, optimize=False)
            result["fp16_op_types"][name] = _fp16_op_types(path)
        if name != "fp32" and name != "edgeseg q32":
            theirs = _consumer_inputs_fed_by_dq(path)
            result["placement_vs_edgeseg_q32"][name] = {"only_here": sorted(theirs - ours),
                                                        "only_edgeseg": sorted(ours - theirs), "same": len(ours & theirs)}
        print(name, result["miou"][name], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("miou", "miou_ort_no_optimizations", "notes")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
