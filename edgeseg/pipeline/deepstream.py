"""`edgeseg deploy --deepstream`: a bundle as a DeepStream nvinfer folder (the config's key schema and
its check: ``edgeseg.pipeline.nvinfer_schema``; Triton: ``edgeseg.pipeline.triton``).

    write_deepstream("bundle/", "ds/")   # ds/config_infer_edgeseg.txt, labels.txt, model.ds.onnx, README.md

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
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgeseg.backends.artifacts import role_file
from edgeseg.bundle.manifest import Bundle, read_bundle, staging_dir, verify_bundle
from edgeseg.data.preprocess import Preprocessing
from edgeseg.errors import EdgesegError
from edgeseg.io_utils import atomic_path
from edgeseg.pipeline.deploy_io import (
    DeployResult,
    TensorInfo,
    batch_bounds,
    check_target,
    fmt_number,
    labels_text,
    network_input_size,
    one_line,
    onnx_io,
    opt_shape,
)
from edgeseg.pipeline.nvinfer_schema import (
    COLOR_FORMATS,
    NETWORK_MODES,
    NETWORK_TYPE_SEGMENTATION,
    NVINFER_DOC,
    validate_nvinfer,
)

STD_SPREAD_WARN = 0.02  # warn when a channel's std differs from the mean std by more than 2 %
DS_CONFIG = "config_infer_edgeseg.txt"
DS_ONNX = "model.ds.onnx"
DS_OUTPUT = "probs"
DS_LABELS = "labels.txt"
DS_README = "README.md"
CALIBRATION_CACHE = role_file("calibration_cache")  # the bundle's cache, copied under its own name
# nvinfer scaling-filter per edgeseg resize definition (edgeseg.data.resize): NvBufSurfTransform_Inter_Bilinear
# = 1 is plain bilinear. PIL's antialiasing bilinear has no nvinfer equivalent: bilinear is the nearest.
SCALING_FILTERS = {"bilinear": 1, "pil_bilinear": 1}
EXACT_SCALING = {"bilinear": True, "pil_bilinear": False}

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


# ----------------------------------------------------------------------------- DeepStream

def _write_softmax_onnx(src: Path, dst: Path) -> TensorInfo:
    """``src`` with Softmax(axis=1) appended to its single float output, renamed DS_OUTPUT."""
    import onnx
    from onnx import helper

    from edgeseg.export.metadata import load_onnx

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


def resize_warning(pre: Preprocessing) -> str | None:
    """Why nvinfer's scaling cannot reproduce the model's resize (None when it can)."""
    if EXACT_SCALING[pre.resize]:
        return None
    return (f"the model was trained with resize={pre.resize} (PIL BILINEAR, antialiased when downscaling); nvinfer "
            "has no such filter, so scaling-filter=1 (plain bilinear) is set and frames larger than the network "
            "input reach the model less smoothed than in training: check mIoU on the device, or retrain with "
            "resize=bilinear (the default for new checkpoints) and rebuild")


def _calibration_cache(bundle: Bundle) -> Path:
    """The bundle's TensorRT calibration cache (INT8 needs it: nvinfer builds its engine from it)."""
    cache = bundle.file("calibration_cache")
    if cache is None:
        raise EdgesegError(f"{bundle.root} is INT8 but has no {CALIBRATION_CACHE} for nvinfer (built with a calibrator "
                           "TensorRT cannot replay, or an old bundle); rebuild it with `edgeseg build --precision int8 "
                           "--calibrator entropy`")
    return cache


def _batch_size(bundle: Bundle, dims: tuple[int, ...], batch_size: int | None) -> int:
    """``batch_size`` (default: the bundle's opt batch), within the model's batch bounds."""
    lo, hi = batch_bounds(bundle, dims)
    batch = batch_size if batch_size is not None else (opt_shape(bundle) or [lo])[0]
    if not lo <= batch <= hi:
        raise EdgesegError(f"--batch-size {batch} is outside the model's batch bounds {lo}..{hi}; pass a size in "
                           "them or rebuild with `edgeseg build --dynamic batch`")
    return batch


