"""A user folder: images/ + masks/ with matching names (or SPLIT/images, SPLIT/masks), optional classes.txt."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeseg.data.base import (
    IGNORE_INDEX,
    IMAGE_EXTENSIONS,
    SPLITS,
    SegmentationDataset,
    color_map,
    require_dir,
    short_list,
)
from edgeseg.data.images import read_label
from edgeseg.errors import DatasetError
from edgeseg.io_utils import require_file


class FolderDataset(SegmentationDataset):
    """A plain folder: ``images/`` (png/jpg/jpeg/bmp) + ``masks/`` (png) matched by file stem.

    ``root/{split}/images`` is used when it exists, else ``root/images`` for every split.
    Classes come from ``root/classes.txt`` (one name per line) when present, else
    ``max label + 1`` over every mask folder under ``root`` (scanned once, on first use, so
    all splits agree); names are then ``class_0``, ``class_1``, ... Void is 255.
    """

    name = "folder"

    def __init__(self, root: str | Path, split: str) -> None:
        super().__init__(root, split)
        assert self.root is not None
        fix = f"create {self.root}/images/ + masks/ (or {self.root}/{split}/images/ + masks/)"
        require_dir(self.root, "dataset folder", "pass an existing folder")
        base = self.root / split if (self.root / split / "images").is_dir() else self.root
        img_dir, mask_dir = base / "images", base / "masks"
        require_dir(img_dir, "image folder", fix)
        require_dir(mask_dir, "mask folder", fix)
        images: dict[str, Path] = {}
        for p in sorted(img_dir.iterdir()):
            if p.suffix.lower() not in IMAGE_EXTENSIONS or p.is_dir():  # a FIFO is kept, and refused when read
                continue
            if p.stem in images:
                raise DatasetError(
                    f"two images share the stem {p.stem!r} in {img_dir} ({images[p.stem].name}, {p.name}): "
                    "expected one image per mask; remove or rename one"
                )
            images[p.stem] = p
        if not images:
            raise DatasetError(f"no images in {img_dir}: expected files ending in {', '.join(IMAGE_EXTENSIONS)}; {fix}")
        pairs = [(images[s], mask_dir / f"{s}.png") for s in sorted(images)]
        missing = [m.name for _, m in pairs if not m.exists()]
        if missing:
            raise DatasetError(
                f"{len(missing)} image(s) in {img_dir} have no mask: expected {short_list(missing)} in {mask_dir}; "
                "add the masks or remove those images"
            )
        self._pairs = pairs
        self._classes: list[str] | None = None
        classes_file = self.root / "classes.txt"
        if classes_file.exists():
            path = require_file(classes_file, "class list", "make it a text file or delete it", DatasetError)
            names = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
            if not names:
                raise DatasetError(f"{classes_file} is empty: expected one class name per line; fill it or delete it")
            self._classes = names
            self.label_fix = f"add the missing class to {classes_file} or fix the mask"
        else:
            self.label_fix = "fix the mask"

    @property
    def classes(self) -> list[str]:  # type: ignore[override]
        if self._classes is None:
            self._classes = [f"class_{k}" for k in range(self._scan_num_classes())]
        return self._classes

    @property
    def palette(self) -> list[tuple[int, int, int]]:  # type: ignore[override]
        return color_map(self.num_classes)

    def _scan_num_classes(self) -> int:
        assert self.root is not None
        dirs = [self.root / "masks"] + [self.root / s / "masks" for s in SPLITS]
        top = -1
        for d in dirs:
            if not d.is_dir():
                continue
            for p in sorted(d.glob("*.png")):
                raw = read_label(p)
                if raw.ndim != 2:
                    raise DatasetError(f"label file {p} has shape {raw.shape}: expected a 2-D index mask; fix it")
                counts = np.bincount(raw.ravel().astype(np.int64).clip(0), minlength=256)
                counts[IGNORE_INDEX] = 0
                nz = np.flatnonzero(counts)
                if nz.size:
                    top = max(top, int(nz[-1]))
        if top < 0:
            raise DatasetError(
                f"every mask under {self.root} is void (255): expected class indices 0..C-1; "
                f"fix the masks or add {self.root / 'classes.txt'}"
            )
        return top + 1


