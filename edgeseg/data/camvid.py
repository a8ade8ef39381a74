"""CamVid in the SegNet layout: train/, trainannot/, val/, valannot/, test/, testannot/ (class 11 = void)."""
from __future__ import annotations

from pathlib import Path

from edgeseg.data.base import SegmentationDataset, require_dir, short_list
from edgeseg.errors import DatasetError
from edgeseg.io_utils import require_file


class CamVidDataset(SegmentationDataset):
    """CamVid in the SegNet layout: ``{split}/*.png`` + ``{split}annot/*.png`` (+ optional ``{split}.txt``).

    Images and labels are matched by file name. When ``{split}.txt`` exists it fixes the order
    (its absolute ``/SegNet/CamVid/...`` prefixes are ignored); otherwise names are sorted.
    Raw label 11 (Unlabelled) becomes 255.
    """

    name = "camvid"
    void_value = 11
    classes = [
        "Sky", "Building", "Pole", "Road", "Pavement", "Tree",
        "SignSymbol", "Fence", "Car", "Pedestrian", "Bicyclist",
    ]
    palette = [
        (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
        (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
    ]
    label_fix = "CamVid labels must be SegNet index PNGs (0..10, 11 = Unlabelled), not colour labels"

    def __init__(self, root: str | Path, split: str) -> None:
        super().__init__(root, split)
        assert self.root is not None
        fix = "point camvid:PATH at the SegNet CamVid folder holding train/, trainannot/, val/, valannot/"
        img_dir, ann_dir = self.root / split, self.root / f"{split}annot"
        require_dir(img_dir, f"CamVid {split} image folder", fix)
        require_dir(ann_dir, f"CamVid {split} label folder", fix)
        listing = self.root / f"{split}.txt"
        if listing.exists():
            pairs = []
            for line in require_file(listing, "CamVid split list", "make it a text file or delete it",
                                     DatasetError).read_text().splitlines():
                parts = line.split()
                if not parts:
                    continue
                img_name = Path(parts[0]).name
                ann_name = Path(parts[1]).name if len(parts) > 1 else img_name
                pairs.append((img_dir / img_name, ann_dir / ann_name))
            missing = [p.name for p, _ in pairs if not p.is_file()]
            if missing:
                raise DatasetError(
                    f"{len(missing)} image(s) listed in {listing} are missing from {img_dir}: {short_list(missing)}; "
                    "restore them or remove those lines"
                )
        else:
            pairs = [(p, ann_dir / p.name) for p in sorted(img_dir.glob("*.png"))]
        if not pairs:
            raise DatasetError(f"no CamVid images in {img_dir}: expected {split}/*.png; {fix}")
        missing = [a.name for _, a in pairs if not a.is_file()]
        if missing:
            raise DatasetError(
                f"{len(missing)} CamVid {split} image(s) have no label in {ann_dir}: expected {short_list(missing)}; "
                "restore the label files"
            )
        self._pairs = pairs


