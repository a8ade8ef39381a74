"""Several splits and datasets as one training set: ``--train-split train+val``, or a list of specs
(two folders, CamVid + a folder with the same classes)."""
from __future__ import annotations

import bisect
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgeseg.data.base import SegmentationDataset
from edgeseg.data.spec import open_dataset
from edgeseg.errors import DatasetError


class ConcatSegmentation(SegmentationDataset):
    """The samples of ``parts`` in order; every part must have the same class names (palette: the first's)."""

    def __init__(self, parts: Sequence[SegmentationDataset], labels: Sequence[str]) -> None:
        if not parts:
            raise DatasetError("no dataset to concatenate: pass at least one --data spec and split")
        first = parts[0]
        for part, label in zip(parts[1:], labels[1:]):
            if list(part.classes) != list(first.classes):
                i = next((k for k, (a, b) in enumerate(zip(first.classes, part.classes)) if a != b),
                         min(len(first.classes), len(part.classes)))
                raise DatasetError(
                    f"{label} has {part.num_classes} classes but {labels[0]} has {first.num_classes}, first "
                    f"difference at index {i} ({_name(part.classes, i)!r} vs {_name(first.classes, i)!r}); datasets "
                    "trained together need the same class names in the same order (e.g. a classes.txt in the folder)"
                )
        self.parts = list(parts)
        self.name = "+".join(dict.fromkeys(p.name for p in parts))
        self.split = "+".join(dict.fromkeys(p.split for p in parts))
        self.root = None
        self.classes = list(first.classes)
        self.palette = list(first.palette)
        self._ends = list(np.cumsum([len(p) for p in parts]))

    def __len__(self) -> int:
        return int(self._ends[-1]) if self._ends else 0

    def _locate(self, i: int) -> tuple[SegmentationDataset, int]:
        j = self._index(i)
        k = bisect.bisect_right(self._ends, j)
        return self.parts[k], j - (int(self._ends[k - 1]) if k else 0)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        part, j = self._locate(i)
        return part[j]

    def load_image(self, i: int) -> np.ndarray:
        part, j = self._locate(i)
        return part.load_image(j)

    def load_mask(self, i: int) -> np.ndarray:
        part, j = self._locate(i)
        return part.load_mask(j)

    def image_path(self, i: int) -> Path | None:
        part, j = self._locate(i)
        return part.image_path(j)

    def mask_path(self, i: int) -> Path | None:
        part, j = self._locate(i)
        return part.mask_path(j)

    def __repr__(self) -> str:
        return f"ConcatSegmentation({', '.join(map(repr, self.parts))})"


def _name(classes: Sequence[str], i: int) -> str:
    return classes[i] if i < len(classes) else "<none>"


def open_datasets(specs: str | Sequence[str], split: str) -> SegmentationDataset:
    """Every (spec, split) pair for ``split`` = 'train' or 'train+val', concatenated (one pair: itself)."""
    specs = [specs] if isinstance(specs, str) else list(specs)
    splits = [s.strip() for s in split.split("+")]
    if not specs or any(not s for s in splits):
        raise DatasetError(f"expected one or more dataset specs and splits like train or train+val, got "
                           f"specs {specs!r} split {split!r}; e.g. --data camvid:DIR --train-split train+val")
    pairs = [(spec, s) for spec in specs for s in splits]
    parts = [open_dataset(spec, s) for spec, s in pairs]
    if len(parts) == 1:
        return parts[0]
    return ConcatSegmentation(parts, [f"{spec} {s}" for spec, s in pairs])
