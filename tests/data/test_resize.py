"""One resize definition: "bilinear" equals OpenCV INTER_LINEAR (within 1 LSB: OpenCV's uint8 path uses 11-bit
fixed-point weights) and the half-pixel formula; "pil_bilinear" stays what old checkpoints were trained with."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgeseg.data import Preprocessing, TrainAugment
from edgeseg.data.resize import bilinear, resize_image
from edgeseg.data.synthetic import SyntheticDataset
from edgeseg.errors import EdgesegError

cv2 = pytest.importorskip("cv2", reason="OpenCV (the video extra) is the reference for INTER_LINEAR")
MODEL_INPUT = (64, 96)
REFERENCE_CKPT = Path(__file__).resolve().parents[2] / "benchmarks" / "reference" / "deeplabv3plus_mobilenet_v2_camvid.pt"


def _frames(size: tuple[int, int]) -> list[np.ndarray]:
    """A natural-looking scene and uniform noise (the worst case for interpolation), at ``size``."""
    scene = SyntheticDataset("val", size=(max(16, size[0]), max(16, size[1])), length=1)[0][0][: size[0], : size[1]]
    noise = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    return [scene, noise]


def _reference(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The half-pixel definition in float64: src = (dst + 0.5) * in / out - 0.5, clamped; rounded half up."""
    def axis(n_in: int, n_out: int):
        src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        i0 = np.floor(src).astype(int)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, src - i0
    y0, y1, ly = axis(image.shape[0], size[0])
    x0, x1, lx = axis(image.shape[1], size[1])
    f = image.astype(np.float64)
    rows = f[y0] * (1 - ly)[:, None, None] + f[y1] * ly[:, None, None]
    out = rows[:, x0] * (1 - lx)[None, :, None] + rows[:, x1] * lx[None, :, None]
    return out


@pytest.mark.parametrize("frame", [(128, 192), (100, 150), (40, 50), (64, 96), (97, 61)],
                         ids=["2x-larger", "larger", "smaller", "same", "mixed"])
def test_bilinear_equals_opencv_inter_linear_within_one_lsb(frame: tuple[int, int]) -> None:
    pre = Preprocessing(size=MODEL_INPUT)
    assert pre.resize == "bilinear", "new preprocessing uses the plain bilinear definition"
    for image in _frames(frame):
        ours = pre.resize_image(image)
        ref = cv2.resize(image, MODEL_INPUT[::-1], interpolation=cv2.INTER_LINEAR)
        diff = np.abs(ours.astype(int) - ref)
        assert ours.shape == ref.shape and diff.max() <= 1, f"max difference {diff.max()} LSB"
        if frame in ((128, 192), (64, 96)):  # exact halving: weights 0.5, no fixed-point rounding: identical
            assert diff.max() == 0
        assert (diff > 0).mean() < 0.25, f"{(diff > 0).mean():.1%} of values differ by 1 LSB"


@pytest.mark.parametrize("frame", [(100, 150), (40, 50), (97, 61)])
def test_bilinear_is_the_half_pixel_formula(frame: tuple[int, int]) -> None:
    for image in _frames(frame):
        exact = _reference(image, MODEL_INPUT)
        ours = bilinear(image, MODEL_INPUT).astype(np.float64)
        assert np.abs(ours - exact).max() <= 0.5 + 1e-3  # rounded to nearest
        clear = np.abs(exact - np.floor(exact) - 0.5) > 1e-3  # away from ties, float32 and float64 round alike
        assert (ours[clear] == np.floor(exact[clear] + 0.5)).all()


def test_ties_round_half_up() -> None:
    image = np.array([[[0, 0, 0], [1, 3, 5]]], np.uint8)  # 1x2 -> 1x4: weights 0.25 / 0.75 give x.25, x.5, x.75
    out = bilinear(image, (1, 4))[0]
    assert out[:, 0].tolist() == [0, 0, 1, 1]  # 0, 0.25, 0.75, 1
    assert out[:, 1].tolist() == [0, 1, 2, 3]  # 0, 0.75, 2.25, 3
    assert out[:, 2].tolist() == [0, 1, 4, 5]  # 0, 1.25, 3.75, 5


def test_pil_bilinear_differs_and_is_what_old_dicts_mean() -> None:
    image = _frames((128, 192))[1]
    old = Preprocessing.from_dict({"mean": [0.5] * 3, "std": [0.5] * 3, "size": list(MODEL_INPUT)})
    assert old.resize == "pil_bilinear"
    pil = np.asarray(Image.fromarray(image).resize(MODEL_INPUT[::-1], Image.BILINEAR))
    assert (old.resize_image(image) == pil).all()
    plain = cv2.resize(image, MODEL_INPUT[::-1], interpolation=cv2.INTER_LINEAR)
    assert np.abs(pil.astype(int) - plain).mean() > 5, "PIL antialiases the 2x downscale"
    assert Preprocessing.from_dict(Preprocessing(size=MODEL_INPUT).to_dict()).resize == "bilinear"


def test_unknown_resize_is_refused() -> None:
    with pytest.raises(EdgesegError, match="resize must be one of bilinear, pil_bilinear"):
        Preprocessing(resize="lanczos")
    with pytest.raises(EdgesegError, match="resize must be one of"):
        Preprocessing.from_dict({"mean": [0.5] * 3, "std": [0.5] * 3, "resize": "area"})


def test_reference_checkpoint_records_the_deployment_resize() -> None:
    """The reference was trained with the "bilinear" definition and says so in its own preprocessing dict
    (not by the legacy default of a dict without the field)."""
    import torch

    if not REFERENCE_CKPT.is_file():
        pytest.skip(f"{REFERENCE_CKPT} is absent")
    raw = torch.load(REFERENCE_CKPT, map_location="cpu", weights_only=True)
    assert raw["preprocessing"]["resize"] == "bilinear"


def test_training_augmentation_resizes_by_the_models_definition() -> None:
    image = _frames((64, 96))[1]
    mask = np.zeros((64, 96), np.uint8)
    rng = lambda: np.random.default_rng(5)  # noqa: E731
    for method in ("bilinear", "pil_bilinear"):
        aug = TrainAugment(crop=(32, 32), scale=(0.5, 0.5), hflip=False, color_jitter=0.0, resize=method)
        got, _ = aug(image, mask, rng())
        assert (got == resize_image(image, (32, 48), method)[:, got_offset(rng(), 48, 32)]).all()


def got_offset(rng: np.random.Generator, width: int, crop: int) -> slice:
    """The crop TrainAugment draws for a (32, width) image with a 32x32 crop: the same rng stream."""
    rng.uniform(0.5, 0.5)
    rng.integers(0, 1)  # y (height equals the crop)
    x = int(rng.integers(0, width - crop + 1))
    return slice(x, x + crop)
