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
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(no_gpu)
        if "tensorrt" in item.keywords and not (has_trt and has_gpu):
            item.add_marker(no_trt)
