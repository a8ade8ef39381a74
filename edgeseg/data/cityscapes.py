"""Cityscapes: leftImg8bit/SPLIT/CITY/*, gtFine/SPLIT/CITY/*_labelTrainIds.png."""
from __future__ import annotations

from pathlib import Path

from edgeseg.data.base import SegmentationDataset, require_dir, short_list
from edgeseg.errors import DatasetError


class CityscapesDataset(SegmentationDataset):
    """Cityscapes fine annotations: ``leftImg8bit/{split}/*/*_leftImg8bit.png`` + ``*_gtFine_labelTrainIds.png``.

    Uses the 19 train ids (255 void); the trainId PNGs come from cityscapesscripts'
    ``createTrainIdLabelImgs``.
    """

    name = "cityscapes"
    classes = [
        "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
        "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
    ]
    palette = [
        (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
        (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
        (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
    ]
    label_fix = "use the *_gtFine_labelTrainIds.png files (train ids 0..18, 255 void), not labelIds"

    def __init__(self, root: str | Path, split: str) -> None:
        super().__init__(root, split)
        assert self.root is not None
        fix = "point cityscapes:PATH at the folder holding leftImg8bit/ and gtFine/"
        img_dir, gt_dir = self.root / "leftImg8bit" / split, self.root / "gtFine" / split
        require_dir(img_dir, f"Cityscapes {split} image folder", fix)
        require_dir(gt_dir, f"Cityscapes {split} label folder", fix)
        images = sorted(img_dir.glob("*/*_leftImg8bit.png"))
        if not images:
            raise DatasetError(f"no Cityscapes images in {img_dir}: expected CITY/*_leftImg8bit.png; {fix}")
        pairs = []
        for p in images:
            stem = p.name[: -len("_leftImg8bit.png")]
            pairs.append((p, gt_dir / p.parent.name / f"{stem}_gtFine_labelTrainIds.png"))
        missing = [a.name for _, a in pairs if not a.is_file()]
        if missing:
            raise DatasetError(
                f"{len(missing)} Cityscapes {split} image(s) have no train-id label in {gt_dir}: expected "
                f"{short_list(missing)}; run cityscapesscripts' createTrainIdLabelImgs"
            )
        self._pairs = pairs


