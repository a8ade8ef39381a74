"""Datasets, preprocessing and augmentation (numpy/PIL; the torch wrapper is in
``edgeseg.data.torch_dataset`` so that ``import edgeseg.data`` never imports torch: the "bilinear"
resize imports it when it first resizes a frame)."""
from edgeseg.data.base import DATASET_KINDS, SegmentationDataset
from edgeseg.data.preprocess import Preprocessing
from edgeseg.data.spec import open_dataset
from edgeseg.data.transforms import TrainAugment

__all__ = ["DATASET_KINDS", "Preprocessing", "SegmentationDataset", "TrainAugment", "open_dataset"]
