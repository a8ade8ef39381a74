"""A build killed with SIGKILL half-way leaves the previous bundle intact and verifiable; the next run
cleans the staging folder it left."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from edgeseg.bundle.manifest import read_bundle, verify_bundle
from edgeseg.out_dir import STAGING

SPEC = "synthetic:64x96"


def _build(onnx: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "edgeseg", "build", "--onnx", str(onnx), "--out", str(out), *extra]


def test_sigkill_mid_build_keeps_the_previous_bundle(tiny_dynamic_bundle: Path, tmp_path: Path) -> None:
    onnx = tiny_dynamic_bundle / "model.onnx"
    out = tmp_path / "bundle"
    subprocess.run(_build(onnx, out, "--precision", "fp32"), check=True, capture_output=True, timeout=300)
    before = json.loads((out / "manifest.json").read_text())

    # an INT8 build into the same folder, killed once its staging folder holds the exported model
    proc = subprocess.Popen(_build(onnx, out, "--precision", "int8", "--data", SPEC, "--calib-count", "8"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    staged = None
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            stages = [p for p in tmp_path.iterdir() if p.name.startswith(f".bundle.{STAGING}")]
            if stages and (stages[0] / "model.onnx").is_file():
                staged = stages[0]
                break
            time.sleep(0.02)
        assert staged is not None, "the build finished or failed before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert staged.is_dir(), "the kill landed mid-build: its staging folder is still there"

    bundle = read_bundle(out)
    verify_bundle(bundle)  # intact and verifiable
    assert bundle.manifest == before

    res = subprocess.run(_build(onnx, out, "--precision", "fp32"), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    verify_bundle(read_bundle(out))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"], "the killed run's staging folder was cleaned"
