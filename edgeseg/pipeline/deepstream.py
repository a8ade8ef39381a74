"""`edgeseg deploy`: a bundle as a DeepStream nvinfer config or a Triton model repository.

    write_deepstream("bundle/", "ds/")   # ds/config_infer_edgeseg.txt, labels.txt, model.ds.onnx, README.md
    write_triton("bundle/", "models/")   # models/NAME/config.pbtxt, models/NAME/1/model.onnx (or model.plan)

DeepStream (Gst-nvinfer) preprocesses with ``y = net-scale-factor * (x - offsets[c])`` on 0..255
pixels converted to ``model-color-format``; edgeseg trains with ``y = (x * scale - mean[c]) / std[c]``
with mean/std listed in the model's channel order. So ``offsets[c] = mean[c] / scale`` exactly and
``net-scale-factor = scale / std``, a single factor: per-channel stds are approximated by their mean
(channel c comes out scaled by ``std[c] / mean_std``); the file says so, and a warning is returned
when the stds differ from their mean by more than STD_SPREAD_WARN.

nvinfer's semantic segmentation parser picks, per pixel, the class whose output value exceeds both
``segmentation-threshold`` and -1 (Gst-nvinfer output parsing), so raw logits would leave pixels
whose logits are all low unlabelled (-1). The DeepStream folder therefore carries ``model.ds.onnx``:
the bundle's FP32 ONNX with a Softmax over classes appended (output ``probs``); with probabilities
``segmentation-threshold=0.0`` keeps the plain argmax for every pixel. nvinfer builds its TensorRT
engine from it on the device (INT8 from the bundle's calibration.cache) and saves it under the
``model-engine-file`` name nvinfer itself chooses, so later starts load it.

Triton gets the bundle's own model unchanged: ``onnxruntime_onnx`` with the precision's ONNX, or
``tensorrt_plan`` with ``model.engine`` when the bundle has one; ``max_batch_size`` is the bundle's
largest batch when the batch dim is dynamic, else 0 with full dims.
"""
from __future__ import annotations

import configparser
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edgeseg.artifacts import Bundle, read_bundle, staging_dir, verify_bundle
from edgeseg.data.preprocess import Preprocessing
from edgeseg.errors import EdgesegError
from edgeseg.io_utils import atomic_path

STD_SPREAD_WARN = 0.02  # warn when a channel's std differs from the mean std by more than 2 %
DS_CONFIG = "config_infer_edgeseg.txt"
DS_ONNX = "model.ds.onnx"
DS_OUTPUT = "probs"
NETWORK_MODES = {"fp32": 0, "int8": 1, "fp16": 2}  # nvinfer network-mode
COLOR_FORMATS = {"RGB": 0, "BGR": 1}  # nvinfer model-color-format (2 = GRAY)
SCALING_FILTER_BILINEAR = 1  # NvBufSurfTransform_Inter_Bilinear: edgeseg resizes bilinearly

# ----------------------------------------------------------------------------- nvinfer keys and ranges
# Source: NVIDIA DeepStream SDK Developer Guide, "Gst-nvinfer" > "Gst-nvinfer File Configuration
# Specifications" (DeepStream 6.x / 7.x), and the open-source parser that enforces them:
# sources/gst-plugins/gst-nvinfer/gstnvinfer_property_parser.h (key names) and .cpp (ranges, e.g.
# batch-size 1..NVDSINFER_MAX_BATCH_SIZE=1024, network-mode 0/1/2, network-type 0/1/2/3/100,
# model-color-format 0/1/2, offsets at most 4 values, segmentation-output-order 0/1,
# segmentation-threshold >= 0, gie-unique-id > 0, process-mode 1/2).
NVINFER_DOC = ("DeepStream Developer Guide, Gst-nvinfer, 'Gst-nvinfer File Configuration Specifications' "
               "(DS 6.x/7.x); gst-nvinfer/gstnvinfer_property_parser.{h,cpp}")
