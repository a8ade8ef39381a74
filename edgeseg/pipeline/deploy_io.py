"""What both deployment targets (DeepStream, Triton) read from a bundle: model I/O, batch and input bounds."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edgeseg.bundle.manifest import Bundle, name_problem
from edgeseg.errors import EdgesegError
from edgeseg.out_dir import check_out_dir, first_foreign

# ----------------------------------------------------------------------------- model I/O

@dataclass(frozen=True)
class TensorInfo:
    name: str
    elem_type: int  # onnx.TensorProto data type
    dims: tuple[int, ...]  # -1 where dynamic


def onnx_io(path: Path) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """Graph inputs (initializers excluded) and outputs of an ONNX file."""
    from edgeseg.export.metadata import load_onnx

    graph = load_onnx(path, require_input=False).graph
    inits = {t.name for t in graph.initializer}

    def info(v) -> TensorInfo:
        t = v.type.tensor_type
        return TensorInfo(v.name, t.elem_type, tuple(d.dim_value if d.dim_value > 0 else -1 for d in t.shape.dim))

    return [info(v) for v in graph.input if v.name not in inits], [info(v) for v in graph.output]


def concrete_output_dims(path: Path, inputs: list[TensorInfo], outputs: list[TensorInfo],
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


def opt_shape(bundle: Bundle) -> list[int] | None:
    bounds = ((bundle.manifest.get("input") or {}).get("shape_bounds") or {})
    first = next(iter(bounds.values()), None)
    return list(first["opt"]) if first else None


def batch_bounds(bundle: Bundle, dims: tuple[int, ...]) -> tuple[int, int]:
    """(min, max) batch: the ONNX dim when static, else the manifest's shape bounds."""
    if dims and dims[0] > 0:
        return dims[0], dims[0]
    bounds = ((bundle.manifest.get("input") or {}).get("shape_bounds") or {})
    first = next(iter(bounds.values()), None)
    if first is None:
        raise EdgesegError(f"{bundle.root}: the batch dim is dynamic but the manifest records no shape bounds; "
                           "rebuild the bundle with this edgeseg")
    return int(first["min"][0]), int(first["max"][0])


def network_input_size(bundle: Bundle, dims: tuple[int, ...]) -> tuple[int, int]:
    """(H, W) the network runs at: the manifest's preprocessing size, else the model's static or opt dims."""
    size = bundle.preprocessing.size or (tuple(dims[2:4]) if len(dims) == 4 and min(dims[2:4]) > 0 else None)
    if size is None:
        opt = opt_shape(bundle)
        size = tuple(opt[2:4]) if opt else None
    if size is None:
        raise EdgesegError(f"{bundle.root}: no input size in the manifest or the model; rebuild with --input-size HxW")
    return int(size[0]), int(size[1])



@dataclass
class DeployResult:
    out: Path
    files: list[str]
    warnings: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- values written into files

def one_line(value: object) -> str:
    """``value`` as text that stays on its line in a generated file (a comment, a heading): a newline or
    other unprintable character is escaped as Python's repr does, so nothing it holds starts a new line."""
    text = str(value)
    return text if text.isprintable() else repr(text)[1:-1]


def pbtxt_string(value: str) -> str:
    """``value`` as a protobuf text-format string literal (Triton's config.pbtxt): quoted, with backslash,
    quote and every unprintable character escaped (octal bytes of its UTF-8)."""
    out = []
    for ch in value:
        if ch in '\\"':
            out.append("\\" + ch)
        elif ch.isprintable():
            out.append(ch)
        else:
            out.extend(f"\\{b:03o}" for b in ch.encode("utf-8"))
    return '"' + "".join(out) + '"'


def labels_text(classes: list[str]) -> str:
    """labels.txt (DeepStream, Triton): one class name per line, in class-index order; a name that is not
    one printable line would shift every later class, so it is refused (read_bundle refuses it first)."""
    for i, name in enumerate(classes):
        problem = name_problem(name)
        if problem:
            raise EdgesegError(f"class {i} name {name!r} must be {problem} (labels.txt holds one name per line); "
                               "rebuild the bundle from a model with such names")
    return "\n".join(classes) + "\n"


def fmt_number(x: float) -> str:
    """9 significant digits, always with a decimal point (GKeyFile and protobuf read both)."""
    return repr(float(f"{x:.9g}"))


def check_target(out: Path, config: str, header: str, own: Callable[[Path], bool], flag: str,
                 overwrite: bool = False) -> Path:
    """The output-folder rule (edgeseg.out_dir) for a deploy folder: it may be replaced when its
    ``config`` starts with edgeseg's ``header`` and every entry is ``own`` (what deploy, or the
    runtime, writes there)."""
    def foreign(folder: Path) -> Path | None:
        path = folder / config
        if not (path.is_file() and path.read_text(errors="replace").startswith(header)):
            return path if path.exists() else next(iter(sorted(folder.iterdir())), None)
        return first_foreign(folder, own)

    return check_out_dir(out, foreign, "edgeseg deploy output", overwrite=overwrite, flag=flag)


