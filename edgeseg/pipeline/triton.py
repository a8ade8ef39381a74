"""`edgeseg deploy --triton`: a bundle as a Triton model repository entry.

Triton gets the bundle's own model unchanged: ``onnxruntime_onnx`` with the precision's ONNX, or
``tensorrt_plan`` with ``model.engine`` when the bundle has one; ``max_batch_size`` is the bundle's
largest batch when the batch dim is dynamic, else 0 with full dims.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

from edgeseg.bundle.manifest import Bundle, read_bundle, staging_dir, verify_bundle
from edgeseg.errors import EdgesegError
from edgeseg.io_utils import make_dirs
from edgeseg.pipeline.deploy_io import (
    DeployResult,
    batch_bounds,
    check_target,
    concrete_output_dims,
    fmt_number,
    labels_text,
    one_line,
    onnx_io,
    opt_shape,
    pbtxt_string,
)

# ----------------------------------------------------------------------------- Triton

TRITON_TYPES = {1: "TYPE_FP32", 2: "TYPE_UINT8", 3: "TYPE_INT8", 4: "TYPE_UINT16", 5: "TYPE_INT16", 6: "TYPE_INT32",
                7: "TYPE_INT64", 9: "TYPE_BOOL", 10: "TYPE_FP16", 11: "TYPE_FP64", 12: "TYPE_UINT32",
                13: "TYPE_UINT64", 16: "TYPE_BF16"}  # onnx.TensorProto -> Triton DataType
# Triton's default_model_filename per platform: the name the bundle's model gets in the version folder
TRITON_FILES = {"tensorrt_plan": "model.plan", "onnxruntime_onnx": "model.onnx"}


def _triton_source(bundle: Bundle) -> tuple[str, Path, Path]:
    """(platform, model file to ship, ONNX that describes its I/O)."""
    engine = bundle.file("engine")
    if engine is not None:
        source = (bundle.manifest.get("engine") or {}).get("source") or bundle.manifest["roles"]["fp32"]
        described = bundle.member(source)
        return "tensorrt_plan", engine, described
    variant = bundle.file(bundle.precision) or bundle.file("fp32")
    return "onnxruntime_onnx", variant, variant


def _tensor_block(kind: str, tensors: list[tuple[str, int, tuple[int, ...]]]) -> list[str]:
    lines = [f"{kind} ["]
    for i, (name, elem, dims) in enumerate(tensors):
        if elem not in TRITON_TYPES:
            raise EdgesegError(f"tensor {name!r} has ONNX type {elem}, which Triton cannot carry; re-export with "
                               "float32 inputs/outputs")
        lines += ["  {", f"    name: {pbtxt_string(name)}", f"    data_type: {TRITON_TYPES[elem]}",
                  f"    dims: [ {', '.join(map(str, dims))} ]", "  }" + ("," if i < len(tensors) - 1 else "")]
    return lines + ["]"]


def triton_config(bundle: Bundle, model_name: str) -> tuple[str, Path, str]:
    """(config.pbtxt text, file to copy, its name in the version folder) for ``bundle``."""
    platform, model_file, described = _triton_source(bundle)
    inputs, outputs = onnx_io(described)
    if len(inputs) != 1:
        raise EdgesegError(f"{described.name} has {len(inputs)} inputs; edgeseg bundles have one image input; rebuild")
    out_dims = concrete_output_dims(described, inputs, outputs, opt_shape(bundle))
    if platform == "tensorrt_plan":
        profile = (bundle.manifest.get("engine") or {}).get("profile") or {}
        lo, hi = (int(profile["min"][0]), int(profile["max"][0])) if profile else batch_bounds(bundle, inputs[0].dims)
        in_dims = inputs[0].dims if lo == hi else (-1, *inputs[0].dims[1:])
    else:
        lo, hi = batch_bounds(bundle, inputs[0].dims)
        in_dims = inputs[0].dims
    batched = lo != hi or in_dims[0] < 0
    max_batch = hi if batched else 0
    strip = (lambda d: tuple(d[1:])) if batched else tuple  # Triton's dims leave out the batch dim when batching
    pre = bundle.preprocessing
    lines = [
        f"{TRITON_HEADER} {one_line(bundle.root.name)} ({one_line(bundle.manifest.get('model'))}, "
        f"{bundle.precision}).",
        f"# Clients send preprocessed NCHW float32: (x * {fmt_number(pre.scale)} - mean) / std per channel in "
        f"{pre.channel_order} order,",
        f"# mean {list(pre.mean)}, std {list(pre.std)}, resized to {list(pre.size) if pre.size else 'any size'} "
        f"with resize={pre.resize} (see edgeseg.data.resize).",
        "# Outputs are per-class scores (N, C, H, W): argmax over axis 1 gives the class map (names in labels.txt).",
        f"name: {pbtxt_string(model_name)}",
        f"platform: {pbtxt_string(platform)}",
        f"max_batch_size: {max_batch}",
    ]
    lines += _tensor_block("input", [(inputs[0].name, inputs[0].elem_type, strip(in_dims))])
    lines += _tensor_block("output", [(o.name, o.elem_type, strip(d)) for o, d in zip(outputs, out_dims)])
    if batched:
        lines.append("dynamic_batching { }")
    return "\n".join(lines) + "\n", model_file, TRITON_FILES[platform]


def triton_model_name(bundle: Bundle) -> str:
    name = f"{bundle.manifest.get('model') or 'edgeseg'}_{bundle.precision}"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


TRITON_HEADER = "# Triton model for the edgeseg bundle"
VERSION_FILES = tuple(TRITON_FILES.values())


def _own_triton_entry(path: Path) -> bool:
    if path.name == "1" and path.is_dir() and not path.is_symlink():
        return all(p.name in VERSION_FILES and p.is_file() for p in path.iterdir())
    return path.name in ("config.pbtxt", "labels.txt") and path.is_file()


def write_triton(bundle_dir: str | Path, repository: str | Path, *, model_name: str | None = None,
                 verify: bool = True, overwrite: bool = False) -> DeployResult:
    """Write ``repository/NAME/config.pbtxt``, ``NAME/1/model.onnx`` (or ``model.plan``) and
    ``NAME/labels.txt``; other models in the repository are left alone. NAME may be replaced when
    edgeseg wrote it (and nothing else is in it), else only with ``overwrite``."""
    bundle = read_bundle(bundle_dir, check_hashes=verify)
    if verify:
        verify_bundle(bundle)
    name = model_name or triton_model_name(bundle)
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name in (".", ".."):
        raise EdgesegError(f"Triton model name {name!r} must use letters, digits, '_', '.', '-'; "
                           "pass another --model-name")
    target = check_target(Path(repository) / name, "config.pbtxt", TRITON_HEADER, _own_triton_entry, "--triton",
                          overwrite)
    make_dirs(target.parent, "--triton")
    text, model_file, file_name = triton_config(bundle, name)
    with staging_dir(target) as stage:
        (stage / "1").mkdir()
        shutil.copyfile(model_file, stage / "1" / file_name)
        (stage / "config.pbtxt").write_text(text)
        (stage / "labels.txt").write_text(labels_text(bundle.classes))
    return DeployResult(target, ["config.pbtxt", f"1/{file_name}", "labels.txt"])