NVDSINFER_MAX_BATCH_SIZE = 1024


def _int(lo: int | None = None, hi: int | None = None, choices: tuple[int, ...] | None = None):
    def check(v: str) -> str | None:
        try:
            n = int(v)
        except ValueError:
            return f"expected an integer, got {v!r}"
        if choices is not None and n not in choices:
            return f"expected one of {', '.join(map(str, choices))}, got {n}"
        if (lo is not None and n < lo) or (hi is not None and n > hi):
            return f"expected {lo if lo is not None else '-inf'}..{hi if hi is not None else 'inf'}, got {n}"
        return None
    return check


def _float(lo: float | None = None, positive: bool = False):
    def check(v: str) -> str | None:
        try:
            x = float(v)
        except ValueError:
            return f"expected a number, got {v!r}"
        if positive and not x > 0:
            return f"expected a number > 0, got {x}"
        if lo is not None and x < lo:
            return f"expected a number >= {lo}, got {x}"
        return None
    return check


def _bool(v: str) -> str | None:
    return None if v.strip().lower() in ("0", "1", "true", "false") else f"expected 0/1 or true/false, got {v!r}"


def _text(v: str) -> str | None:
    return None if v.strip() else "expected a non-empty value"


def _list(item: Callable[[str], str | None], min_len: int = 1, max_len: int | None = None, exact: int | None = None):
    def check(v: str) -> str | None:
        parts = [p for p in v.split(";") if p.strip()]
        if exact is not None and len(parts) != exact:
            return f"expected {exact} values separated by ';', got {len(parts)}"
        if len(parts) < min_len or (max_len is not None and len(parts) > max_len):
            return f"expected {min_len}..{max_len or 'any'} values separated by ';', got {len(parts)}"
        for p in parts:
            problem = item(p)
            if problem:
                return problem
        return None
    return check


NVINFER_KEYS: dict[str, Callable[[str], str | None]] = {
    # element and runtime
    "gpu-id": _int(0), "gie-unique-id": _int(1), "process-mode": _int(choices=(1, 2)), "interval": _int(0),
    "batch-size": _int(1, NVDSINFER_MAX_BATCH_SIZE), "labelfile-path": _text, "output-tensor-meta": _bool,
    "secondary-reinfer-interval": _int(0), "tensor-meta-pool-size": _int(1), "workspace-size": _int(0),
    "enable-dla": _bool, "use-dla-core": _int(0), "disable-output-host-copy": _bool,
    # model and precision
    "network-mode": _int(choices=tuple(NETWORK_MODES.values())), "network-type": _int(choices=(0, 1, 2, 3, 100)),
    "model-engine-file": _text, "int8-calib-file": _text, "onnx-file": _text, "output-blob-names": _list(_text),
    "force-implicit-batch-dim": _bool, "infer-dims": _list(_int(1), exact=3), "output-io-formats": _list(_text),
    "layer-device-precision": _list(_text), "custom-lib-path": _text, "engine-create-func-name": _text,
    "custom-network-config": _text, "tlt-encoded-model": _text, "tlt-model-key": _text,
    "model-file": _text, "proto-file": _text, "uff-file": _text,
    # preprocessing
    "net-scale-factor": _float(positive=True), "offsets": _list(_float(), 1, 4),
    "model-color-format": _int(choices=(0, 1, 2)), "mean-file": _text, "maintain-aspect-ratio": _bool,
    "symmetric-padding": _bool, "scaling-filter": _int(0, 6), "scaling-compute-hw": _int(0, 2),
    "network-input-order": _int(choices=(0, 1)), "input-tensor-from-meta": _bool,
    # output parsing
    "num-detected-classes": _int(1), "segmentation-threshold": _float(0.0),
    "segmentation-output-order": _int(choices=(0, 1)), "output-instance-mask": _bool,
    "cluster-mode": _int(0, 4), "classifier-threshold": _float(0.0), "classifier-async-mode": _bool,
    "parse-bbox-func-name": _text, "parse-classifier-func-name": _text, "filter-out-class-ids": _list(_int(0)),
    "operate-on-gie-id": _int(), "operate-on-class-ids": _list(_int(0)),
}


