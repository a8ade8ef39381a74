"""Read the preprocessing an exported ONNX records in its metadata_props (written by export)."""
from __future__ import annotations

import json
from pathlib import Path

from edgeseg.data.preprocess import Preprocessing
from edgeseg.errors import EdgesegError

PREPROCESSING_KEY = "edgeseg.preprocessing"


def read_metadata(path: str | Path) -> dict[str, str]:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except FileNotFoundError:
        raise EdgesegError(f"ONNX file {path} does not exist; check the path") from None
    except Exception as e:
        raise EdgesegError(f"cannot read {path} as ONNX ({type(e).__name__}); expected a complete .onnx file; "
                           "re-export it") from None
    return {p.key: p.value for p in model.metadata_props}


def read_preprocessing(path: str | Path) -> Preprocessing | None:
    """The recorded preprocessing, or None when the file has none."""
    raw = read_metadata(path).get(PREPROCESSING_KEY)
    if raw is None:
        return None
    try:
        return Preprocessing.from_dict(json.loads(raw))
    except json.JSONDecodeError:
        raise EdgesegError(f"{path} has unreadable {PREPROCESSING_KEY} metadata; re-export the model") from None
