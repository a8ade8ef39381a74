"""TensorRT lint on CPU: what the TensorRT ONNX parser of a given version will refuse or treat badly.

``check_onnx(model, trt_version="10", dla=False)`` returns ``Finding``s; severity "error" means the
parse or the engine build fails (or, for DLA, the layer cannot run there), "warning" means it
parses but needs care. Each finding names the node and the fix. Rules (``Finding.rule``):

  opset              default-domain opset outside the parser's range
  unsupported-op     op outside the parser's supported set; custom domains need a plugin
  resize             Resize mode / coordinate transform / nearest mode / antialias / aspect policy
  qdq-int32-bias     int32 tensor into DequantizeLinear (quantized bias)
  qdq-zero-point     non-zero or unsigned INT8 zero point
  qdq-axis           per-channel scales on a weight axis the version's kernels do not take (Conv 0;
                     ConvTranspose 0 on 8.x, 1 on 10.x / 11.x: ``weight_axes``) or on an activation
                     (per-channel below opset 13 is invalid ONNX; onnx.checker refuses it);
                     ``retarget_weight_axes`` is the fix for a bundle built for another version
  dynamic-no-bounds  dynamic input dims without ``edgeseg.shape_bounds`` metadata
  dla-dynamic        DLA: dynamic input shapes
  dla-resize         DLA: linear Resize not in half_pixel mode (e.g. align_corners)
  dla-version        DLA: the version has no DLA on a Jetson (``trt_api.DLA_TABLE``: 10.8-11.3, 11.4.0)

Sources: supported ops and opset ranges from onnx/onnx-tensorrt docs/operators.md (8.5 GA
table; 10.15 table "opset 9 to opset 24"; the 10.0 header "opset 9 to opset 20") and
docs/Changelog.md (what each release added); Resize checks from onnxOpCheckers.cpp
(checkResize) and onnx-tensorrt#913; Q/DQ rules from ../shared/docs/tensorrt-notes.md section 4
(onnx-tensorrt#850, TensorRT#994), the ConvTranspose axis from the sources at ``trt_api.convtranspose_weight_axis``
(the notes' "ConvTranspose axis 1" holds for 10.x / 11.x only); DLA rules from the same notes, sections 1 and 7, and where DLA
exists from ``trt_api``'s one table. Versions are parsed by ``trt_api`` (``release_line``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edgeseg.backends import trt_api
from edgeseg.errors import EdgesegError

Severity = Literal["error", "warning"]

# operators.md (TensorRT 8.5 GA), rows marked Y
_OPS_85 = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast Ceil Celu Clip
Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DepthToSpace DequantizeLinear Div Dropout Einsum
Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements GatherND Gemm GlobalAveragePool GlobalLpPool
GlobalMaxPool Greater GreaterOrEqual GridSample GRU HardSwish HardSigmoid Identity If ImageScaler
InstanceNormalization IsNaN LeakyRelu Less LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul
Max MaxPool Mean MeanVarianceNormalization Min Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad
ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform RandomUniformLike Range
Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum
ReduceSumSquare Relu Reshape Resize ReverseSequence RNN RoiAlign Round ScaledTanh Scan Scatter ScatterElements
ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt
Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split())
# Changelog 8.6 EA: GroupNormalization, LayerNormalization, IsInf
_OPS_86 = _OPS_85 | {"GroupNormalization", "LayerNormalization", "IsInf"}
# "10" = 10.0-10.3 (JetPack 6.1 ships 10.3): 9.2 Hardmax, 10.1 DeformConv; CastLike, Gelu and Mish are in the
# 10.15 table with no changelog entry (first version unknown, assumed 10.0)
_OPS_10 = _OPS_86 | {"Hardmax", "DeformConv", "CastLike", "Gelu", "Mish"}
# "11" = the 10.15 table: 10.4 window ops, 10.5 STFT, 10.14 Attention,
# 10.15 RotaryEmbedding / RMSNormalization / TensorScatter
_OPS_11 = _OPS_10 | {"BlackmanWindow", "HammingWindow", "HannWindow", "STFT", "Attention", "RotaryEmbedding",
                     "RMSNormalization", "TensorScatter"}

_SUPPORT: dict[str, tuple[frozenset[str], int, int]] = {  # version -> (ops, min opset, max opset)
    "8.5": (_OPS_85, 1, 17),  # onnx-tensorrt 8.5-GA operators.md: "TensorRT 8.5 supports operators up to Opset 17"
    "8.6": (_OPS_86, 1, 17),  # "up to Opset 17", no lower bound stated
    "10": (_OPS_10, 9, 20),
    "11": (_OPS_11, 9, 24),  # 11.x: the 10.15 range; 11's own table UNVERIFIED
}
_RESIZE_TRANSFORMS = ("half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners")
_NEAREST_MODES = ("floor", "ceil", "round_prefer_floor", "round_prefer_ceil")
_DEFAULT_DOMAINS = ("", "ai.onnx")


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: Severity
    node: str  # node name (or "<op>#<index>"), input name, or "model"
    message: str
    fix: str

    def __str__(self) -> str:
        return f"{self.severity}: [{self.rule}] {self.node}: {self.message}; fix: {self.fix}"


def check_onnx(path_or_model: Any, trt_version: str = "10", dla: bool = False) -> list[Finding]:
    """Lint an ONNX file (path) or ``onnx.ModelProto`` for the TensorRT ``trt_version`` parser (and DLA)."""
    import onnx

    version = trt_api.release_line(trt_version)
    base_dir = ""
    if isinstance(path_or_model, onnx.ModelProto):
        model = path_or_model
    else:
        from edgeseg.export.metadata import load_onnx

        model = load_onnx(path_or_model, require_input=False)
        base_dir = str(Path(path_or_model).resolve().parent)
    g = _Graph(model, base_dir)
    findings: list[Finding] = []
    findings += _opset_rule(model, version)
    findings += _op_rule(g, version)
    findings += _resize_rule(g)
    findings += _qdq_rules(g, str(trt_version))
    findings += _dynamic_rule(model)
    if dla:
        findings += _dla_rules(model, g, str(trt_version))
    order = {"error": 0, "warning": 1}
    return sorted(findings, key=lambda f: (order[f.severity], f.rule, f.node))


# ----------------------------------------------------------------------------- graph helpers

class _Graph:
    """Nodes (subgraphs included), constant tensors (initializers and Constant nodes, decoded only on
    demand, so weights are never copied), producers and consumers of each tensor."""

    def __init__(self, model: Any, base_dir: str = "") -> None:
        self.nodes: list[tuple[str, Any]] = []
        self.tensors: dict[str, Any] = {}  # name -> TensorProto
        self.consumers: dict[str, list[tuple[Any, int]]] = {}
        self.producer: dict[str, Any] = {}
        self.base_dir = base_dir
        self._walk(model.graph)

    def _walk(self, graph: Any) -> None:
        for init in graph.initializer:
            self.tensors[init.name] = init
        for node in graph.node:
            self.nodes.append((node.name or f"{node.op_type}#{len(self.nodes)}", node))
            for out in node.output:
                self.producer[out] = node
            for j, name in enumerate(node.input):
                self.consumers.setdefault(name, []).append((node, j))
            for attr in node.attribute:
                if node.op_type == "Constant" and attr.name == "value":
                    self.tensors[node.output[0]] = attr.t
                for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                    self._walk(sub)

    def is_const(self, name: str) -> bool:
        return name in self.tensors

    def dtype(self, name: str) -> Any:
        """numpy dtype of a constant, or None."""
        from onnx import helper

        t = self.tensors.get(name)
        return None if t is None else helper.tensor_dtype_to_np_dtype(t.data_type)

    def shape(self, name: str) -> tuple[int, ...] | None:
        t = self.tensors.get(name)
        return None if t is None else tuple(t.dims)

    def value(self, name: str) -> Any:
        """A constant's values (for small tensors: scales, zero points), or None."""
        from onnx import numpy_helper

        t = self.tensors.get(name)
        if t is None:
            return None
        try:
            return numpy_helper.to_array(t, base_dir=self.base_dir)
        except Exception:  # external data that is not there: the value cannot be checked
            return None

    def name(self, node: Any) -> str:
        return next(n for n, m in self.nodes if m is node)