def validate_nvinfer(text: str, root: str | Path | None = None) -> list[str]:
    """Problems in an nvinfer config (empty list: none): keys outside NVINFER_KEYS, values outside
    their documented ranges, and the semantic-segmentation essentials (network-type=2, a model, the
    class count, output names; INT8 with a calibration file; use-dla-core only with enable-dla).
    With ``root`` (the config's folder), files it names must exist there (the engine excepted:
    nvinfer writes it on first start)."""
    parser = configparser.ConfigParser(interpolation=None, delimiters=("=",), comment_prefixes=("#",),
                                       inline_comment_prefixes=None, strict=True, empty_lines_in_values=False)
    try:
        parser.read_string(text)
    except configparser.Error as e:
        return [f"not a key file nvinfer can read: {str(e).splitlines()[0]}"]
    if not parser.has_section("property"):
        return ["no [property] group"]
    props = dict(parser.items("property"))
    problems = [f"unknown key {k!r}" for k in props if k not in NVINFER_KEYS]
    problems += [f"{k}: {msg}" for k, v in props.items() if k in NVINFER_KEYS and (msg := NVINFER_KEYS[k](v))]
    if problems:
        return problems
    if props.get("network-type") != "2":
        problems.append("network-type must be 2 (segmentation)")
    for key in ("num-detected-classes", "output-blob-names"):
        if key not in props:
            problems.append(f"{key} is required for segmentation")
    if "onnx-file" not in props and "model-engine-file" not in props:
        problems.append("neither onnx-file nor model-engine-file is set")
    if props.get("network-mode") == "1" and "int8-calib-file" not in props:
        problems.append("network-mode=1 (INT8) without int8-calib-file: nvinfer falls back to FP16")
    if "use-dla-core" in props and props.get("enable-dla", "0").lower() not in ("1", "true"):
        problems.append("use-dla-core is set but enable-dla is not 1")
    if "offsets" in props and props.get("model-color-format") in ("0", "1") and len(props["offsets"].split(";")) != 3:
        problems.append("offsets needs 3 values for an RGB/BGR model")
    if root is not None:
        for key in ("onnx-file", "int8-calib-file", "labelfile-path"):
            if key in props and not (Path(root) / props[key]).is_file():
                problems.append(f"{key}={props[key]} does not exist next to the config")
    return problems


# ----------------------------------------------------------------------------- preprocessing arithmetic

@dataclass(frozen=True)
class NvinferNormalization:
    net_scale_factor: float
    offsets: tuple[float, float, float]  # in the model's channel order
    model_color_format: int
    mean_std: float  # the std that net-scale-factor assumes for every channel
    max_rel_error: float  # max over channels of |std[c] / mean_std - 1|: the relative error of nvinfer's input
    warning: str | None


def nvinfer_normalization(pre: Preprocessing) -> NvinferNormalization:
    """net-scale-factor, offsets and model-color-format for ``pre`` (see the module docstring)."""
    mean_std = sum(pre.std) / 3.0
    error = max(abs(s / mean_std - 1.0) for s in pre.std)
    warning = None
    if error > STD_SPREAD_WARN:
        warning = (f"the model's per-channel std {list(pre.std)} differs from its mean {mean_std:.6g} by up to "
                   f"{100 * error:.1f}% (> {100 * STD_SPREAD_WARN:.0f}%); nvinfer has one net-scale-factor, so its "
                   f"input is off by that much per channel: check mIoU on the device, or train with equal stds")
    return NvinferNormalization(pre.scale / mean_std, tuple(m / pre.scale for m in pre.mean),
                                COLOR_FORMATS[pre.channel_order], mean_std, error, warning)


