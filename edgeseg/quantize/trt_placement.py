"""Where the ``trt`` layout puts Q/DQ: what TensorRT's explicit quantization fuses (ModelOpt 0.47's rules).

* Q/DQ only on the inputs and weights of Conv / ConvTranspose / pooling (and the Resizes below), per-channel
  weights on the axis the target TensorRT takes (``trt_weight_axes``: Conv 0; ConvTranspose 0 on 8.x, 1 on
  10.x / 11.x, from ``backends.trt_lint``), float biases, no Q/DQ on op outputs;
* Resize quantized on its data input only where that input is a Conv(+BN)+activation output (such a Resize
  "prefers quantized input", which lets TensorRT keep the Conv output in INT8); every other Resize stays float;
* residual Adds fed a Q/DQ on the identity branch only (the Conv branch stays float so Conv+Add fuse).
"""
from __future__ import annotations

from typing import Any

from edgeseg.backends.trt_api import weight_axes

TRT_OP_TYPES = ["Conv", "ConvTranspose", "MaxPool", "AveragePool", "GlobalAveragePool", "Resize"]
ACTIVATIONS = {"Relu", "Clip", "LeakyRelu", "HardSwish", "HardSigmoid", "Sigmoid", "Elu", "Selu", "Softplus", "Tanh"}
CONVS = ("Conv", "ConvTranspose")


def trt_quantizer_options(op_types: list[str]) -> dict[str, Any]:
    """ONNX Runtime ``quantize_static`` keywords for TensorRT's placement (``op_types``: the model's op types)."""
    return dict(op_types_to_quantize=TRT_OP_TYPES,
                extra_options={"AddQDQPairToWeight": True, "QuantizeBias": False, "ForceQuantizeNoInputCheck": True,
                               "DedicatedQDQPair": False, "OpTypesToExcludeOutputQuantization": sorted(op_types)})


def trt_weight_axes(trt_version: str) -> dict[str, int]:
    """Per-channel weight axis by op type for TensorRT ``trt_version`` (the lint's table, one place)."""
    return weight_axes(trt_version)


def resizes_left_float(model) -> list[str]:
    """Resize nodes the trt layout leaves in high precision: all but those whose data input comes from an
    activation of a Conv / ConvTranspose (through an optional BatchNormalization), ModelOpt's rule."""
    producers = {o: n for n in model.graph.node for o in n.output}

    def conv_activation(tensor: str) -> bool:
        act = producers.get(tensor)
        if act is None or act.op_type not in ACTIVATIONS:
            return False
        src = producers.get(act.input[0])
        if src is not None and src.op_type == "BatchNormalization":
            src = producers.get(src.input[0])
        return src is not None and src.op_type in CONVS

    return [n.name for n in model.graph.node if n.op_type == "Resize" and not conv_activation(n.input[0])]


def _dq_of_quantized_tensors(model) -> dict[str, str]:
    """float tensor -> the output of the (first) DequantizeLinear that reconstructs it through a QuantizeLinear."""
    producers = {o: n for n in model.graph.node for o in n.output}
    dq_of: dict[str, str] = {}
    for n in model.graph.node:
        if n.op_type == "DequantizeLinear":
            q = producers.get(n.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                dq_of.setdefault(q.input[0], n.output[0])
    return dq_of


def feed_residual_identity_through_qdq(model) -> int:
    """TensorRT residual rule, on the quantized model in place: for ``Add(conv_out, identity)`` feed the
    identity input from the DQ that already quantizes that tensor for its Conv consumer (same scale).
    Returns the number of Adds changed."""
    producers = {o: n for n in model.graph.node for o in n.output}
    dq_of = _dq_of_quantized_tensors(model)
    changed = 0
    for n in model.graph.node:
        if n.op_type != "Add" or len(n.input) != 2:
            continue
        kinds = [producers[i].op_type if i in producers else None for i in n.input]
        for k, name in enumerate(n.input):
            if kinds[1 - k] in CONVS and kinds[k] not in (*CONVS, "DequantizeLinear") and name in dq_of:
                n.input[k] = dq_of[name]
                changed += 1
                break
    return changed