def _config_comments(bundle: Bundle, norm: NvinferNormalization, onnx_name: str, header: str) -> list[str]:
    """The comment block at the top of the config: where the numbers come from and what is approximated."""
    pre, m, mode = bundle.preprocessing, bundle.manifest, bundle.precision
    std = ", ".join(fmt_number(s) for s in pre.std)
    lines = [
        f"{DS_HEADER} {one_line(bundle.root.name)} ({one_line(m.get('model'))}, {mode}, "
        f"{len(bundle.classes)} classes), written by edgeseg {one_line(m.get('edgeseg_version'))}.",
        f"# Keys and ranges checked against: {NVINFER_DOC}.",
        "# Preprocessing: nvinfer computes y = net-scale-factor * (x - offsets[c]) on 0..255 pixels in "
        f"{pre.channel_order} order;",
        f"# the model was trained on y = (x * {fmt_number(pre.scale)} - mean[c]) / std[c] with std = [{std}].",
        "# offsets = mean / scale (exact). nvinfer has ONE scale factor for all channels, so the per-channel std is",
        f"# APPROXIMATED by the mean std {fmt_number(norm.mean_std)}: net-scale-factor = scale / mean std, and channel c",
        f"# comes out scaled by std[c] / mean std (largest deviation {100 * norm.max_rel_error:.2f}%).",
        f"# Resize: the model was trained with resize={pre.resize}; scaling-filter={SCALING_FILTERS[pre.resize]} "
        + ("(NvBufSurfTransform_Inter_Bilinear) is the same definition: plain bilinear, half-pixel centres."
           if EXACT_SCALING[pre.resize] else
           "(plain bilinear) is NOT the same: nvinfer has no antialiased (PIL) bilinear; see the README warning."),
        "# On a Jetson nvinfer scales on the VIC by default (scaling-compute-hw=0); scaling-compute-hw=1 uses the GPU.",
        f"# Output: {onnx_name} is the bundle's FP32 ONNX plus a Softmax over classes (output '{DS_OUTPUT}'), so",
        "# segmentation-threshold compares probabilities (0.0 = plain argmax, every pixel labelled).",
        f"# Engine: nvinfer builds it from {onnx_name} on the first start ({mode.upper()}"
        + (f", from {CALIBRATION_CACHE}: {one_line(header)}" if mode == "int8" else "")
        + ") and saves it as model-engine-file.",
    ]
    if bundle.file("engine") is not None:
        lines.append(f"# The bundle's own {role_file('engine')} is not used: it outputs raw logits, which the threshold "
                     "would mis-read.")
    return lines


def nvinfer_config(bundle: Bundle, *, onnx_name: str = DS_ONNX, input_info: TensorInfo | None = None,
                   batch_size: int | None = None, segmentation_threshold: float = 0.0,
                   gpu_id: int = 0, cache_header: str | None = None) -> tuple[str, list[str]]:
    """(config text, warnings) for ``bundle`` as written next to ``onnx_name`` by write_deepstream;
    ``cache_header``: the first line of the calibration cache written beside it (INT8)."""
    pre, mode = bundle.preprocessing, bundle.precision
    norm = nvinfer_normalization(pre)
    warnings = [w for w in (norm.warning, resize_warning(pre)) if w]
    dims = input_info.dims if input_info is not None else ()
    batch = _batch_size(bundle, dims, batch_size)
    if mode not in NETWORK_MODES:
        raise EdgesegError(f"bundle precision {mode!r} has no nvinfer network-mode; expected "
                           f"{', '.join(NETWORK_MODES)}")
    if not segmentation_threshold >= 0:
        raise EdgesegError(f"segmentation threshold must be >= 0 (nvinfer rejects negatives), "
                           f"got {segmentation_threshold}; pass 0.0 for the plain argmax")
    size = network_input_size(bundle, dims)
    dla_core = (bundle.manifest.get("engine") or {}).get("dla_core")
    device = f"dla{dla_core}" if dla_core is not None else f"gpu{gpu_id}"
    engine_name = f"{onnx_name}_b{batch}_{device}_{mode}.engine"  # nvinfer's own name for the engine it builds
    header = ""
    if mode == "int8":
        cache = _calibration_cache(bundle)
        header = cache_header or cache.read_text().splitlines()[0]
    lines = _config_comments(bundle, norm, onnx_name, header) + [
        "[property]",
        f"gpu-id={gpu_id}",
        f"net-scale-factor={fmt_number(norm.net_scale_factor)}",
        f"offsets={';'.join(fmt_number(o) for o in norm.offsets)}",
        f"model-color-format={norm.model_color_format}",
        f"onnx-file={onnx_name}",
        f"model-engine-file={engine_name}",
    ]
    if mode == "int8":
        lines.append(f"int8-calib-file={CALIBRATION_CACHE}")
    lines += [
        f"labelfile-path={DS_LABELS}",
        f"infer-dims=3;{size[0]};{size[1]}",
        f"batch-size={batch}",
        f"network-mode={NETWORK_MODES[mode]}",
        f"network-type={NETWORK_TYPE_SEGMENTATION}",
        f"num-detected-classes={len(bundle.classes)}",
        f"segmentation-threshold={fmt_number(segmentation_threshold)}",
        "segmentation-output-order=0",
        f"output-blob-names={DS_OUTPUT}",
        "process-mode=1",
        "gie-unique-id=1",
        "interval=0",
        "maintain-aspect-ratio=0",
        f"scaling-filter={SCALING_FILTERS[pre.resize]}",
    ]
    if dla_core is not None:
        lines += ["enable-dla=1", f"use-dla-core={dla_core}"]
    return "\n".join(lines) + "\n", warnings