# ----------------------------------------------------------------------------- model I/O

@dataclass(frozen=True)
class TensorInfo:
    name: str
    elem_type: int  # onnx.TensorProto data type
    dims: tuple[int, ...]  # -1 where dynamic


def onnx_io(path: Path) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """Graph inputs (initializers excluded) and outputs of an ONNX file."""
    from edgeseg.export import load_onnx

    graph = load_onnx(path, require_input=False).graph
    inits = {t.name for t in graph.initializer}

    def info(v) -> TensorInfo:
        t = v.type.tensor_type
        return TensorInfo(v.name, t.elem_type, tuple(d.dim_value if d.dim_value > 0 else -1 for d in t.shape.dim))

    return [info(v) for v in graph.input if v.name not in inits], [info(v) for v in graph.output]


def _concrete_output_dims(path: Path, inputs: list[TensorInfo], outputs: list[TensorInfo],
                          opt: list[int] | None) -> list[tuple[int, ...]]:
    """Output dims with the static ones filled in by running the model once at its opt shape
    (exports leave e.g. the class dim symbolic when the batch is dynamic)."""
    if all(d > 0 for o in outputs for d in o.dims[1:]) or len(inputs) != 1:
        return [o.dims for o in outputs]
    import numpy as np

    from edgeseg.ort_session import make_session

    shape = opt or [d if d > 0 else 1 for d in inputs[0].dims]
    session = make_session(path)
    results = session.run(None, {inputs[0].name: np.zeros(shape, np.float32)})
    spatial_dynamic = any(d < 0 for d in inputs[0].dims[2:])
    dims = []
    for o, r in zip(outputs, results):
        dims.append(tuple(-1 if i == 0 and o.dims[0] < 0 else (-1 if spatial_dynamic and i >= 2 else int(s))
                          for i, s in enumerate(r.shape)))
    return dims


def _opt_shape(bundle: Bundle) -> list[int] | None:
    bounds = ((bundle.manifest.get("input") or {}).get("shape_bounds") or {})
    first = next(iter(bounds.values()), None)
    return list(first["opt"]) if first else None


def _batch_bounds(bundle: Bundle, dims: tuple[int, ...]) -> tuple[int, int]:
    """(min, max) batch: the ONNX dim when static, else the manifest's shape bounds."""
    if dims and dims[0] > 0:
        return dims[0], dims[0]
    bounds = ((bundle.manifest.get("input") or {}).get("shape_bounds") or {})
    first = next(iter(bounds.values()), None)
    if first is None:
        raise EdgesegError(f"{bundle.root}: the batch dim is dynamic but the manifest records no shape bounds; "
                           "rebuild the bundle with this edgeseg")
    return int(first["min"][0]), int(first["max"][0])


def _input_size(bundle: Bundle, dims: tuple[int, ...]) -> tuple[int, int]:
    """(H, W) the network runs at: the manifest's preprocessing size, else the model's static or opt dims."""
    size = bundle.preprocessing.size or (tuple(dims[2:4]) if len(dims) == 4 and min(dims[2:4]) > 0 else None)
    if size is None:
        opt = _opt_shape(bundle)
        size = tuple(opt[2:4]) if opt else None
    if size is None:
        raise EdgesegError(f"{bundle.root}: no input size in the manifest or the model; rebuild with --input-size HxW")
    return int(size[0]), int(size[1])


# ----------------------------------------------------------------------------- DeepStream

@dataclass
class DeployResult:
    out: Path
    files: list[str]
    warnings: list[str] = field(default_factory=list)


