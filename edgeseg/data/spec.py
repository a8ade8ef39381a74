"""Dataset specs: ``KIND:PATH`` (or ``synthetic[:HxW]``) -> a dataset object."""
from __future__ import annotations

import re
from pathlib import Path

from edgeseg.data.base import DATASET_KINDS, SegmentationDataset
from edgeseg.data.camvid import CamVidDataset
from edgeseg.data.cityscapes import CityscapesDataset
from edgeseg.data.folder import FolderDataset
from edgeseg.data.synthetic import SyntheticDataset
from edgeseg.data.voc import VOCDataset
from edgeseg.errors import DatasetError

_FILE_DATASETS: dict[str, type[SegmentationDataset]] = {
    "camvid": CamVidDataset,
    "voc": VOCDataset,
    "cityscapes": CityscapesDataset,
    "folder": FolderDataset,
}
_KIND_SPLITS: dict[str, tuple[str, ...]] = {
    "synthetic": SyntheticDataset.splits,
    **{k: c.splits for k, c in _FILE_DATASETS.items()},
}


def open_dataset(spec: str, split: str) -> SegmentationDataset:
    """Open ``spec`` = ``KIND:PATH`` (KIND in DATASET_KINDS) or ``synthetic`` / ``synthetic:HxW``.

    Raises DatasetError for an unknown kind, a missing or non-existent path, a malformed
    synthetic size, or a split the kind does not have.
    """
    kinds = ", ".join(DATASET_KINDS)
    if not isinstance(spec, str) or not spec.strip():
        raise DatasetError(
            f"dataset spec must be KIND:PATH with KIND in {kinds}, got {spec!r}; e.g. camvid:/data/CamVid or synthetic"
        )
    kind, _, arg = spec.strip().partition(":")
    kind, arg = kind.strip().lower(), arg.strip()
    if kind not in DATASET_KINDS:
        raise DatasetError(
            f"unknown dataset kind {kind!r} in {spec!r}: expected one of {kinds}; write KIND:PATH, "
            "e.g. camvid:/data/CamVid or synthetic:96x128"
        )
    valid_splits = _KIND_SPLITS[kind]
    if split not in valid_splits:
        raise DatasetError(
            f"unknown split {split!r} for {kind} dataset: expected one of {', '.join(valid_splits)}; pass a valid split"
        )
    if kind == "synthetic":
        if not arg:
            return SyntheticDataset(split)
        m = re.fullmatch(r"(\d+)\s*[xX]\s*(\d+)", arg)
        if not m:
            raise DatasetError(
                f"synthetic size {arg!r} in {spec!r} is not HxW: expected e.g. synthetic:96x128; fix the spec"
            )
        return SyntheticDataset(split, size=(int(m.group(1)), int(m.group(2))))
    if not arg:
        raise DatasetError(f"dataset spec {spec!r} has no path: expected {kind}:PATH; add the dataset folder")
    path = Path(arg).expanduser()
    if not path.is_dir():
        raise DatasetError(
            f"dataset folder {path} does not exist (from spec {spec!r}): expected an existing folder; fix the path"
        )
    return _FILE_DATASETS[kind](path, split)
