"""The runner options every command that runs a bundle takes (bench, infer): OpenVINO's device,
inference precision and compiled-model cache, passed on as one ``RunnerOptions``."""
from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from edgeseg.backends.registry import RunnerOptions


def runner_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Adds --ov-device, --ov-precision and --ov-cache; the command receives ``options: RunnerOptions``
    (its ``threads`` stays 0: commands pass their own --threads)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, ov_device: str, ov_precision: str, ov_cache: Path | None, **kwargs: Any) -> Any:
        return fn(*args, options=RunnerOptions(device=ov_device, inference_precision=ov_precision, cache_dir=ov_cache),
                  **kwargs)

    for option in reversed((
            click.option("--ov-device", default="CPU", show_default=True, help="OpenVINO device: CPU, GPU, GPU.1, NPU."),
            click.option("--ov-precision", type=click.Choice(["f32", "bf16", "f16", "device"]), default="f32",
                         show_default=True, help="OpenVINO inference precision; device: the device's default "
                                                 "(bf16 on CPUs with AVX512_BF16 or AMX)."),
            click.option("--ov-cache", type=click.Path(path_type=Path), default=None,
                         help="Folder for OpenVINO's compiled-model cache (faster second start)."))):
        wrapper = option(wrapper)
    return wrapper
