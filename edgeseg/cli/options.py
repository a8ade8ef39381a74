"""The options and parsers several commands share: sizes, RGB triplets, the preprocessing a model
without metadata is given, and the runner options of commands that run a bundle (bench, infer)."""
from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from edgeseg.backends import openvino
from edgeseg.backends.registry import RunnerOptions
from edgeseg.data.images import check_size
from edgeseg.errors import EdgesegError

OV_PRECISIONS = (*openvino.PRECISIONS, "device")  # --ov-precision: OpenVINO's hints, or the device's default


def parse_size(value: str | None) -> tuple[int, int] | None:
    """'360x480' -> (360, 480); at most edgeseg's frame limit (edgeseg.data.images.MAX_PIXELS)."""
    if value is None:
        return None
    try:
        h, w = (int(v) for v in value.lower().split("x"))
        if h < 1 or w < 1:
            raise ValueError
    except ValueError:
        raise click.BadParameter(f"expected HxW with positive integers (e.g. 360x480), got {value!r}") from None
    try:
        check_size(h, w, "the size")
    except EdgesegError as e:
        raise click.BadParameter(str(e)) from None
    return h, w


def parse_triplet(value: str, flag: str) -> tuple[float, float, float]:
    """'0.485,0.456,0.406' -> (0.485, 0.456, 0.406); a one-line error otherwise."""
    try:
        values = tuple(float(v) for v in value.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise EdgesegError(f"{flag} must be 3 comma-separated numbers (R,G,B), got {value!r}; e.g. {flag} 0.5,0.5,0.5")
    return values


def explicit_preprocessing(what: str, mean: str | None, std: str | None, scale: float | None,
                           imagenet: bool = False, resize: str | None = None):
    """The preprocessing for a model that records none (torchvision weights, untrained, foreign ONNX):
    only what the user states, never a silent default. ``imagenet``: torchvision's ImageNet mean/std."""
    from edgeseg.data import Preprocessing

    if imagenet and (mean or std):
        raise EdgesegError("pass either --imagenet-preprocessing or --mean/--std, not both")
    if not imagenet and not (mean and std):
        raise EdgesegError(f"{what} records no preprocessing and edgeseg will not guess one: expected "
                           "--imagenet-preprocessing (torchvision's mean/std) or --mean R,G,B --std R,G,B "
                           "[--scale 0.00392156862745098]; pass the normalization the model was trained with")
    extra = {"resize": resize} if resize else {}
    if imagenet:
        return Preprocessing(**extra)
    return Preprocessing(mean=parse_triplet(mean, "--mean"), std=parse_triplet(std, "--std"),
                         scale=scale if scale is not None else 1 / 255, **extra)


def onnx_preprocessing(onnx_path: Path, mean: str | None, std: str | None, scale: float | None):
    """The model's preprocessing from its ONNX metadata; --mean/--std/--scale only where it has none."""
    from edgeseg.export.metadata import read_preprocessing

    found = read_preprocessing(onnx_path)
    if found is not None:
        if mean or std:
            raise EdgesegError(f"{onnx_path} already records its preprocessing ({found.to_dict()}); drop --mean/--std "
                               "so calibration cannot drift from training")
        return found
    return explicit_preprocessing(f"{onnx_path} (no edgeseg metadata)", mean, std, scale)


def runner_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Adds --ov-device, --ov-precision and --ov-cache; the command receives ``options: RunnerOptions``
    (its ``threads`` stays 0: commands pass their own --threads)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, ov_device: str, ov_precision: str, ov_cache: Path | None, **kwargs: Any) -> Any:
        return fn(*args, options=RunnerOptions(device=ov_device, inference_precision=ov_precision, cache_dir=ov_cache),
                  **kwargs)

    for option in reversed((
            click.option("--ov-device", default="CPU", show_default=True, help="OpenVINO device: CPU, GPU, GPU.1, NPU."),
            click.option("--ov-precision", type=click.Choice(OV_PRECISIONS), default="f32",
                         show_default=True, help="OpenVINO inference precision; device: the device's default "
                                                 "(bf16 on CPUs with AVX512_BF16 or AMX)."),
            click.option("--ov-cache", type=click.Path(path_type=Path), default=None,
                         help="Folder for OpenVINO's compiled-model cache (faster second start)."))):
        wrapper = option(wrapper)
    return wrapper