def _attr(node: Any, name: str, default: Any) -> Any:
    from onnx import helper

    for attr in node.attribute:
        if attr.name == name:
            value = helper.get_attribute_value(attr)
            return value.decode() if isinstance(value, bytes) else value
    return default


def _opset(model: Any) -> int:
    return max((o.version for o in model.opset_import if o.domain in _DEFAULT_DOMAINS), default=0)


# ----------------------------------------------------------------------------- rules

def _opset_rule(model: Any, version: str) -> list[Finding]:
    _, lo, hi = _SUPPORT[version]
    opset = _opset(model)
    if lo <= opset <= hi:
        return []
    return [Finding("opset", "error", "model", f"opset {opset} is outside TensorRT {version}'s range {lo}-{hi}",
                    f"re-export with opset <= {hi} (edgeseg export --opset {min(hi, 17)}; torch.onnx.export "
                    "dynamo=False, since dynamo gives opset >= 18)")]


def _op_rule(g: _Graph, version: str) -> list[Finding]:
    ops = _SUPPORT[version][0]
    out = []
    for name, node in g.nodes:
        if node.domain not in _DEFAULT_DOMAINS:
            out.append(Finding("unsupported-op", "error", name,
                               f"{node.op_type} is in custom domain {node.domain!r}, which the parser can only map "
                               "to a TensorRT plugin",
                               f"register a plugin named {node.op_type} or export without {node.domain} ops "
                               "(e.g. save ORT-optimized models only for ORT)"))
        elif node.op_type not in ops:
            out.append(Finding("unsupported-op", "error", name,
                               f"{node.op_type} is not supported by the TensorRT {version} ONNX parser",
                               "replace it with supported ops in the model, or supply a plugin"))
    return out


