"""torch ``Dataset`` wrapper and class-balance statistics.

``TorchSegmentation(ds, preprocessing, augment)[i]`` returns ``(float32 tensor (3, H, W),
int64 tensor (H, W))``: the mask holds 0..C-1 and 255 (void). Without ``augment`` the pair
is resized to ``preprocessing.size`` (bilinear image / nearest mask); with ``augment`` the
augmentation produces the crop and only normalisation follows.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from edgeseg.data.base import SegmentationDataset
from edgeseg.data.preprocess import Preprocessing
from edgeseg.data.transforms import TrainAugment
from edgeseg.errors import EdgesegError


class TorchSegmentation(Dataset):
    """Wrap a :class:`SegmentationDataset` for a ``DataLoader``.

    Augmentation randomness for sample ``i`` comes from ``np.random.default_rng([seed, epoch, i])``,
    so a run is reproducible regardless of worker count or order. Call ``set_epoch(e)`` before
    each epoch; the epoch lives in shared memory, so persistent workers see it too.
    """

    def __init__(
        self,
        dataset: SegmentationDataset,
        preprocessing: Preprocessing,
        augment: TrainAugment | None = None,
        seed: int = 0,
    ) -> None:
        if int(seed) < 0:
            raise EdgesegError(f"seed must be a non-negative integer, got {seed!r}; pass e.g. --seed 0")
        self.dataset = dataset
        self.preprocessing = preprocessing
        self.augment = augment
        self.seed = int(seed)
        epoch = torch.zeros((), dtype=torch.int64)
        try:
            epoch.share_memory_()
        except RuntimeError:  # no shared memory available: workers then see the epoch at their start
            pass
        self._epoch = epoch

    @property
    def epoch(self) -> int:
        return int(self._epoch.item())

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream for the coming epoch (non-negative int)."""
        if int(epoch) < 0:
            raise EdgesegError(f"epoch must be >= 0, got {epoch!r}")
        self._epoch.fill_(int(epoch))

    @property
    def num_classes(self) -> int:
        return self.dataset.num_classes

    @property
    def ignore_index(self) -> int:
        return self.dataset.ignore_index

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample ``i`` as (float32 (3, H, W) normalised image, int64 (H, W) mask with 255 = void)."""
        n = len(self.dataset)
        i = int(i) + n if int(i) < 0 else int(i)
        image, mask = self.dataset[i]
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, self.epoch, i])
            image, mask = self.augment(image, mask, rng)
        else:
            image = self.preprocessing.resize_image(image)
            mask = self.preprocessing.resize_mask(mask)
        x = torch.from_numpy(self.preprocessing.normalize(image))
        y = torch.from_numpy(mask.astype(np.int64))
        return x, y


def class_pixel_frequencies(dataset: SegmentationDataset, max_samples: int | None = None) -> np.ndarray:
    """SegNet class frequencies: ``freq[c] = pixels of c / labelled pixels of the images containing c``.

    Void pixels are not counted. ``max_samples`` reads that many evenly spaced masks instead of
    all. Returns float64 ``(num_classes,)``; 0 for classes never seen.
    """
    n, c = len(dataset), dataset.num_classes
    if max_samples is not None and max_samples < 1:
        raise EdgesegError(f"max_samples must be >= 1 or None, got {max_samples!r}")
    if max_samples is None or max_samples >= n:
        indices = range(n)
    else:
        indices = np.unique(np.linspace(0, n - 1, int(max_samples)).round().astype(np.int64)).tolist()
    counts = np.zeros(c, np.int64)
    present_total = np.zeros(c, np.int64)
    for i in indices:
        mask = dataset.load_mask(i)
        hist = np.bincount(mask.ravel(), minlength=256)[:c]
        counts += hist
        present_total[hist > 0] += int(hist.sum())
    freqs = np.zeros(c, np.float64)
    seen = present_total > 0
    freqs[seen] = counts[seen] / present_total[seen]
    return freqs


def median_frequency_weights(freqs: np.ndarray) -> np.ndarray:
    """Median-frequency balancing (SegNet): ``w[c] = median(freqs > 0) / freqs[c]``, 0 where freqs[c] == 0.

    Returns float32 ``(C,)`` ready for ``torch.nn.CrossEntropyLoss(weight=torch.from_numpy(w))``.
    """
    f = np.asarray(freqs, dtype=np.float64)
    if f.ndim != 1 or (f < 0).any() or not np.isfinite(f).all():
        raise EdgesegError(f"freqs must be a 1-D array of finite non-negative numbers, got {f!r}")
    w = np.zeros_like(f)
    seen = f > 0
    if seen.any():
        w[seen] = np.median(f[seen]) / f[seen]
    return w.astype(np.float32)
