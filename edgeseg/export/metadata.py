"""The preprocessing an exported ONNX records in its metadata (written by edgeseg.export)."""
from __future__ import annotations

from pathlib import Path

from edgeseg.data.preprocess import Preprocessing

PREPROCESSING_KEY = "edgeseg.preprocessing"  # JSON of Preprocessing.to_dict()


def read_preprocessing(path: str | Path) -> Preprocessing | None:
    """The recorded preprocessing, or None when the file has none."""
    from edgeseg.export import read_onnx_metadata

    raw = read_onnx_metadata(path).get(PREPROCESSING_KEY.split(".", 1)[1])
    return Preprocessing.from_dict(raw) if raw is not None else None
