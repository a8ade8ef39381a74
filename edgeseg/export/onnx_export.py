"""nn.Module -> ONNX file that TensorRT 8.6+ parses, checked against the module it came from.

Contract of the file written by ``export_onnx``:

* one input ``input``: float32 (N, 3, H, W), preprocessed as the ``edgeseg.preprocessing``
  metadata says (resize to ``size``, channel order, ``(pixel * scale - mean) / std``);
* one output: ``logits`` float32 (N, C, H, W) at input resolution, or with ``argmax=True``
  ``labels`` int32 (N, H, W), the class index per pixel. int32 rather than uint8: TensorRT's
  ArgMax yields int32 natively, it holds any class count, and uint8 is a TensorRT I/O type only;
* static shapes unless ``dynamic`` is "batch", "hw" or "both"; dynamic dims get (min, opt, max)
  bounds, stored as ``edgeseg.shape_bounds`` (directly a TensorRT optimization profile);
* ``metadata_props`` (values are JSON): ``edgeseg.version``, ``edgeseg.model``, ``edgeseg.classes``,
  ``edgeseg.palette``, ``edgeseg.preprocessing`` (mean, std, scale, channel_order, size = the
  exported input size), ``edgeseg.input_size``, ``edgeseg.output``, ``edgeseg.dynamic``,
  ``edgeseg.shape_bounds``, ``edgeseg.fusion``, ``edgeseg.parity``, ``edgeseg.exporter``.
  ``read_onnx_metadata`` returns them without the prefix.

The graph comes from the TorchScript-based exporter (``torch.onnx.export(dynamo=False)``): the
dynamo exporter cannot produce opset 17 (it silently gives 18+, which TensorRT 8.6 refuses).
"""
from __future__ import annotations

import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from edgeseg.errors import EdgesegError
from edgeseg.export.fuse import BlockCost, FusionReport, Strategy, fuse_model
from edgeseg.export.metadata import INPUT_NAME, LABELS_NAME, LOGITS_NAME, metadata_of, set_metadata
from edgeseg.io_utils import atomic_path, ensure_parent

DYNAMIC_MODES = ("batch", "hw", "both")
MIN_OPSET = 13  # per-channel Q/DQ (later INT8 export) needs >= 13
PARITY_MAX_ABS = 1e-4  # logits; for large logits the bound grows with them (float32 rounding does too):
PARITY_REL = 1e-5  # tolerance = max(PARITY_MAX_ABS, PARITY_REL * max |logit|)
PARITY_MIN_AGREEMENT = 99.99  # percent of pixels

Dynamic = Literal["batch", "hw", "both"] | None
Bounds = dict[str, tuple[int, int, int]]  # "batch" / "height" / "width" -> (min, opt, max)


@dataclass(frozen=True)
class ParityResult:
    """ONNX Runtime (CPU) output vs the PyTorch module on the same inputs."""

    source: str  # "dataset" or "random"
    images: int
    input_hw: tuple[int, int]
    batch: int
    max_abs_diff: float | None  # logits; None when only labels were compared
    logit_scale: float  # max |logit| of the PyTorch reference
    tolerance: float | None  # the bound max_abs_diff was held to
    argmax_agreement: float  # percent of pixels whose class matches
    ok: bool