def _write_softmax_onnx(src: Path, dst: Path) -> TensorInfo:
    """``src`` with Softmax(axis=1) appended to its single float output, renamed DS_OUTPUT."""
    import onnx
    from onnx import helper

    from edgeseg.export import load_onnx

    model = load_onnx(src)
    graph = model.graph
    if len(graph.output) != 1 or graph.output[0].type.tensor_type.elem_type not in (onnx.TensorProto.FLOAT,
                                                                                   onnx.TensorProto.FLOAT16):
        raise EdgesegError(f"{src.name} must have one float (N, C, H, W) scores output for nvinfer segmentation, "
                           f"got {[o.name for o in graph.output]}; rebuild the bundle without --argmax")
    out = graph.output[0]
    graph.node.append(helper.make_node("Softmax", [out.name], [DS_OUTPUT], axis=1, name="edgeseg_deepstream_softmax"))
    probs = onnx.ValueInfoProto()
    probs.CopyFrom(out)
    probs.name = DS_OUTPUT
    graph.output.remove(out)
    graph.output.append(probs)
    onnx.checker.check_model(model)
    with atomic_path(dst) as tmp:
        onnx.save(model, str(tmp))
    inputs, _ = onnx_io(dst)
    return inputs[0]


def _fmt(x: float) -> str:
    """9 significant digits, always with a decimal point (GKeyFile and protobuf read both)."""
    return repr(float(f"{x:.9g}"))


def nvinfer_config(bundle: Bundle, *, onnx_name: str = DS_ONNX, input_info: TensorInfo | None = None,
                   batch_size: int | None = None, segmentation_threshold: float = 0.0,
                   gpu_id: int = 0) -> tuple[str, list[str]]:
    """(config text, warnings) for ``bundle`` as written next to ``onnx_name`` by write_deepstream."""
    pre = bundle.preprocessing
    norm = nvinfer_normalization(pre)
    warnings = [norm.warning] if norm.warning else []
    dims = input_info.dims if input_info is not None else ()
    lo, hi = _batch_bounds(bundle, dims)
    batch = batch_size if batch_size is not None else (_opt_shape(bundle) or [lo])[0]
    if not lo <= batch <= hi:
        raise EdgesegError(f"--batch-size {batch} is outside the model's batch bounds {lo}..{hi}; pass a size in "
                           "them or rebuild with `edgeseg build --dynamic batch`")
    if bundle.precision not in NETWORK_MODES:
        raise EdgesegError(f"bundle precision {bundle.precision!r} has no nvinfer network-mode; expected "
                           f"{', '.join(NETWORK_MODES)}")
    if not segmentation_threshold >= 0:
        raise EdgesegError(f"segmentation threshold must be >= 0 (nvinfer rejects negatives), "
                           f"got {segmentation_threshold}; pass 0.0 for the plain argmax")
    size = _input_size(bundle, dims)
    engine = bundle.manifest.get("engine") or {}
    dla_core = engine.get("dla_core")
    device = f"dla{dla_core}" if dla_core is not None else f"gpu{gpu_id}"
    mode = bundle.precision
    engine_name = f"{onnx_name}_b{batch}_{device}_{mode}.engine"  # nvinfer's own name for the engine it builds
    m = bundle.manifest
    cache = bundle.file("calibration_cache")
    if mode == "int8" and cache is None:
        raise EdgesegError(f"{bundle.root} is INT8 but has no calibration.cache for nvinfer; rebuild it with "
                           "`edgeseg build --precision int8`")
    header = cache.read_text().splitlines()[0] if mode == "int8" else ""
    std = ", ".join(_fmt(s) for s in pre.std)
    lines = [
        f"# DeepStream Gst-nvinfer config for the edgeseg bundle {bundle.root.name} ({m.get('model')}, {mode}, "
        f"{len(bundle.classes)} classes), written by edgeseg {m.get('edgeseg_version')}.",
        f"# Keys and ranges checked against: {NVINFER_DOC}.",
        "# Preprocessing: nvinfer computes y = net-scale-factor * (x - offsets[c]) on 0..255 pixels in "
        f"{pre.channel_order} order;",
        f"# the model was trained on y = (x * {_fmt(pre.scale)} - mean[c]) / std[c] with std = [{std}].",
        "# offsets = mean / scale (exact). nvinfer has ONE scale factor for all channels, so the per-channel std is",
        f"# APPROXIMATED by the mean std {_fmt(norm.mean_std)}: net-scale-factor = scale / mean std, and channel c",
        f"# comes out scaled by std[c] / mean std (largest deviation {100 * norm.max_rel_error:.2f}%).",
        f"# Output: {onnx_name} is the bundle's FP32 ONNX plus a Softmax over classes (output '{DS_OUTPUT}'), so",
        "# segmentation-threshold compares probabilities (0.0 = plain argmax, every pixel labelled).",
        f"# Engine: nvinfer builds it from {onnx_name} on the first start ({mode.upper()}"
        + (f", from calibration.cache: {header}" if mode == "int8" else "") + ") and saves it as model-engine-file.",
    ]
    if bundle.file("engine") is not None:
        lines.append("# The bundle's own model.engine is not used: it outputs raw logits, which the threshold would "
                     "mis-read.")
    lines += [
        "[property]",
        f"gpu-id={gpu_id}",
        f"net-scale-factor={_fmt(norm.net_scale_factor)}",
        f"offsets={';'.join(_fmt(o) for o in norm.offsets)}",
        f"model-color-format={norm.model_color_format}",
        f"onnx-file={onnx_name}",
        f"model-engine-file={engine_name}",
    ]
    if mode == "int8":
        lines.append("int8-calib-file=calibration.cache")
    lines += [
        "labelfile-path=labels.txt",
        f"infer-dims=3;{size[0]};{size[1]}",
        f"batch-size={batch}",
        f"network-mode={NETWORK_MODES[mode]}",
        "network-type=2",
        f"num-detected-classes={len(bundle.classes)}",
        f"segmentation-threshold={_fmt(segmentation_threshold)}",
        "segmentation-output-order=0",
        f"output-blob-names={DS_OUTPUT}",
        "process-mode=1",
        "gie-unique-id=1",
        "interval=0",
        "maintain-aspect-ratio=0",
        f"scaling-filter={SCALING_FILTER_BILINEAR}",
    ]
    if dla_core is not None:
        lines += ["enable-dla=1", f"use-dla-core={dla_core}"]
    return "\n".join(lines) + "\n", warnings


