"""Which op types need FP32 in the FP16 graph: the reference model's CamVid val mIoU with each candidate op type
(Resize, GlobalAveragePool, ReduceMean, Softmax) run in FP16, on ONNX Runtime CPU with graph optimizations off.

    python benchmarks/bench_fp16_ops.py [--checkpoint CKPT] [--limit N]

ONNX Runtime's CPU provider has no FP16 kernel for these ops (nor for Conv, Relu, Add on x86): it wraps each
FP16 node in Cast(FP32) -> op -> Cast(FP16) (the probe below records what it inserted). With graph
optimizations on, the duplicate-Cast remover then drops the Cast pairs between consecutive nodes, so most
of the graph would run FP32; with optimizations off every tensor is rounded to FP16 between ops and the
arithmetic inside an op is FP32, the storage precision a TensorRT FP16 layer has (its accumulation
precision inside a kernel is not measured here).

The reference model has Resize (3) and GlobalAveragePool (1). ReduceMean is measured by writing image
pooling's GlobalAveragePool as ReduceMean(axes=[2, 3]) (the same mean), Softmax by appending it over the
classes (what a probability output does; DeepStream's model.ds.onnx). Each variant starts from the
FP32 list edgeseg had before this measurement and moves one op type (or all four) to FP16.
Writes benchmarks/results/fp16_ops_cpu.json and .md.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from common import CAMVID, REFERENCE_CKPT, REPO, machine, write_results

CANDIDATES = ["Resize", "GlobalAveragePool", "ReduceMean", "Softmax"]
BEFORE = ["Resize", "Upsample", "GlobalAveragePool", "ReduceMean", "ReduceSum", "Softmax", "ArgMax", "TopK",
          "Range", "Min", "Max"]  # edgeseg's FP32_OPS before this measurement


def _gap_as_reduce_mean(src: Path, dst: Path) -> None:
    import onnx
    from onnx import helper

    model = onnx.load(str(src))
    for i, n in enumerate(model.graph.node):
        if n.op_type == "GlobalAveragePool":
            model.graph.node[i].CopyFrom(helper.make_node("ReduceMean", list(n.input), list(n.output), name=n.name,
                                                          axes=[2, 3], keepdims=1))
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))


def _with_softmax(src: Path, dst: Path) -> None:
    import onnx
    from onnx import helper

    model = onnx.load(str(src))
    out = model.graph.output[0]
    logits = out.name + "_logits"
    for n in model.graph.node:
        n.output[:] = [logits if o == out.name else o for o in n.output]
    model.graph.node.append(helper.make_node("Softmax", [logits], [out.name], name="softmax", axis=1))
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))


def ort_fp16_probe() -> dict[str, list[str]]:
    """What ONNX Runtime's CPU provider runs for a lone FP16 node of each candidate op type (optimizations off)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    specs = {"Resize": (["", "", "sizes"], {"mode": "linear"}), "GlobalAveragePool": ([], {}),
             "ReduceMean": ([], {"axes": [2, 3]}), "Softmax": ([], {"axis": 1}), "Conv": (["w"], {})}
    found = {}
    with tempfile.TemporaryDirectory() as tmp:
        for op, (extra, attrs) in specs.items():
            inits = [helper.make_tensor("sizes", TensorProto.INT64, [4], [1, 4, 16, 16]),
                     helper.make_tensor("w", TensorProto.FLOAT16, [4, 4, 1, 1], np.ones(16, np.float16).tobytes(),
                                        raw=True)]
            graph = helper.make_graph([helper.make_node(op, ["x", *extra], ["y"], **attrs)], op,
                                      [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [1, 4, 8, 8])],
                                      [helper.make_tensor_value_info("y", TensorProto.FLOAT16, None)],
                                      initializer=[i for i in inits if i.name in extra])
            opts = ort.SessionOptions()
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            opts.optimized_model_filepath = str(Path(tmp) / f"{op}.onnx")
            model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
            ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
            found[op] = [n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node]
    return found