def _resize_rule(g: _Graph) -> list[Finding]:
    out = []
    for name, node in g.nodes:
        if node.op_type != "Resize":
            continue
        mode = _attr(node, "mode", "nearest")
        transform = _attr(node, "coordinate_transformation_mode", "half_pixel")
        nearest = _attr(node, "nearest_mode", "round_prefer_floor")
        if mode == "cubic":
            out.append(Finding("resize", "warning", name,
                               "cubic Resize is not in operators.md's supported modes (nearest, linear); newer parsers "
                               "map it to a cubic resize layer, older ones refuse it",
                               "use bilinear (F.interpolate mode='bilinear') for feature maps and logits"))
        elif mode not in ("nearest", "linear"):
            out.append(Finding("resize", "error", name, f"Resize mode {mode!r} is not supported",
                               "use mode nearest or linear"))
        if transform not in _RESIZE_TRANSFORMS:
            out.append(Finding("resize", "error", name,
                               f"coordinate_transformation_mode {transform!r} is not supported (TensorRT takes "
                               f"{', '.join(_RESIZE_TRANSFORMS)})",
                               "export with F.interpolate(align_corners=False) for half_pixel"))
        if mode == "nearest" and nearest not in _NEAREST_MODES:
            out.append(Finding("resize", "error", name, f"nearest_mode {nearest!r} is not supported",
                               f"use one of {', '.join(_NEAREST_MODES)}"))
        if transform == "tf_half_pixel_for_nn" and nearest != "round_prefer_floor":
            out.append(Finding("resize", "error", name,
                               f"tf_half_pixel_for_nn with nearest_mode {nearest!r}: the parser accepts only "
                               "round_prefer_floor there (onnx-tensorrt#913)",
                               "set nearest_mode=round_prefer_floor or use coordinate mode asymmetric/half_pixel"))
        if _attr(node, "antialias", 0):
            out.append(Finding("resize", "error", name, "antialias=1 is not supported by the parser",
                               "resize without antialiasing (antialias=False in F.interpolate)"))
        policy = _attr(node, "keep_aspect_ratio_policy", "stretch")
        if policy != "stretch":
            out.append(Finding("resize", "error", name, f"keep_aspect_ratio_policy {policy!r}: only 'stretch' is "
                               "supported", "compute the output size explicitly and pass sizes"))
    return out


