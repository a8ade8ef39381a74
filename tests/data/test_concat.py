"""Several splits and dataset specs as one training set."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from _helpers import write_folder_dataset
from edgeseg.data import open_dataset
from edgeseg.data.concat import open_datasets
from edgeseg.errors import DatasetError


def _folder(root: Path, n: int, classes: list[str], value: int) -> Path:
    return write_folder_dataset(root, classes, n=n, size=(8, 10), fill=value)


def test_train_plus_val_concatenates_the_splits() -> None:
    both = open_datasets("synthetic:16x16", "train+val")
    train, val = open_dataset("synthetic:16x16", "train"), open_dataset("synthetic:16x16", "val")
    assert len(both) == len(train) + len(val) and both.split == "train+val"
    assert np.array_equal(both[len(train)][0], val[0][0]) and np.array_equal(both[3][1], train[3][1])
    assert np.array_equal(both.load_mask(len(train) + 1), val.load_mask(1))
    assert open_datasets("synthetic:16x16", "train").__class__ is train.__class__  # one pair: no wrapper


def test_several_specs_with_the_same_classes(tmp_path: Path) -> None:
    a = _folder(tmp_path / "a", 3, ["road", "car"], 10)
    b = _folder(tmp_path / "b", 2, ["road", "car"], 200)
    ds = open_datasets([f"folder:{a}", f"folder:{b}"], "train")
    assert len(ds) == 5 and ds.classes == ["road", "car"]
    assert ds[0][0][0, 0, 0] == 10 and ds[4][0][0, 0, 0] == 200
    assert ds.image_path(3) == b / "images" / "0.png"
    with pytest.raises(IndexError):
        ds[5]


def test_different_classes_are_refused_in_one_line(tmp_path: Path) -> None:
    a = _folder(tmp_path / "a", 2, ["road", "car"], 10)
    b = _folder(tmp_path / "b", 2, ["road", "tree"], 10)
    with pytest.raises(DatasetError, match=r"first difference at index 1 \('tree' vs 'car'\)") as e:
        open_datasets([f"folder:{a}", f"folder:{b}"], "train")
    assert "\n" not in str(e.value)
    with pytest.raises(DatasetError, match="train\\+val"):
        open_datasets("synthetic", "train+")
