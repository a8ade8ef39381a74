"""Datasets, spec parsing, augmentation and the torch wrapper, on tiny fixture trees."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edgeseg.data import DATASET_KINDS, Preprocessing, SegmentationDataset, TrainAugment, open_dataset
from edgeseg.data.base import color_map
from edgeseg.data.camvid import CamVidDataset
from edgeseg.data.cityscapes import CityscapesDataset
from edgeseg.data.folder import FolderDataset
from edgeseg.data.synthetic import SyntheticDataset
from edgeseg.data.voc import VOCDataset
from edgeseg.data.torch_dataset import TorchSegmentation, class_pixel_frequencies, median_frequency_weights
from edgeseg.errors import DatasetError

REPO = Path(__file__).resolve().parents[2]
CAMVID = Path(__file__).resolve().parents[3] / "shared/datasets/camvid"


def _rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _save_rgb(path: Path, h: int = 6, w: int = 8, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_rgb(h, w, seed)).save(path)


def _save_mask(path: Path, mask: np.ndarray, palette: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(mask.astype(np.uint8), mode="L")
    if palette:
        im = im.convert("P")
        im.putpalette([v for c in color_map(256) for v in c])
        im.frombytes(mask.astype(np.uint8).tobytes())
    im.save(path)


class _ListDataset(SegmentationDataset):
    """In-memory dataset for wrapper tests."""

    name = "list"
    classes = ["a", "b", "c"]
    palette = color_map(3)

    def __init__(self, masks: list[np.ndarray]) -> None:
        super().__init__(None, "train")
        self.masks = masks

    def __len__(self) -> int:
        return len(self.masks)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        m = self.masks[self._index(i)]
        return _rgb(*m.shape, seed=i), m

    def load_mask(self, i: int) -> np.ndarray:
        return self.masks[self._index(i)]


# -- import hygiene -----------------------------------------------------------------------


def test_import_data_does_not_import_torch() -> None:
    code = "import sys, edgeseg.data; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


# -- synthetic ----------------------------------------------------------------------------


def test_synthetic_shapes_lengths_and_determinism() -> None:
    ds = SyntheticDataset("train")
    assert (len(ds), len(SyntheticDataset("val")), len(SyntheticDataset("test"))) == (384, 48, 48)
    assert ds.num_classes == len(ds.palette) == 8 and ds.ignore_index == 255
    img, mask = ds[3]
    assert img.shape == (128, 160, 3) and img.dtype == np.uint8
    assert mask.shape == (128, 160) and mask.dtype == np.uint8
    img2, mask2 = SyntheticDataset("train")[3]
    np.testing.assert_array_equal(img, img2)
    np.testing.assert_array_equal(mask, mask2)
    assert not np.array_equal(SyntheticDataset("val")[3][0], img)  # splits use disjoint seeds
    assert not np.array_equal(ds[4][0], img)
    np.testing.assert_array_equal(ds[-1][1], ds[383][1])
    assert ds.image_path(0) is None and ds.mask_path(0) is None
    with pytest.raises(IndexError):
        ds[384]


def test_synthetic_class_coverage() -> None:
    # speed is not asserted here (a timed unit test fails on a busy machine); the renderer costs ~2 ms a sample
    ds = SyntheticDataset("val", size=(96, 128), length=24)
    seen = np.zeros(8, bool)
    for i in range(len(ds)):
        img, mask = ds[i]
        assert img.shape == (96, 128, 3)
        present = np.unique(mask)
        assert present.max() < 8
        assert len(present) >= 4, f"sample {i} has only classes {present}"
        seen[present] = True
    assert seen.all(), f"classes never drawn: {np.flatnonzero(~seen)}"


def test_synthetic_thin_lines_are_thin() -> None:
    """Pole pixels (class 4) must be 1-3 px wide structures: most have a non-pole horizontal neighbour."""
    mask = SyntheticDataset("train")[0][1]
    pole = mask == 4
    assert pole.any()
    interior = pole[:, 2:-2] & pole[:, 1:-3] & pole[:, 3:-1] & pole[:, :-4] & pole[:, 4:]
    assert interior.sum() < 0.2 * pole.sum()


# -- spec parsing -------------------------------------------------------------------------


def test_open_dataset_synthetic_specs() -> None:
    assert DATASET_KINDS == ("synthetic", "camvid", "voc", "cityscapes", "folder")
    ds = open_dataset("synthetic", "val")
    assert isinstance(ds, SyntheticDataset) and ds.size == (128, 160)
    ds = open_dataset("synthetic:96x128", "train")
    assert ds.size == (96, 128) and ds[0][0].shape == (96, 128, 3)


@pytest.mark.parametrize(
    ("spec", "split", "pattern"),
    [
        ("imagenet:/data", "train", r"unknown dataset kind 'imagenet'.*synthetic, camvid, voc, cityscapes, folder"),
        ("camvid", "train", r"has no path: expected camvid:PATH"),
        ("camvid:", "train", r"has no path"),
        ("folder:/definitely/not/here", "train", r"dataset folder /definitely/not/here does not exist"),
        ("synthetic", "holdout", r"unknown split 'holdout' for synthetic dataset: expected one of train, val, test"),
        ("voc:/tmp", "test", r"unknown split 'test' for voc dataset: expected one of train, val, trainval"),
        ("synthetic:big", "train", r"synthetic size 'big'.*not HxW"),
        ("synthetic:8x8", "train", r"synthetic size must be two integers >= 16"),
        ("", "train", r"dataset spec must be KIND:PATH"),
    ],
)
def test_open_dataset_errors(spec: str, split: str, pattern: str) -> None:
    with pytest.raises(DatasetError, match=pattern):
        open_dataset(spec, split)


# -- folder -------------------------------------------------------------------------------


def _folder_tree(root: Path) -> None:
    _save_rgb(root / "images" / "a.png", seed=1)
    _save_rgb(root / "images" / "b.jpg", seed=2)
    _save_mask(root / "masks" / "a.png", np.array([[0, 1] * 4] * 6))
    m = np.full((6, 8), 255)
    m[0, 0] = 4
    _save_mask(root / "masks" / "b.png", m)
    (root / "images" / "notes.txt").write_text("ignored")


def test_folder_dataset(tmp_path: Path) -> None:
    _folder_tree(tmp_path)
    ds = open_dataset(f"folder:{tmp_path}", "val")
    assert isinstance(ds, FolderDataset) and len(ds) == 2
    assert ds.num_classes == 5 and ds.classes[4] == "class_4" and len(ds.palette) == 5
    img, mask = ds[1]
    assert img.shape == (6, 8, 3) and ds.image_path(1).name == "b.jpg" and ds.mask_path(1).name == "b.png"
    assert mask[0, 0] == 4 and (mask[1:] == 255).all()


def test_folder_split_subfolders_and_classes_txt(tmp_path: Path) -> None:
    _folder_tree(tmp_path / "train")
    _save_rgb(tmp_path / "val" / "images" / "c.png")
    _save_mask(tmp_path / "val" / "masks" / "c.png", np.zeros((6, 8)))
    (tmp_path / "classes.txt").write_text("bg\nfg\n\nx\ny\nz\n")
    train, val = FolderDataset(tmp_path, "train"), FolderDataset(tmp_path, "val")
    assert (len(train), len(val)) == (2, 1)
    assert train.classes == val.classes == ["bg", "fg", "x", "y", "z"]
    (tmp_path / "classes.txt").unlink()
    assert FolderDataset(tmp_path, "val").num_classes == 5  # scanned over every split's masks


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"image folder .*images does not exist"):
        FolderDataset(tmp_path, "train")
    _folder_tree(tmp_path)
    (tmp_path / "masks" / "b.png").unlink()
    with pytest.raises(DatasetError, match=r"1 image\(s\) in .* have no mask: expected b.png"):
        FolderDataset(tmp_path, "train")


def test_out_of_range_label(tmp_path: Path) -> None:
    _folder_tree(tmp_path)
    (tmp_path / "classes.txt").write_text("a\nb\nc\n")
    ds = FolderDataset(tmp_path, "train")
    ds[0]
    with pytest.raises(DatasetError, match=r"label value 4 in .*b\.png is out of range: expected 0\.\.2 or 255 \(void\)"):
        ds[1]


def test_mask_size_mismatch_and_corrupt_image(tmp_path: Path) -> None:
    _folder_tree(tmp_path)
    _save_mask(tmp_path / "masks" / "a.png", np.zeros((5, 8)))
    ds = FolderDataset(tmp_path, "train")
    with pytest.raises(DatasetError, match=r"mask .*a\.png is 8x5 \(WxH\) but image .*a\.png is 8x6"):
        ds[0]
    (tmp_path / "images" / "b.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    with pytest.raises(DatasetError, match=r"cannot read image .*b\.jpg"):
        ds[1]


def test_rgb_mask_is_rejected(tmp_path: Path) -> None:
    _folder_tree(tmp_path)
    _save_rgb(tmp_path / "masks" / "a.png")
    (tmp_path / "classes.txt").write_text("a\nb\nc\nd\ne\n")
    with pytest.raises(DatasetError, match=r"mode 'RGB'.*single-channel"):
        FolderDataset(tmp_path, "train")[0]


# -- VOC / Cityscapes / CamVid fixture trees ------------------------------------------------


def test_voc_reads_palette_indices(tmp_path: Path) -> None:
    base = tmp_path / "VOCdevkit" / "VOC2012"
    for name, seed in (("2007_000001", 1), ("2007_000002", 2)):
        _save_rgb(base / "JPEGImages" / f"{name}.jpg", seed=seed)
    mask = np.zeros((6, 8), np.uint8)
    mask[1, 1], mask[2, 2], mask[3, 3] = 15, 255, 20
    _save_mask(base / "SegmentationClass" / "2007_000001.png", mask, palette=True)
    bad = mask.copy()
    bad[0, 0] = 21
    _save_mask(base / "SegmentationClass" / "2007_000002.png", bad, palette=True)
    (base / "ImageSets" / "Segmentation").mkdir(parents=True)
    (base / "ImageSets" / "Segmentation" / "train.txt").write_text("2007_000002\n2007_000001\n")
    assert Image.open(base / "SegmentationClass" / "2007_000001.png").mode == "P"
    ds = open_dataset(f"voc:{tmp_path}", "train")
    assert isinstance(ds, VOCDataset) and ds.num_classes == 21 and len(ds) == 2
    assert ds.image_path(0).stem == "2007_000002"  # list order
    img, got = ds[1]
    np.testing.assert_array_equal(got, mask)
    with pytest.raises(DatasetError, match=r"label value 21 in .*2007_000002\.png is out of range: expected 0\.\.20"):
        ds[0]
    with pytest.raises(DatasetError, match=r"VOC split list .*val\.txt does not exist"):
        VOCDataset(tmp_path, "val")


def test_cityscapes_pairs(tmp_path: Path) -> None:
    for city, frame in (("aachen", "aachen_000000_000019"), ("bochum", "bochum_000000_000313")):
        _save_rgb(tmp_path / "leftImg8bit" / "val" / city / f"{frame}_leftImg8bit.png")
        mask = np.full((6, 8), 255)
        mask[:3] = 18
        _save_mask(tmp_path / "gtFine" / "val" / city / f"{frame}_gtFine_labelTrainIds.png", mask)
    ds = open_dataset(f"cityscapes:{tmp_path}", "val")
    assert isinstance(ds, CityscapesDataset) and ds.num_classes == 19 and len(ds) == 2
    assert ds.mask_path(1).name == "bochum_000000_000313_gtFine_labelTrainIds.png"
    assert set(np.unique(ds[0][1])) == {18, 255}
    _save_rgb(tmp_path / "leftImg8bit" / "val" / "bochum" / "bochum_000001_000001_leftImg8bit.png")
    with pytest.raises(DatasetError, match=r"no train-id label .*createTrainIdLabelImgs"):
        CityscapesDataset(tmp_path, "val")


def test_camvid_fixture_order_and_void(tmp_path: Path) -> None:
    names = ["0001TP_000010.png", "0001TP_000020.png", "Seq05VD_f00000.png"]
    for k, n in enumerate(names):
        _save_rgb(tmp_path / "val" / n, seed=k)
        _save_mask(tmp_path / "valannot" / n, np.full((6, 8), k * 5 + 1))  # 1, 6, 11 (void)
    listing = [f"/SegNet/CamVid/val/{n} /SegNet/CamVid/valannot/{n}" for n in reversed(names)]
    (tmp_path / "val.txt").write_text("\n".join(listing) + "\n")
    ds = CamVidDataset(tmp_path, "val")
    assert [ds.image_path(i).name for i in range(3)] == list(reversed(names))
    assert (ds[0][1] == 255).all() and (ds[2][1] == 1).all()
    (tmp_path / "val.txt").unlink()
    ds = CamVidDataset(tmp_path, "val")
    assert [ds.image_path(i).name for i in range(3)] == names
    _save_mask(tmp_path / "valannot" / names[0], np.full((6, 8), 12))
    with pytest.raises(DatasetError, match=r"label value 12 in .* out of range: expected 0\.\.10 or 11 \(void\)"):
        ds[0]
    (tmp_path / "valannot" / names[1]).unlink()
    with pytest.raises(DatasetError, match=r"have no label in .*valannot: expected 0001TP_000020\.png"):
        CamVidDataset(tmp_path, "val")
    with pytest.raises(DatasetError, match=r"CamVid train image folder .* does not exist"):
        CamVidDataset(tmp_path, "train")


@pytest.mark.camvid
@pytest.mark.skipif(not CAMVID.is_dir(), reason=f"CamVid not found at {CAMVID}")
def test_camvid_real_data() -> None:
    train = open_dataset(f"camvid:{CAMVID}", "train")
    val = open_dataset(f"camvid:{CAMVID}", "val")
    assert (len(train), len(val)) == (367, 101)
    assert train.num_classes == 11 and train.classes[0] == "Sky" and train.classes[10] == "Bicyclist"
    img, mask = val[0]
    assert img.shape == (360, 480, 3) and mask.shape == (360, 480)
    # no label lost: every raw value is 0..10 or 11, and the void count equals the raw count of 11
    hist = np.zeros(256, np.int64)
    for i in range(len(train)):
        raw = np.array(Image.open(train.mask_path(i)))
        raw_hist = np.bincount(raw.ravel(), minlength=256)
        got = np.bincount(train.load_mask(i).ravel(), minlength=256)
        assert raw_hist[12:].sum() == 0
        np.testing.assert_array_equal(got[:11], raw_hist[:11])
        assert got[255] == raw_hist[11]
        hist += got
    assert (hist[:11] > 0).all() and hist[11:255].sum() == 0
    share = hist[:11] / hist.sum()
    assert share[3] == pytest.approx(0.317, abs=0.002)  # Road share from the README


# -- augmentation ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(20, 30), (64, 48), (100, 120)])
def test_train_augment_shapes_and_mask_values(shape: tuple[int, int]) -> None:
    aug = TrainAugment((40, 56), scale=(0.5, 2.0))
    rng = np.random.default_rng(0)
    mask = np.random.default_rng(1).choice(np.array([0, 2, 5, 255], np.uint8), size=shape)
    for _ in range(5):
        img, m = aug(_rgb(*shape), mask, rng)
        assert img.shape == (40, 56, 3) and img.dtype == np.uint8
        assert m.shape == (40, 56) and m.dtype == np.uint8
        assert set(np.unique(m)) <= {0, 2, 5, 255}


def test_train_augment_pads_with_void_and_is_reproducible() -> None:
    aug = TrainAugment((32, 32), scale=(0.5, 0.5), color_jitter=0.0)
    img, m = aug(_rgb(16, 16), np.zeros((16, 16), np.uint8), np.random.default_rng(0))
    assert (m == 255).sum() == 32 * 32 - 8 * 8 and (m == 0).sum() == 64
    assert (img[m == 255] == (124, 116, 104)).all()
    a = TrainAugment((24, 24))(_rgb(50, 60), np.zeros((50, 60), np.uint8), np.random.default_rng(7))
    b = TrainAugment((24, 24))(_rgb(50, 60), np.zeros((50, 60), np.uint8), np.random.default_rng(7))
    np.testing.assert_array_equal(a[0], b[0])


def test_train_augment_flip_keeps_image_and_mask_aligned() -> None:
    img = _rgb(8, 10)
    mask = np.arange(80, dtype=np.uint8).reshape(8, 10) % 7
    aug = TrainAugment((8, 10), scale=(1.0, 1.0), color_jitter=0.0)
    flipped = 0
    for s in range(8):
        out_img, out_mask = aug(img, mask, np.random.default_rng(s))
        is_flip = np.array_equal(out_mask, mask[:, ::-1])
        assert is_flip or np.array_equal(out_mask, mask)
        np.testing.assert_array_equal(out_img, img[:, ::-1] if is_flip else img)
        flipped += is_flip
    assert 0 < flipped < 8


# -- torch wrapper and class weights ---------------------------------------------------------


def test_torch_segmentation_without_augment() -> None:
    ds = SyntheticDataset("val", size=(32, 40), length=4)
    tds = TorchSegmentation(ds, Preprocessing(size=(16, 24)))
    x, y = tds[0]
    assert x.dtype == torch.float32 and x.shape == (3, 16, 24)
    assert y.dtype == torch.int64 and y.shape == (16, 24) and int(y.max()) < 8
    x_full, _ = TorchSegmentation(ds, Preprocessing())[1]
    assert x_full.shape == (3, 32, 40)
    expected = Preprocessing().normalize(ds[1][0])
    np.testing.assert_allclose(x_full.numpy(), expected)
    loader = torch.utils.data.DataLoader(tds, batch_size=2)
    xb, yb = next(iter(loader))
    assert xb.shape == (2, 3, 16, 24) and yb.shape == (2, 16, 24)


def test_torch_segmentation_augment_epochs() -> None:
    ds = SyntheticDataset("train", size=(32, 40), length=4)
    tds = TorchSegmentation(ds, Preprocessing(), augment=TrainAugment((24, 24)), seed=3)
    x0, y0 = tds[2]
    assert x0.shape == (3, 24, 24) and y0.shape == (24, 24)
    assert set(torch.unique(y0).tolist()) <= set(range(8)) | {255}
    torch.testing.assert_close(tds[2][0], x0)  # same (seed, epoch, index) -> same sample
    tds.set_epoch(1)
    assert tds.epoch == 1 and not torch.equal(tds[2][0], x0)
    tds.set_epoch(0)
    torch.testing.assert_close(tds[2][0], x0)


def test_class_frequencies_and_median_weights() -> None:
    # image 0: 3 px class 0, 1 px class 1 (4 labelled); image 1: 2 px class 0, 1 void, 1 px class 1
    masks = [np.array([[0, 0], [0, 1]], np.uint8), np.array([[0, 0], [255, 1]], np.uint8)]
    freqs = class_pixel_frequencies(_ListDataset(masks))
    # class 0: 5 / (4 + 3) ; class 1: 2 / (4 + 3) ; class 2: never seen -> 0
    np.testing.assert_allclose(freqs, [5 / 7, 2 / 7, 0.0])
    w = median_frequency_weights(freqs)
    # median over seen classes = (5/7 + 2/7) / 2 = 1/2 -> weights 0.7, 1.75, 0
    assert w.dtype == np.float32
    np.testing.assert_allclose(w, [0.7, 1.75, 0.0], rtol=1e-6)
    np.testing.assert_allclose(class_pixel_frequencies(_ListDataset(masks), max_samples=1), [3 / 4, 1 / 4, 0.0])
    np.testing.assert_array_equal(median_frequency_weights(np.zeros(3)), np.zeros(3))