def _zero_point(g: _Graph, node: Any) -> Any:
    return g.value(node.input[2]) if len(node.input) > 2 and node.input[2] else None


def _scale_size(g: _Graph, node: Any) -> int | None:
    shape = g.shape(node.input[1]) if len(node.input) > 1 else None
    return None if shape is None else int(np.prod(shape, dtype=np.int64))


def _weight_consumer(g: _Graph, node: Any) -> tuple[Any, int] | None:
    """The (Conv/ConvTranspose node, input index) a weight Q/DQ chain ends in, if any."""
    frontier = [node]
    for _ in range(2):  # Q -> DQ -> Conv at most
        nxt = []
        for n in frontier:
            for consumer, idx in g.consumers.get(n.output[0], []):
                if consumer.op_type in ("Conv", "ConvTranspose"):
                    return consumer, idx
                if consumer.op_type in ("QuantizeLinear", "DequantizeLinear"):
                    nxt.append(consumer)
        frontier = nxt
    return None


def _quantizes_constant(g: _Graph, node: Any) -> bool:
    x = node.input[0]
    if g.is_const(x):
        return True
    prod = g.producer.get(x)
    return prod is not None and prod.op_type == "QuantizeLinear" and g.is_const(prod.input[0])


def _qdq_rules(g: _Graph, trt_version: str) -> list[Finding]:
    out = []
    axes = trt_api.weight_axes(trt_version)
    for name, node in g.nodes:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if node.op_type == "DequantizeLinear" and g.dtype(node.input[0]) == np.int32:
            out.append(Finding("qdq-int32-bias", "error", name,
                               "an int32 tensor (quantized bias) feeds DequantizeLinear, which the parser refuses "
                               "(onnx-tensorrt#850)", "keep biases float: quantize_static(extra_options="
                               "{'QuantizeBias': False})"))
        zp = _zero_point(g, node)
        if zp is not None and zp.dtype == np.uint8:
            out.append(Finding("qdq-zero-point", "error", name,
                               "uint8 (asymmetric) quantization: TensorRT quantizes to signed INT8 only",
                               "quantize with activation_type=weight_type=QuantType.QInt8 and ActivationSymmetric"))
        elif zp is not None and np.any(zp != 0):
            out.append(Finding("qdq-zero-point", "error", name,
                               f"INT8 zero point {zp.ravel()[:4].tolist()} is not 0: TensorRT supports symmetric "
                               "quantization only", "quantize with ActivationSymmetric=True and WeightSymmetric=True"))
        size = _scale_size(g, node)
        if size is None or size <= 1:
            continue
        axis = _attr(node, "axis", 1)
        if not _quantizes_constant(g, node):
            out.append(Finding("qdq-axis", "error", name,
                               f"per-channel scales ({size} values) on an activation: TensorRT quantizes "
                               "activations per tensor only", "use one scale for activations (per_channel applies "
                               "to weights only)"))
            continue
        target = _weight_consumer(g, node)
        if target is None or target[1] != 1:
            continue
        conv = target[0]
        expected = axes[conv.op_type]
        if axis % _weight_rank(g, node) != expected:
            what = _AXIS_NAMES[conv.op_type][expected]
            fix = (f"edgeseg.backends.trt_lint.retarget_weight_axes(model, {trt_version!r}), or quantize with "
                   f"axis={expected} (QDQOpTypePerChannelSupportToAxis {axes})")
            out.append(Finding("qdq-axis", "error", name,
                               f"per-channel axis {axis} on the weight of {conv.op_type} {g.name(conv)}; TensorRT "
                               f"{trt_version} takes axis {expected} ({what})", fix))
    return out


