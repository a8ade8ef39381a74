"""FP16 ONNX with FP32 inputs and outputs (also the compute of the FP16-scale Q/DQ graph, ``qdq``).

onnxconverter-common converts the graph; the op types in ``FP32_OPS`` stay FP32 between Casts. A
strongly typed TensorRT build (10.x FP16 bundles, every 11.x engine) runs them in FP32 as written,
and the Casts around them split the graph, so the list holds only what needs FP32, each entry
with its reason. Resize, GlobalAveragePool, ReduceMean and Softmax run FP16: measured on the
reference model with CamVid val (101 images), each in FP16 gives the mIoU of the FP16 graph that kept
them FP32 (55.507 against FP32's 55.522; ONNX Runtime CPU with graph optimizations off, every tensor
rounded to FP16 between ops: benchmarks/results/fp16_ops_cpu.md, ``benchmarks/bench_fp16_ops.py``). Known bug worked around here: with keep_io_types=True and a
blocked Resize as the last node the converter leaves the output FP16 or fails outright; so we
convert without keep_io_types and make the graph's inputs and outputs FP32 ourselves.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path

from edgeseg.io_utils import atomic_path

FP32_OPS: dict[str, str] = {  # op type -> why it stays FP32
    "Upsample": "its scales input is FP32 in every opset (deprecated Resize; edgeseg exports Resize with sizes)",
    "ReduceSum": "a sum over H*W can pass FP16's 65504 (a mean cannot: ReduceMean runs FP16)",
    "ArgMax": "an integer result: FP16 ties flip the class where FP32 logits differ by < 1 FP16 step",
    "TopK": "integer indices, ties as for ArgMax", "Range": "integer-valued shape arithmetic",
    "Min": "the converter's default list (shape arithmetic clamps)", "Max": "the converter's default list (as Min)",
}


def _fp32_inputs(model) -> list:
    """Make every FP16 graph input FP32, its consumers reading a new Cast to FP16; returns those Casts."""
    from onnx import TensorProto, helper

    casts = []
    for inp in model.graph.input:
        if inp.type.tensor_type.elem_type != TensorProto.FLOAT16:
            continue
        half = f"{inp.name}_fp16"
        for node in model.graph.node:
            for k, name in enumerate(node.input):
                if name == inp.name:
                    node.input[k] = half
        casts.append(helper.make_node("Cast", [inp.name], [half], to=TensorProto.FLOAT16, name=f"{inp.name}_to_fp16"))
        inp.type.tensor_type.elem_type = TensorProto.FLOAT
    return casts


def _fp32_outputs(model) -> None:
    """Make every FP16 graph output FP32: retarget the converter's trailing Cast (Resize -> Cast to FP16)
    to FP32, or append a new Cast."""
    from onnx import TensorProto, helper

    producers = {o: n for n in model.graph.node for o in n.output}
    for out in model.graph.output:
        if out.type.tensor_type.elem_type != TensorProto.FLOAT16:
            continue
        producer = producers.get(out.name)
        if producer is not None and producer.op_type == "Cast":
            for attr in producer.attribute:
                if attr.name == "to":
                    attr.i = TensorProto.FLOAT
        else:
            half = f"{out.name}_fp16"
            for node in model.graph.node:
                node.output[:] = [half if o == out.name else o for o in node.output]
                node.input[:] = [half if i == out.name else i for i in node.input]
            model.graph.node.append(helper.make_node("Cast", [half], [out.name], to=TensorProto.FLOAT,
                                                     name=f"{out.name}_to_fp32"))
        out.type.tensor_type.elem_type = TensorProto.FLOAT


def _fp32_io(model) -> None:
    """Make every FP16 graph input and output FP32 (input Casts go first in the graph)."""
    casts = _fp32_inputs(model)
    _fp32_outputs(model)
    for node in reversed(casts):
        model.graph.node.insert(0, node)


def fp32_islands(model) -> list[str]:
    """The op types of an FP16 (or FP16-scale Q/DQ) ``onnx.ModelProto`` that compute in FP32: nodes other than
    Cast and Q/DQ with an FP32 input or output (shape inference over the graph)."""
    import onnx
    from onnx import TensorProto

    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type
             for v in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output)}
    types.update({i.name: i.data_type for i in inferred.graph.initializer})
    skip = {"Cast", "QuantizeLinear", "DequantizeLinear", "Shape", "Constant"}
    return sorted({n.op_type for n in inferred.graph.node if n.op_type not in skip and any(
        types.get(t) == TensorProto.FLOAT for t in (*n.input, *n.output) if t)})


def convert_fp16(fp32_path: str | Path, out_path: str | Path, fp32_ops: Iterable[str] = tuple(FP32_OPS)) -> Path:
    """Write an FP16 model whose input and output stay FP32, with the op types ``fp32_ops`` kept FP32 (the
    default ``FP32_OPS``; other lists are for measuring, benchmarks/bench_fp16_ops.py). Its metadata
    ``fp32_ops`` lists the op types that compute in FP32 in the result (``fp32_islands``)."""
    import onnx
    from onnxconverter_common.float16 import convert_float_to_float16

    from edgeseg.export.metadata import set_metadata

    model = onnx.load(str(fp32_path))
    with warnings.catch_warnings():  # "number truncated to 1e-07" for tiny weights: expected, not actionable
        warnings.simplefilter("ignore", UserWarning)
        half = convert_float_to_float16(model, keep_io_types=False, op_block_list=list(fp32_ops))
    _fp32_io(half)
    del half.graph.value_info[:]  # the converter leaves stale FP32 declarations beside its Casts: re-infer
    half = onnx.shape_inference.infer_shapes(half)
    set_metadata(half, {"precision": "fp16", "fp32_ops": fp32_islands(half)})
    onnx.checker.check_model(half)
    with atomic_path(out_path) as tmp:
        onnx.save(half, str(tmp))
    return Path(out_path)


FP16_ROLES = ("fp16", "int8_trt_fp16")  # the bundle roles whose ONNX computes in FP16


def fp32_islands_by_file(folder: str | Path, roles: dict[str, str]) -> dict[str, list[str]]:
    """For the manifest: each FP16 ONNX of a bundle (``FP16_ROLES``) -> the op types that compute FP32 in it
    (its ``fp32_ops`` metadata; everything else between the FP32 input and output runs FP16 or INT8)."""
    from edgeseg.export.metadata import read_onnx_metadata

    return {roles[r]: list(read_onnx_metadata(Path(folder) / roles[r]).get("fp32_ops", []))
            for r in FP16_ROLES if r in roles}
