"""Shared fixtures and markers: camvid data, GPU and TensorRT skips."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
CAMVID = REPO.parent / "shared" / "datasets" / "camvid"

torch.set_num_threads(1)  # tiny test models gain nothing from threads; spinning OpenMP threads crawl on a busy CPU


@pytest.fixture(scope="session")
def camvid_root() -> Path:
    if not (CAMVID / "train").is_dir():
        pytest.skip(f"CamVid not found at {CAMVID} (the shared dataset folder is absent)")
    return CAMVID


def pytest_collection_modifyitems(config, items):
    no_gpu = pytest.mark.skip(reason="no CUDA GPU on this machine")
    no_trt = pytest.mark.skip(reason="TensorRT is not installed (pip install 'edgeseg[trt]' on a GPU machine)")
    has_gpu = torch.cuda.is_available()
    has_trt = importlib.util.find_spec("tensorrt") is not None
    for item in items:
        if "tensorrt" in item.keywords and not has_trt:
            item.add_marker(no_trt)
        elif ("gpu" in item.keywords or "tensorrt" in item.keywords) and not has_gpu:
            item.add_marker(no_gpu)


TINY_SPEC = "synthetic:64x96"


@pytest.fixture(scope="session")
def tiny_dynamic_bundle(tmp_path_factory) -> Path:
    """A tiny fp32 bundle with a dynamic batch dim (1..8), shared by the infer and deploy tests."""
    from edgeseg.bundle.build import BuildOptions, build_bundle
    from edgeseg.train.loop import TrainConfig, train

    root = tmp_path_factory.mktemp("tiny-dynamic")
    ckpt = train(TrainConfig(model="deeplabv3plus_mobilenet_v2", data=TINY_SPEC, width=0.35, batch_size=8, epochs=1,
                             max_train_samples=16, max_val_samples=2, workers=0, out=root / "ckpt"),
                 log=lambda s: None).best_path
    out = root / "fp32-dyn"
    build_bundle(BuildOptions(precision="fp32", out=out, checkpoint=ckpt, data=TINY_SPEC, val_limit=2, dynamic="batch"),
                 log=lambda s: None)
    return out