# ----------------------------------------------------------------------------- weight axes per version
# Which axis each TensorRT version takes: trt_api.weight_axes (the sources are cited there).
_AXIS_NAMES = {"Conv": {0: "output channels, [K, C/g, kh, kw]"},
               "ConvTranspose": {0: "input channels, [C, K/g, kh, kw]", 1: "output channels, [C, K/g, kh, kw]"}}


def retarget_weight_axes(model: Any, trt_version: str) -> int:
    """Rewrite in place the per-channel Q/DQ pairs on ConvTranspose weights of a loaded ``onnx.ModelProto`` to the
    axis TensorRT ``trt_version`` takes, the scales recomputed from the float weight as the quantizer does
    (symmetric INT8: max |w| over the other axes / 127, 1 for an all-zero channel; the scale keeps its dtype).
    Returns the number of weights rewritten (0: already right, or per-tensor). Weights stored as INT8 (a DQ with
    no Q) cannot be requantized losslessly: EdgesegError."""
    from onnx import helper, numpy_helper

    g = _Graph(model)
    inits = {i.name: i for i in model.graph.initializer}
    axis = trt_api.convtranspose_weight_axis(trt_version)
    changed, replaced = 0, set()
    for _, dq in list(g.nodes):
        target = _weight_consumer(g, dq) if dq.op_type == "DequantizeLinear" else None
        if target is None or target[0].op_type != "ConvTranspose" or (_scale_size(g, dq) or 0) <= 1:
            continue
        if _attr(dq, "axis", 1) % _weight_rank(g, dq) == axis:
            continue
        q = g.producer.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear" or q.input[0] not in inits:
            raise EdgesegError(f"the ConvTranspose weight behind {dq.name or dq.output[0]} is stored quantized; "
                               f"requantize it from the FP32 model for TensorRT {trt_version} (edgeseg quantize)")
        w = numpy_helper.to_array(inits[q.input[0]]).astype(np.float32)
        others = tuple(d for d in range(w.ndim) if d != axis)
        amax = np.abs(w).max(axis=others)
        scale_dtype = numpy_helper.to_array(inits[dq.input[1]]).dtype
        scale = np.where(amax > 0, amax / np.float32(127), np.float32(1)).astype(scale_dtype)
        names = (f"{q.input[0]}_scale_axis{axis}", f"{q.input[0]}_zero_point_axis{axis}")
        replaced.update(q.input[1:3])
        model.graph.initializer.extend([numpy_helper.from_array(scale, names[0]),
                                        numpy_helper.from_array(np.zeros(scale.shape, np.int8), names[1])])
        for node in (q, dq):
            node.input[1:3] = list(names)
            for attr in node.attribute:
                if attr.name == "axis":
                    attr.i = axis
            if not any(a.name == "axis" for a in node.attribute):
                node.attribute.append(helper.make_attribute("axis", axis))
        changed += 1
    _drop_unused(model, replaced)
    return changed


def _weight_rank(g: _Graph, dq: Any) -> int:
    """Rank of the weight a DequantizeLinear reconstructs (its constant input, or the float weight behind its
    QuantizeLinear); 4 when unknown."""
    src = dq.input[0]
    q = g.producer.get(src)
    if q is not None and q.op_type == "QuantizeLinear":
        src = q.input[0]
    shape = g.shape(src)
    return len(shape) if shape else 4


