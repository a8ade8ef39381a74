"""Fixtures of the model tests."""
from __future__ import annotations

from pathlib import Path

import pytest

from _helpers import block_network


@pytest.fixture
def offline(monkeypatch, tmp_path: Path) -> Path:
    """No network (any connection attempt raises) and empty torch / Hugging Face caches under tmp_path."""
    block_network(monkeypatch)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    import huggingface_hub.constants as hf

    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path