def _gst_readme(bundle: Bundle, size: tuple[int, int], warnings: list[str]) -> str:
    h, w = size
    notes = "".join(f"- {w_}\n" for w_ in warnings)
    return (
        f"# DeepStream files for {bundle.root.name}\n\n"
        f"- `{DS_CONFIG}`: the Gst-nvinfer config (semantic segmentation, network-type=2)\n"
        f"- `{DS_ONNX}`: the bundle's FP32 ONNX with a Softmax appended (output `{DS_OUTPUT}`)\n"
        "- `labels.txt`: one class name per line, in class-index order\n"
        + ("- `calibration.cache`: the bundle's TensorRT implicit-INT8 calibration cache (TensorRT 8.6 / 10; "
           "TensorRT 11 has no implicit INT8)\n" if bundle.precision == "int8" else "")
        + "\nThe first start builds the TensorRT engine on the device (minutes on a Jetson) and saves it\n"
        "next to the config under the `model-engine-file` name; later starts load it.\n\n"
        "A minimal pipeline (an H.264 MP4; set the muxer's width/height to your camera's resolution):\n\n"
        "```bash\n"
        "gst-launch-1.0 filesrc location=input.mp4 ! qtdemux ! h264parse ! nvv4l2decoder ! m.sink_0 \\\n"
        "  nvstreammux name=m batch-size=1 width=1280 height=720 ! \\\n"
        f"  nvinfer config-file-path={DS_CONFIG} ! nvsegvisual width={w} height={h} ! \\\n"
        "  nvvideoconvert ! nveglglessink\n"
        "```\n\n"
        "On a Jetson use `nv3dsink` as the sink; headless, use `fakesink`. The class map per frame is in\n"
        "`NvDsInferSegmentationMeta` (frame user meta) for applications.\n"
        + (f"\nWarnings:\n{notes}" if notes else "")
    )