def _gst_readme(bundle: Bundle, size: tuple[int, int], warnings: list[str]) -> str:
    h, w = size
    notes = "".join(f"- {w_}\n" for w_ in warnings)
    return (
        f"# DeepStream files for {one_line(bundle.root.name)}\n\n"
        f"- `{DS_CONFIG}`: the Gst-nvinfer config (semantic segmentation, network-type=2)\n"
        f"- `{DS_ONNX}`: the bundle's FP32 ONNX with a Softmax appended (output `{DS_OUTPUT}`)\n"
        f"- `{DS_LABELS}`: one class name per line, in class-index order\n"
        + (f"- `{CALIBRATION_CACHE}`: the bundle's TensorRT implicit-INT8 calibration cache (TensorRT 8.6 / 10; "
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


DS_HEADER = "# DeepStream Gst-nvinfer config for the edgeseg bundle"
DS_FILES = (DS_CONFIG, DS_ONNX, DS_LABELS, CALIBRATION_CACHE, DS_README)


def _own_deepstream_entry(path: Path) -> bool:
    """What write_deepstream writes, and the engines nvinfer saves next to the config on first start."""
    engine = path.name.startswith(f"{DS_ONNX}_b") and path.name.endswith(".engine")
    return path.is_file() and not path.is_symlink() and (path.name in DS_FILES or engine)


def deepstream_trt_version(bundle: Bundle, trt_version: str | None) -> str | None:
    """The TensorRT the DeepStream device runs, for the INT8 calibration cache's first line: ``trt_version``,
    else the bundle engine's, else EdgesegError (INT8 only; other precisions need none)."""
    if bundle.precision != "int8":
        return trt_version
    version = trt_version or (bundle.manifest.get("engine") or {}).get("trt_version")
    if not version:
        raise EdgesegError("an INT8 DeepStream folder needs the TensorRT version nvinfer runs, got none; pass "
                           "--trt-version X.Y.Z (DeepStream 7.1 ships TensorRT 10.3.0, 7.0 ships 8.6.1, 6.3 ships "
                           f"8.5.x), so {CALIBRATION_CACHE} carries the header that TensorRT reads")
    return version


def write_deepstream(bundle_dir: str | Path, out: str | Path, *, batch_size: int | None = None,
                     segmentation_threshold: float = 0.0, verify: bool = True,
                     overwrite: bool = False, trt_version: str | None = None) -> DeployResult:
    """Write the nvinfer config, labels.txt, model.ds.onnx (+ the calibration cache for INT8, its first line
    rewritten for ``trt_version``, the TensorRT of the DeepStream device) and a README with a gst-launch
    line into ``out``, replaced as a whole: a folder edgeseg deploy wrote (with the engines nvinfer saved
    there, which are stale for a new model) or an empty one; anything else only with ``overwrite``."""
    from edgeseg.backends.trt_engine import retarget_cache_file

    out = check_target(Path(out), DS_CONFIG, DS_HEADER, _own_deepstream_entry, "--deepstream", overwrite)
    bundle = read_bundle(bundle_dir, check_hashes=verify)
    if verify:
        verify_bundle(bundle)
    trt_version = deepstream_trt_version(bundle, trt_version)
    cache = _calibration_cache(bundle) if bundle.precision == "int8" else None
    with staging_dir(out) as stage:
        header = retarget_cache_file(cache, stage / CALIBRATION_CACHE, trt_version) if cache is not None else None
        info = _write_softmax_onnx(bundle.file("fp32"), stage / DS_ONNX)
        text, warnings = nvinfer_config(bundle, input_info=info, batch_size=batch_size,
                                        segmentation_threshold=segmentation_threshold, cache_header=header)
        (stage / DS_LABELS).write_text(labels_text(bundle.classes))
        problems = validate_nvinfer(text, stage)
        if problems:
            raise EdgesegError(f"the generated nvinfer config fails its own check ({'; '.join(problems)}); "
                               "report this bug")
        (stage / DS_CONFIG).write_text(text)
        (stage / DS_README).write_text(_gst_readme(bundle, network_input_size(bundle, info.dims), warnings))
        files = sorted(p.name for p in stage.iterdir())
    return DeployResult(out, files, warnings)
