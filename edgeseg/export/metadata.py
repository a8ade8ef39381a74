"""Reading edgeseg ONNX files without torch: parse with one-line errors, the ``edgeseg.*`` metadata
(written by edgeseg.export.onnx_export), and the recorded preprocessing."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgeseg.data.preprocess import Preprocessing
from edgeseg.errors import EdgesegError
from edgeseg.io_utils import require_file

INPUT_NAME = "input"
LOGITS_NAME = "logits"
LABELS_NAME = "labels"
META_PREFIX = "edgeseg."
PREPROCESSING_KEY = META_PREFIX + "preprocessing"  # JSON of Preprocessing.to_dict()


def load_onnx(path: str | Path, *, require_input: bool = True):
    """Parse and validate an ONNX file; one-line EdgesegError for a missing, non-ONNX or truncated file,
    or (``require_input``) a graph without the ``input`` tensor edgeseg files have."""
    import onnx
    from google.protobuf.message import DecodeError

    path = require_file(path, "ONNX file", "check the path (edgeseg export writes it)")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, RuntimeWarning, ValueError, OSError) as e:
        raise EdgesegError(f"cannot parse {path} as ONNX ({type(e).__name__}); the file is truncated, corrupt or not "
                           "ONNX; re-export or re-copy it") from None
    if not model.HasField("graph") or not model.graph.node or not model.opset_import:
        raise EdgesegError(f"{path} holds no ONNX graph (truncated or not ONNX); re-export or re-copy it")
    try:
        onnx.checker.check_model(str(path))  # by path: resolves external-data sidecars next to the file
    except onnx.checker.ValidationError as e:
        raise EdgesegError(f"{path} is not a valid ONNX model ({str(e).splitlines()[0][:160]}); the file (or its "
                           "external-data file) may be truncated or missing; re-export or re-copy it") from None
    if require_input:
        inputs = [i.name for i in model.graph.input]
        if INPUT_NAME not in inputs:
            raise EdgesegError(f"{path} has no input named {INPUT_NAME!r} (inputs: {inputs}); it was not written by "
                               "edgeseg export; re-export it with edgeseg export")
    return model


def metadata_of(model: Any, where: str = "the ONNX") -> dict[str, Any]:
    """The ``edgeseg.*`` metadata_props of a loaded ``onnx.ModelProto``, prefix stripped, values JSON-decoded;
    one-line EdgesegError naming ``where`` for a value that is not JSON."""
    out: dict[str, Any] = {}
    for prop in model.metadata_props:
        if prop.key.startswith(META_PREFIX):
            try:
                out[prop.key[len(META_PREFIX):]] = json.loads(prop.value)
            except json.JSONDecodeError:
                raise EdgesegError(f"{where}: metadata {prop.key} is not JSON ({prop.value[:60]!r}); "
                                   "re-export it") from None
    return out


def set_metadata(model: Any, fields: dict[str, Any], *, replace: bool = False) -> None:
    """Write ``fields`` as ``edgeseg.*`` metadata_props (values JSON-encoded) into a loaded ``onnx.ModelProto``:
    added to (and overriding) what it has, or replacing every metadata_prop (``replace``)."""
    props = {} if replace else {p.key: p.value for p in model.metadata_props}
    props.update({META_PREFIX + key: json.dumps(value) for key, value in fields.items()})
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)


def copy_metadata(source: Any, target: Any) -> None:
    """Carry every metadata_prop of ``source`` (preprocessing, classes, ...) into ``target`` (both loaded
    ``onnx.ModelProto``s); the target's own props win where both have a key."""
    props = {p.key: p.value for p in source.metadata_props}
    props.update({p.key: p.value for p in target.metadata_props})
    del target.metadata_props[:]
    for key, value in props.items():
        target.metadata_props.add(key=key, value=value)


def read_onnx_metadata(path: str | Path) -> dict[str, Any]:
    """The ``edgeseg.*`` metadata_props of an edgeseg ONNX file, prefix stripped, values JSON-decoded."""
    return metadata_of(load_onnx(path), str(path))


def read_preprocessing(path: str | Path) -> Preprocessing | None:
    """The recorded preprocessing, or None when the file has none."""
    raw = read_onnx_metadata(path).get(PREPROCESSING_KEY[len(META_PREFIX):])
    return Preprocessing.from_dict(raw) if raw is not None else None
