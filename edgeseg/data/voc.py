"""PASCAL VOC 2012: JPEGImages/, SegmentationClass/, ImageSets/Segmentation/{train,val}.txt."""
from __future__ import annotations

from pathlib import Path

from edgeseg.data.base import SegmentationDataset, color_map, require_dir, short_list
from edgeseg.errors import DatasetError
from edgeseg.io_utils import require_file


class VOCDataset(SegmentationDataset):
    """PASCAL VOC 2012: ``JPEGImages/*.jpg``, palette ``SegmentationClass/*.png``, ``ImageSets/Segmentation/{split}.txt``.

    ``root`` may be the VOC2012 folder itself or a folder containing ``VOC2012`` or
    ``VOCdevkit/VOC2012``. Labels are read as raw palette indices; 255 stays void.
    """

    name = "voc"
    splits = ("train", "val", "trainval")
    classes = [
        "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
        "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
    ]
    palette = color_map(21)
    label_fix = "VOC labels must be palette PNGs from SegmentationClass (not SegmentationObject)"

    def __init__(self, root: str | Path, split: str) -> None:
        super().__init__(root, split)
        assert self.root is not None
        base = self.root
        for candidate in (self.root, self.root / "VOC2012", self.root / "VOCdevkit" / "VOC2012"):
            if (candidate / "JPEGImages").is_dir():
                base = candidate
                break
        fix = "point voc:PATH at the VOC2012 folder holding JPEGImages/, SegmentationClass/, ImageSets/"
        require_dir(base / "JPEGImages", "VOC image folder", fix)
        require_dir(base / "SegmentationClass", "VOC label folder", fix)
        listing = base / "ImageSets" / "Segmentation" / f"{split}.txt"
        require_file(listing, "VOC split list", f"expected that file; {fix}", DatasetError)
        ids = [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]
        if not ids:
            raise DatasetError(f"VOC split list {listing} is empty: expected one image id per line; fix the file")
        self.root = base
        pairs = [(base / "JPEGImages" / f"{s}.jpg", base / "SegmentationClass" / f"{s}.png") for s in ids]
        missing = [str(p.relative_to(base)) for pair in pairs for p in pair if not p.is_file()]
        if missing:
            raise DatasetError(
                f"{len(missing)} file(s) listed by {listing} are missing: {short_list(missing)}; "
                "restore them or remove those ids from the list"
            )
        self._pairs = pairs