def _check_target(out: Path, marker: str) -> None:
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / marker).exists())):
        raise EdgesegError(f"{out} exists and holds other files; expected a new or empty folder (or one edgeseg "
                           "deploy wrote before, which is replaced); choose another folder")


def write_deepstream(bundle_dir: str | Path, out: str | Path, *, batch_size: int | None = None,
                     segmentation_threshold: float = 0.0, verify: bool = True) -> DeployResult:
    """Write the nvinfer config, labels.txt, model.ds.onnx (+ calibration.cache for INT8) and a README
    with a gst-launch line into ``out`` (replaced as a whole; a foreign non-empty folder is refused)."""
    bundle = read_bundle(bundle_dir)
    if verify:
        verify_bundle(bundle)
    out = Path(out)
    _check_target(out, DS_CONFIG)
    with staging_dir(out) as stage:
        info = _write_softmax_onnx(bundle.file("fp32"), stage / DS_ONNX)
        text, warnings = nvinfer_config(bundle, input_info=info, batch_size=batch_size,
                                        segmentation_threshold=segmentation_threshold)
        if bundle.precision == "int8":
            shutil.copyfile(bundle.file("calibration_cache"), stage / "calibration.cache")
        (stage / "labels.txt").write_text("\n".join(bundle.classes) + "\n")
        problems = validate_nvinfer(text, stage)
        if problems:
            raise EdgesegError(f"the generated nvinfer config fails its own check ({'; '.join(problems)}); "
                               "report this bug")
        (stage / DS_CONFIG).write_text(text)
        (stage / "README.md").write_text(_gst_readme(bundle, _input_size(bundle, info.dims), warnings))
        files = sorted(p.name for p in stage.iterdir())
    return DeployResult(out, files, warnings)


# ----------------------------------------------------------------------------- Triton

TRITON_TYPES = {1: "TYPE_FP32", 2: "TYPE_UINT8", 3: "TYPE_INT8", 4: "TYPE_UINT16", 5: "TYPE_INT16", 6: "TYPE_INT32",
                7: "TYPE_INT64", 9: "TYPE_BOOL", 10: "TYPE_FP16", 11: "TYPE_FP64", 12: "TYPE_UINT32",
                13: "TYPE_UINT64", 16: "TYPE_BF16"}  # onnx.TensorProto -> Triton DataType


def _triton_source(bundle: Bundle) -> tuple[str, Path, Path]:
    """(platform, model file to ship, ONNX that describes its I/O)."""
    engine = bundle.file("engine")
    if engine is not None:
        source = (bundle.manifest.get("engine") or {}).get("source") or bundle.manifest["roles"]["fp32"]
        described = bundle.root / source
        return "tensorrt_plan", engine, described
    variant = bundle.file(bundle.precision) or bundle.file("fp32")
    return "onnxruntime_onnx", variant, variant


def _tensor_block(kind: str, tensors: list[tuple[str, int, tuple[int, ...]]]) -> list[str]:
    lines = [f"{kind} ["]
    for i, (name, elem, dims) in enumerate(tensors):
        if elem not in TRITON_TYPES:
            raise EdgesegError(f"tensor {name!r} has ONNX type {elem}, which Triton cannot carry; re-export with "
                               "float32 inputs/outputs")
        lines += ["  {", f'    name: "{name}"', f"    data_type: {TRITON_TYPES[elem]}",
                  f"    dims: [ {', '.join(map(str, dims))} ]", "  }" + ("," if i < len(tensors) - 1 else "")]
    return lines + ["]"]