def _score(path: Path, images, labels, num_classes: int, ignore: int, reference=None) -> tuple[dict, list]:
    from edgeseg.metrics import ConfusionMatrix
    from edgeseg.ort_session import make_session

    session = make_session(path, optimize=False)
    name = session.get_inputs()[0].name
    cm = ConfusionMatrix(num_classes, ignore)
    outputs, agree, max_diff = [], [], 0.0
    for k, (x, y) in enumerate(zip(images, labels)):
        out = session.run(None, {name: x})[0][0]
        pred = out.argmax(0)
        cm.update(pred, y)
        outputs.append(out)
        if reference is not None:
            agree.append(float((pred == reference[k].argmax(0)).mean()))
            max_diff = max(max_diff, float(np.abs(out - reference[k]).max()))
    row = {"miou": round(cm.miou(), 3)}
    if reference is not None:
        row.update(pixel_agreement_pct=round(100 * float(np.mean(agree)), 3), max_abs_diff=round(max_diff, 4))
    return row, outputs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", type=Path, default=REFERENCE_CKPT)
    ap.add_argument("--data", default=f"camvid:{CAMVID}")
    ap.add_argument("--limit", type=int, default=None, help="first N val images (default: all)")
    args = ap.parse_args()

    from edgeseg.data.spec import open_dataset
    from edgeseg.export.metadata import read_preprocessing
    from edgeseg.export.onnx_export import export_onnx
    from edgeseg.models.checkpoint import load_checkpoint
    from edgeseg.quantize.fp16 import FP32_OPS, convert_fp16

    ckpt = load_checkpoint(args.checkpoint)
    work = Path(tempfile.mkdtemp(prefix="edgeseg-fp16ops-"))
    fp32 = work / "model.onnx"
    export_onnx(ckpt.build(), fp32, input_size=(360, 480), metadata=ckpt.export_metadata())
    pre = read_preprocessing(fp32)
    dataset = open_dataset(args.data, "val")
    count = len(dataset) if args.limit is None else min(args.limit, len(dataset))
    images, labels = [], []
    for i in range(count):
        image, mask = dataset[i]
        images.append(pre(image)[None])
        labels.append(mask)
    nc, ignore = dataset.num_classes, dataset.ignore_index
    sources = {"plain": fp32, "reduce_mean": work / "rm.onnx", "softmax": work / "sm.onnx"}
    _gap_as_reduce_mean(fp32, sources["reduce_mean"])
    _with_softmax(fp32, sources["softmax"])
    variants = [  # (row name, source graph, op types moved to FP16)
        ("fp16, FP32 list before", "plain", []), ("Resize in FP16", "plain", ["Resize"]),
        ("GlobalAveragePool in FP16", "plain", ["GlobalAveragePool"]),
        ("ReduceMean in FP16 (image pooling as ReduceMean)", "reduce_mean", ["ReduceMean"]),
        ("Softmax in FP16 (appended over the classes)", "softmax", ["Softmax"]),
        ("all four in FP16", "plain", CANDIDATES), ("fp16, FP32_OPS now", "plain", None)]
    rows: list[dict] = []
    references = {}
    for source, path in sources.items():
        row, references[source] = _score(path, images, labels, nc, ignore)
        rows.append({"variant": f"fp32 ({source} graph)", "graph": source, "fp16_ops": [], **row})
        print(rows[-1], flush=True)
    for title, source, moved in variants:
        keep = list(FP32_OPS) if moved is None else [op for op in BEFORE if op not in moved]
        out = convert_fp16(sources[source], work / f"{len(rows)}.onnx", fp32_ops=keep)
        row, _ = _score(out, images, labels, nc, ignore, references[source])
        fp32_miou = next(r["miou"] for r in rows if r["variant"] == f"fp32 ({source} graph)")
        rows.append({"variant": title, "graph": source, "fp32_kept": keep, **row,
                     "miou_change": round(row["miou"] - fp32_miou, 3)})
        print(rows[-1], flush=True)
    data = {"machine": machine(), "cpu_flags": cpu_flags(), "checkpoint": str(args.checkpoint.relative_to(REPO)),
            "val_images": count, "ort_cpu_fp16_probe": ort_fp16_probe(), "rows": rows}
    write_results("fp16_ops_cpu", data, markdown(data))


def cpu_flags() -> list[str]:
    """The SIMD flags of /proc/cpuinfo that decide FP16 / INT8 speed and kernels (F16C, AVX-512 FP16, VNNI, AMX)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    line = next((ln for ln in text.splitlines() if ln.startswith(("flags", "Features"))), "")
    keep = ("avx", "f16c", "fma", "amx", "fp16", "asimd", "sve", "dot")
    return sorted(f for f in line.split(":", 1)[-1].split() if f.startswith(keep) or "fp16" in f)


def markdown(data: dict) -> str:
    rows, count = data["rows"], data["val_images"]
    lines = [f"CPU flags (/proc/cpuinfo): {' '.join(data['cpu_flags'])}", "",f"Reference model on CamVid val ({count} images, 360x480), ONNX Runtime CPU, graph optimizations "
             "off. mIoU change is against the FP32 graph of the same source; pixel agreement and max |diff| "
             "compare outputs (logits; probabilities for the Softmax graph) with FP32 image by image.", "",
             "| variant | mIoU | mIoU change | pixel agreement % | max abs diff |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['miou']:.3f} | {r.get('miou_change', '')} | "
                     f"{r.get('pixel_agreement_pct', '')} | {r.get('max_abs_diff', '')} |")
    lines += ["", "What ONNX Runtime's CPU provider ran for one FP16 node of each op type (optimizations off):", ""]
    lines += [f"- {op}: {' -> '.join(nodes)}" for op, nodes in data["ort_cpu_fp16_probe"].items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