@dataclass
class ExportReport:
    path: Path
    opset: int
    input_shape: list[int | str]
    output_name: str
    dynamic: str | None
    shape_bounds: dict[str, dict[str, list[int]]]  # input name -> min/opt/max shapes
    nodes: int
    size_bytes: int
    seconds: float
    fusion: FusionReport | None
    parity: list[ParityResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(p.ok for p in self.parity)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        d["ok"] = self.ok
        return d


def default_bounds(input_size: tuple[int, int], batch: int, dynamic: Dynamic) -> Bounds:
    """(min, opt, max) per dynamic dim: batch 1..max(8, batch); H and W from half to twice the export size."""
    h, w = input_size
    bounds: Bounds = {}
    if dynamic in ("batch", "both"):
        bounds["batch"] = (1, batch, max(8, batch))
    if dynamic in ("hw", "both"):
        bounds["height"] = (max(1, h // 2), h, 2 * h)
        bounds["width"] = (max(1, w // 2), w, 2 * w)
    return bounds


def _check_bounds(bounds: Bounds, input_size: tuple[int, int], batch: int, dynamic: Dynamic) -> Bounds:
    wanted = {"batch": batch, "height": input_size[0], "width": input_size[1]}
    dims = set(default_bounds(input_size, batch, dynamic))
    unknown = set(bounds) - dims
    if unknown:
        raise EdgesegError(f"shape bounds given for {sorted(unknown)} but --dynamic {dynamic} makes only "
                           f"{sorted(dims) or 'nothing'} dynamic; drop them or change --dynamic")
    merged = {**default_bounds(input_size, batch, dynamic), **bounds}
    for name, (lo, opt, hi) in merged.items():
        if not (1 <= lo <= opt <= hi) or opt != wanted[name]:
            raise EdgesegError(f"bounds for {name} must satisfy 1 <= min <= opt <= max with opt = {wanted[name]} "
                               f"(the export size), got {(lo, opt, hi)}; fix the bounds")
    return merged


def _profile(input_size: tuple[int, int], batch: int, bounds: Bounds) -> dict[str, list[list[int]]]:
    """TensorRT-style optimization profile for ``input``: {"min"|"opt"|"max": full NCHW shape}."""
    h, w = input_size
    shape = {"batch": (batch,) * 3, "height": (h,) * 3, "width": (w,) * 3, **bounds}
    return {INPUT_NAME: {key: [shape["batch"][i], 3, shape["height"][i], shape["width"][i]]
                         for i, key in enumerate(("min", "opt", "max"))}}


class _LogitsOnly(nn.Module):
    """Unwrap torchvision-style {"out": logits} outputs so the graph has exactly one output."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return out["out"] if isinstance(out, dict) else out


def export_onnx(model: nn.Module, out_path: str | Path, *, input_size: tuple[int, int] = (360, 480), batch: int = 1,
                dynamic: Dynamic = None, bounds: Bounds | None = None, opset: int = 17, argmax: bool = False,
                metadata: dict[str, Any] | None = None, fuse: bool = True, fuse_strategy: Strategy = "auto",
                fuse_cost: BlockCost | None = None, parity_images: list[np.ndarray] | None = None,
                simplify: bool = True) -> ExportReport:
    """Export ``model`` to ``out_path`` (written atomically) and check it; see the module docstring.

    ``metadata``: {"model": name, "classes": [...], "palette": [[r, g, b], ...], "preprocessing":
    Preprocessing or its dict, ...}; extra keys are stored too. ``fuse=False`` exports the module
    as is (BatchNormalization nodes kept, also by the simplifier) as a baseline; ``fuse_strategy`` and
    ``fuse_cost`` go to ``edgeseg.export.fuse.fuse_model``.
    ``parity_images``: preprocessed (3, H, W) float32 arrays (real frames); without them parity
    runs on seeded random inputs. Dynamic-HW exports are also checked at a second resolution.
    Parity passes when argmax agreement >= 99.99 % and max |logit diff| <= max(1e-4, 1e-5 * max |logit|)
    (float32 rounding grows with the logits; the report gives both numbers).
    Raises EdgesegError for bad arguments, a missing output folder or a graph the checker refuses.
    """
    t0 = time.perf_counter()
    out_path = ensure_parent(out_path)
    if dynamic not in (None, *DYNAMIC_MODES):
        raise EdgesegError(f"dynamic must be one of {', '.join(DYNAMIC_MODES)} or None, got {dynamic!r}")
    if opset < MIN_OPSET:
        raise EdgesegError(f"opset {opset} is below {MIN_OPSET} (per-channel quantization needs 13); use --opset 17")
    if batch < 1 or min(input_size) < 1:
        raise EdgesegError(f"batch and input size must be positive, got batch={batch} input_size={input_size}")
    input_size = (int(input_size[0]), int(input_size[1]))
    bounds = _check_bounds(bounds or {}, input_size, batch, dynamic)

    was_training = model.training
    try:
        reference = _LogitsOnly(model).eval()
        num_classes = _num_classes(reference, input_size)
        meta = _metadata(metadata or {}, num_classes, input_size)
        fusion, exported = None, reference
        if fuse:
            fused, fusion = fuse_model(model, strategy=fuse_strategy, cost=fuse_cost, input_size=input_size)
            exported = _LogitsOnly(fused).eval()
        onnx_model = _torch_export(exported, input_size, batch, dynamic, opset, keep_bn=not fuse)
        onnx_model = _check_and_simplify(onnx_model, simplify, keep_bn=not fuse)
        parity = [_parity(onnx_model, reference, images, source)
                  for images, source in _parity_inputs(parity_images, input_size, batch, dynamic, bounds)]
        if argmax:
            onnx_model = _append_argmax(onnx_model)
            images, source = _parity_inputs(parity_images, input_size, batch, None, {})[0]
            parity.append(_parity(onnx_model, reference, images, source, labels=True))
    finally:
        model.train(was_training)  # export evaluates in eval mode; hand the module back as it came
    output = LABELS_NAME if argmax else LOGITS_NAME
    profile = _profile(input_size, batch, bounds)
    _write_metadata(onnx_model, meta, dynamic=dynamic, profile=profile, opset=opset, output=output, fusion=fusion,
                    parity=parity)
    import onnx

    with atomic_path(out_path) as tmp:
        onnx.save(onnx_model, str(tmp))
    dims = onnx_model.graph.input[0].type.tensor_type.shape.dim
    return ExportReport(
        path=out_path, opset=opset, input_shape=[d.dim_param or d.dim_value for d in dims], output_name=output,
        dynamic=dynamic, shape_bounds=profile, nodes=len(onnx_model.graph.node), size_bytes=out_path.stat().st_size,
        seconds=time.perf_counter() - t0, fusion=fusion, parity=parity)


def edgeseg_onnx_precision(path: str | Path) -> str | None:
    """What an existing file is, for the output rule (edgeseg.out_dir): "fp32" for an ONNX `edgeseg export`
    wrote (edgeseg metadata, no precision), the recorded precision ("int8", "fp16") for one `edgeseg
    quantize` wrote, None for anything else (not ONNX, no edgeseg metadata, unreadable)."""
    import onnx

    try:
        meta = metadata_of(onnx.load(str(path), load_external_data=False))
    except Exception:  # not ONNX, truncated, unreadable, metadata not JSON: not ours
        return None
    if not {"version", "classes", "preprocessing"} <= meta.keys():
        return None
    return str(meta.get("precision", "fp32"))


# ----------------------------------------------------------------------------- export steps

def _num_classes(model: nn.Module, input_size: tuple[int, int]) -> int:
    probe = (min(input_size[0], 64), min(input_size[1], 64))
    with torch.no_grad():
        return int(model(torch.zeros(1, 3, *probe)).shape[1])


def _torch_export(module: nn.Module, input_size: tuple[int, int], batch: int, dynamic: Dynamic, opset: int,
                  keep_bn: bool):
    import onnx

    axes: dict[int, str] = {}
    if dynamic in ("batch", "both"):
        axes[0] = "batch"
    if dynamic in ("hw", "both"):
        axes.update({2: "height", 3: "width"})
    dynamic_axes = {INPUT_NAME: axes, LOGITS_NAME: dict(axes)} if axes else None
    x = torch.randn(batch, 3, *input_size, generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory(prefix="edgeseg-export-") as tmp:
        path = Path(tmp) / "model.onnx"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
                torch.onnx.export(
                    module, (x,), str(path), dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
                    output_names=[LOGITS_NAME], dynamic_axes=dynamic_axes, do_constant_folding=True,
                    training=torch.onnx.TrainingMode.PRESERVE if keep_bn else torch.onnx.TrainingMode.EVAL)
        except (torch.onnx.errors.OnnxExporterError, torch.onnx.errors.SymbolicValueError) as e:
            raise EdgesegError(f"torch.onnx.export failed at opset {opset}: {str(e).splitlines()[0][:200]}; "
                               "try --opset 17 or a static shape") from None
        return onnx.load(str(path))


def _check_and_simplify(model, simplify: bool, keep_bn: bool):
    import onnx

    _checked(model, "the exporter's graph")
    if simplify:
        import onnxslim

        skip = ["FusionConvBN", "FusionConvTransposeBN"] if keep_bn else None
        model = onnxslim.slim(model, skip_fusion_patterns=skip)
        _checked(model, "the simplified graph (onnxslim)")
    return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)


def _checked(model, what: str) -> None:
    import onnx

    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise EdgesegError(f"onnx.checker refused {what}: {str(e).splitlines()[0][:200]}; "
                           "export with --no-fuse or another --opset and report the model") from None


def _append_argmax(model):
    """logits (N, C, H, W) -> labels int32 (N, H, W): ArgMax over C, then Cast."""
    import onnx
    from onnx import TensorProto, helper

    graph = model.graph
    (logits,) = [o for o in graph.output if o.name == LOGITS_NAME]
    dims = logits.type.tensor_type.shape.dim
    graph.node.extend([
        helper.make_node("ArgMax", [LOGITS_NAME], ["labels_int64"], name="labels_argmax", axis=1, keepdims=0),
        helper.make_node("Cast", ["labels_int64"], [LABELS_NAME], name="labels_cast", to=TensorProto.INT32),
    ])
    shape = [d.dim_param or d.dim_value for i, d in enumerate(dims) if i != 1]
    graph.output.remove(logits)
    graph.output.append(helper.make_tensor_value_info(LABELS_NAME, TensorProto.INT32, shape))
    _checked(model, "the graph with the argmax head")
    return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)


# ----------------------------------------------------------------------------- parity

def _parity_inputs(images: list[np.ndarray] | None, input_size: tuple[int, int], batch: int, dynamic: Dynamic,
                   bounds: Bounds) -> list[tuple[np.ndarray, str]]:
    """(N, 3, H, W) arrays to compare on: the given frames (or seeded random ones) at the export size, plus
    for dynamic exports a second batch size / resolution inside the bounds."""
    rng = np.random.default_rng(0)
    if images:
        arr = np.stack([np.asarray(im, dtype=np.float32) for im in images])
        if arr.ndim != 4 or arr.shape[1] != 3 or tuple(arr.shape[2:]) != tuple(input_size):
            raise EdgesegError(f"parity images must be preprocessed (3, {input_size[0]}, {input_size[1]}) arrays, "
                               f"got {tuple(arr.shape[1:])}; preprocess them at the export input size")
        out = [(arr, "dataset")]
    else:
        out = [(rng.standard_normal((max(batch, 2 if dynamic in ("batch", "both") else batch), 3, *input_size),
                                    dtype=np.float32), "random")]
    if dynamic in ("hw", "both"):
        h, w = input_size
        (hlo, _, hhi), (wlo, _, whi) = bounds["height"], bounds["width"]
        other = (min(hhi, max(hlo, h - h // 4 + 3)), min(whi, max(wlo, w + w // 4 + 5)))  # odd, unlike the export size
        n = 2 if dynamic == "both" else batch
        out.append((rng.standard_normal((n, 3, *other), dtype=np.float32), "random"))
    return out


def _ort_session(model):
    from edgeseg.ort_session import make_session

    # the same CPU budget as the PyTorch reference; no spinning: a check, not a benchmark
    return make_session(model.SerializeToString(), threads=torch.get_num_threads(), spinning=False)


def _parity(onnx_model, reference: nn.Module, images: np.ndarray, source: str = "random",
            labels: bool = False) -> ParityResult:
    session = _ort_session(onnx_model)
    static_batch = session.get_inputs()[0].shape[0]
    step = static_batch if isinstance(static_batch, int) else len(images)
    max_diff, scale, agree, total = 0.0, 0.0, 0, 0
    for i in range(0, len(images), step):
        x = images[i:i + step]
        n = len(x)
        if n < step:  # a static batch larger than what is left: pad with the last image, score only the real ones
            x = np.concatenate([x, np.repeat(x[-1:], step - n, axis=0)])
        with torch.no_grad():
            ref = reference(torch.from_numpy(x)).numpy()[:n]
        got = session.run(None, {INPUT_NAME: x})[0][:n]
        ref_labels = ref.argmax(1)
        got_labels = got if labels else got.argmax(1)
        scale = max(scale, float(np.abs(ref).max()))
        if not labels:
            max_diff = max(max_diff, float(np.abs(got - ref).max()))
        agree += int((got_labels == ref_labels).sum())
        total += ref_labels.size
    agreement = 100.0 * agree / max(total, 1)
    tolerance = max(PARITY_MAX_ABS, PARITY_REL * scale)
    ok = agreement >= PARITY_MIN_AGREEMENT and (labels or max_diff <= tolerance)
    return ParityResult(source=source, images=len(images), input_hw=tuple(images.shape[2:]), batch=step,
                        max_abs_diff=None if labels else max_diff, logit_scale=scale,
                        tolerance=None if labels else tolerance, argmax_agreement=agreement, ok=ok)


def parity_images_from_dataset(spec: str, split: str, count: int, preprocessing: Any,
                               input_size: tuple[int, int]) -> list[np.ndarray]:
    """``count`` frames spread evenly over a dataset split, preprocessed at ``input_size``."""
    from dataclasses import replace

    from edgeseg.data import open_dataset

    dataset = open_dataset(spec, split)
    if count < 1 or len(dataset) == 0:
        raise EdgesegError(f"need at least 1 parity image from {spec} {split}, got count={count} of {len(dataset)}")
    prep = replace(preprocessing, size=tuple(input_size))
    idx = np.linspace(0, len(dataset) - 1, num=min(count, len(dataset))).round().astype(int)
    return [prep(dataset[int(i)][0]) for i in dict.fromkeys(idx)]


# ----------------------------------------------------------------------------- metadata

def _metadata(meta: dict[str, Any], num_classes: int, input_size: tuple[int, int]) -> dict[str, Any]:
    from edgeseg.data import Preprocessing
    from edgeseg.data.base import color_map

    meta = dict(meta)
    classes = meta.get("classes") or [f"class_{i}" for i in range(num_classes)]
    if len(classes) != num_classes:
        raise EdgesegError(f"metadata lists {len(classes)} class names but the model predicts {num_classes} classes; "
                           "pass the class list the model was trained with")
    palette = meta.get("palette") or color_map(num_classes)
    if len(palette) != num_classes:
        raise EdgesegError(f"metadata palette has {len(palette)} colours for {num_classes} classes; pass one per class")
    prep = meta.get("preprocessing") or Preprocessing()
    prep = prep if isinstance(prep, Preprocessing) else Preprocessing.from_dict(prep)
    d = prep.to_dict()
    d["size"] = list(input_size)  # the network input the file was exported at
    meta.update(classes=list(classes), palette=[list(map(int, c)) for c in palette], preprocessing=d,
                model=meta.get("model", "unknown"))
    return meta


def _write_metadata(model, meta: dict[str, Any], *, dynamic: Dynamic, profile: dict, opset: int, output: str,
                    fusion: FusionReport | None, parity: list[ParityResult]) -> None:
    from edgeseg.version import __version__

    fields = {
        **meta,
        "version": __version__,
        "input_size": meta["preprocessing"]["size"],
        "output": {"name": output, "dtype": "int32" if output == LABELS_NAME else "float32",
                   "layout": "NHW" if output == LABELS_NAME else "NCHW"},
        "dynamic": dynamic,
        "shape_bounds": profile,
        "fusion": None if fusion is None else {"strategy": fusion.strategy, "folded_bn": fusion.folded_bn,
                                               "collapsed": fusion.collapsed, "blocks": len(fusion.blocks)},
        "parity": [asdict(p) for p in parity],
        "exporter": f"torch.onnx.export(dynamo=False) torch {torch.__version__}, opset {opset}",
    }
    set_metadata(model, fields, replace=True)
    model.producer_name = "edgeseg"
    model.producer_version = __version__


__all__ = ["ExportReport", "ParityResult", "default_bounds", "edgeseg_onnx_precision", "export_onnx",
           "parity_images_from_dataset"]