def triton_config(bundle: Bundle, model_name: str) -> tuple[str, Path, str]:
    """(config.pbtxt text, file to copy, its name in the version folder) for ``bundle``."""
    platform, model_file, described = _triton_source(bundle)
    inputs, outputs = onnx_io(described)
    if len(inputs) != 1:
        raise EdgesegError(f"{described.name} has {len(inputs)} inputs; edgeseg bundles have one image input; rebuild")
    out_dims = _concrete_output_dims(described, inputs, outputs, _opt_shape(bundle))
    if platform == "tensorrt_plan":
        profile = (bundle.manifest.get("engine") or {}).get("profile") or {}
        lo, hi = (int(profile["min"][0]), int(profile["max"][0])) if profile else _batch_bounds(bundle, inputs[0].dims)
        in_dims = inputs[0].dims if lo == hi else (-1, *inputs[0].dims[1:])
    else:
        lo, hi = _batch_bounds(bundle, inputs[0].dims)
        in_dims = inputs[0].dims
    batched = lo != hi or in_dims[0] < 0
    max_batch = hi if batched else 0
    strip = (lambda d: tuple(d[1:])) if batched else tuple  # Triton's dims leave out the batch dim when batching
    pre = bundle.preprocessing
    lines = [
        f"# Triton model for the edgeseg bundle {bundle.root.name} ({bundle.manifest.get('model')}, "
        f"{bundle.precision}).",
        f"# Clients send preprocessed NCHW float32: (x * {_fmt(pre.scale)} - mean) / std per channel in "
        f"{pre.channel_order} order,",
        f"# mean {list(pre.mean)}, std {list(pre.std)}, resized to {list(pre.size) if pre.size else 'any size'}.",
        "# Outputs are per-class scores (N, C, H, W): argmax over axis 1 gives the class map (names in labels.txt).",
        f'name: "{model_name}"',
        f'platform: "{platform}"',
        f"max_batch_size: {max_batch}",
    ]
    lines += _tensor_block("input", [(inputs[0].name, inputs[0].elem_type, strip(in_dims))])
    lines += _tensor_block("output", [(o.name, o.elem_type, strip(d)) for o, d in zip(outputs, out_dims)])
    if batched:
        lines.append("dynamic_batching { }")
    return "\n".join(lines) + "\n", model_file, "model.plan" if platform == "tensorrt_plan" else "model.onnx"


def triton_model_name(bundle: Bundle) -> str:
    name = f"{bundle.manifest.get('model') or 'edgeseg'}_{bundle.precision}"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def write_triton(bundle_dir: str | Path, repository: str | Path, *, model_name: str | None = None,
                 verify: bool = True) -> DeployResult:
    """Write ``repository/NAME/config.pbtxt``, ``NAME/1/model.onnx`` (or ``model.plan``) and
    ``NAME/labels.txt``; other models in the repository are left alone, NAME is replaced."""
    bundle = read_bundle(bundle_dir)
    if verify:
        verify_bundle(bundle)
    name = model_name or triton_model_name(bundle)
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name in (".", ".."):
        raise EdgesegError(f"Triton model name {name!r} must use letters, digits, '_', '.', '-'; "
                           "pass another --model-name")
    repository = Path(repository)
    try:
        repository.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EdgesegError(f"cannot create the model repository {repository} ({e.strerror}); "
                           "choose another --triton") from None
    target = repository / name
    _check_target(target, "config.pbtxt")
    text, model_file, file_name = triton_config(bundle, name)
    with staging_dir(target) as stage:
        (stage / "1").mkdir()
        shutil.copyfile(model_file, stage / "1" / file_name)
        (stage / "config.pbtxt").write_text(text)
        (stage / "labels.txt").write_text("\n".join(bundle.classes) + "\n")
    return DeployResult(target, ["config.pbtxt", f"1/{file_name}", "labels.txt"])
