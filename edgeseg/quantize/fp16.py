"""FP16 ONNX with FP32 inputs and outputs.

onnxconverter-common converts the graph; Resize (its scales must stay FP32), large reductions
(image pooling's GlobalAveragePool / ReduceMean), Softmax and ArgMax stay in FP32. Known bug
worked around here: with keep_io_types=True and a blocked Resize as the last node (normal for
segmentation) the converter leaves the output FP16 or fails outright; so we convert without
keep_io_types and make the graph's inputs and outputs FP32 ourselves.
"""
from __future__ import annotations

import warnings
from pathlib import Path

from edgeseg.io_utils import atomic_path

FP32_OPS = ["Resize", "Upsample", "GlobalAveragePool", "ReduceMean", "ReduceSum", "Softmax", "ArgMax", "TopK",
            "Range", "Min", "Max"]


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


def convert_fp16(fp32_path: str | Path, out_path: str | Path) -> Path:
    """Write an FP16 model whose input and output stay FP32."""
    import onnx
    from onnxconverter_common.float16 import convert_float_to_float16

    from edgeseg.export.metadata import set_metadata

    model = onnx.load(str(fp32_path))
    with warnings.catch_warnings():  # "number truncated to 1e-07" for tiny weights: expected, not actionable
        warnings.simplefilter("ignore", UserWarning)
        half = convert_float_to_float16(model, keep_io_types=False, op_block_list=FP32_OPS)
    _fp32_io(half)
    del half.graph.value_info[:]  # the converter leaves stale FP32 declarations beside its Casts: re-infer
    half = onnx.shape_inference.infer_shapes(half)
    set_metadata(half, {"precision": "fp16"})
    onnx.checker.check_model(half)
    with atomic_path(out_path) as tmp:
        onnx.save(half, str(tmp))
    return Path(out_path)