def retarget_weight_axes_file(path: str | Path, trt_version: str) -> int:
    """``retarget_weight_axes`` on the ONNX file ``path`` (rewritten in place only when something changed, its
    ``edgeseg.qdq_trt_target`` metadata set to ``trt_version``); returns the number of weights rewritten."""
    import onnx

    from edgeseg.export.metadata import set_metadata
    from edgeseg.io_utils import atomic_path

    model = onnx.load(str(path))
    changed = retarget_weight_axes(model, trt_version)
    if changed:
        set_metadata(model, {"qdq_trt_target": str(trt_version), "qdq_weight_axes": trt_api.weight_axes(trt_version)})
        with atomic_path(path) as tmp:
            onnx.save(model, str(tmp))
    return changed


def _drop_unused(model: Any, names: set[str]) -> None:
    """Remove the initializers ``names`` that no node reads any more."""
    used = {name for node in model.graph.node for name in node.input}
    keep = [i for i in model.graph.initializer if i.name in used or i.name not in names]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)


def _bounds(model: Any) -> dict[str, Any]:
    """The export's recorded shape bounds; {} when absent or unreadable (the lint then warns)."""
    from edgeseg.export.metadata import metadata_of

    try:
        value = metadata_of(model).get("shape_bounds")
    except EdgesegError:  # some edgeseg metadata is not JSON
        return {}
    return value if isinstance(value, dict) else {}


def _dynamic_inputs(model: Any) -> dict[str, list[str]]:
    """Graph input name -> its dynamic dims (symbolic names, '?' when unnamed)."""
    inits = {i.name for i in model.graph.initializer}
    out = {}
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        dims = inp.type.tensor_type.shape.dim
        dyn = [d.dim_param or "?" for d in dims if not d.HasField("dim_value")]
        if dyn:
            out[inp.name] = dyn
    return out


def _dynamic_rule(model: Any) -> list[Finding]:
    bounds = _bounds(model)
    out = []
    for name, dims in _dynamic_inputs(model).items():
        b = bounds.get(name)
        if isinstance(b, dict) and all(k in b for k in ("min", "opt", "max")):
            continue
        out.append(Finding("dynamic-no-bounds", "warning", name,
                           f"dynamic dims {dims} have no stated bounds; a TensorRT build needs an optimization "
                           "profile (min/opt/max) and would have to guess",
                           "export with edgeseg export --dynamic (writes edgeseg.shape_bounds) or pass "
                           "--minShapes/--optShapes/--maxShapes"))
    return out


def _dla_rules(model: Any, g: _Graph, version: str) -> list[Finding]:
    out = []
    for name, dims in _dynamic_inputs(model).items():
        out.append(Finding("dla-dynamic", "error", name,
                           f"DLA has no dynamic shapes (min = opt = max), the input has dynamic dims {dims}",
                           "export a static shape for DLA (edgeseg export without --dynamic)"))
    for name, node in g.nodes:
        if node.op_type == "Resize" and _attr(node, "mode", "nearest") == "linear":
            transform = _attr(node, "coordinate_transformation_mode", "half_pixel")
            if transform != "half_pixel":
                out.append(Finding("dla-resize", "error", name,
                                   f"DLA bilinear Resize accepts half_pixel only, this one is {transform!r}; the layer "
                                   "falls back to the GPU (GPU_FALLBACK) or the build fails",
                                   "use F.interpolate(mode='bilinear', align_corners=False)"))
    reason = trt_api.dla_support(version, *trt_api.JETSON)
    if reason:
        out.append(Finding("dla-version", "warning", "model", f"{reason} (the lint assumes a Jetson)",
                           "build DLA engines with TensorRT 8.5-10.7, or 11.4.1+ on Jetson AGX Orin with "
                           "JetPack >= 7.2.2"))
    return out


__all__ = ["Finding", "check_onnx", "retarget_weight_axes", "retarget_weight_axes_file"]
