"""A user's disk or path that cannot take what a command does is one line and exit code 2, never a traceback or
a hang: a full disk (ENOSPC), a read-only output folder, a FIFO where a file should be, standard output on a
full device, a size above the frame limit. Full and read-only disks are real tmpfs mounts (skipped where this
user cannot mount); the other cases run anywhere."""
from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from edgeseg.cli import main
from edgeseg.cli.options import parse_size

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 60  # a command that waits on a FIFO fails the test instead of hanging the suite


def _one_line_exit_2(code: int, stderr: str, said: str) -> None:
    assert code == 2, stderr[-3000:]
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr[-3000:]
    assert stderr.startswith("error: ") and said in stderr, stderr


def _edgeseg(*args: str, stdout=subprocess.PIPE, limit_memory: bool = False) -> subprocess.CompletedProcess:
    def cap_memory() -> None:  # 8 GB of address space: a size that would allocate 120 GB fails fast instead
        resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))

    return subprocess.run([sys.executable, "-m", "edgeseg", *args], stdout=stdout, stderr=subprocess.PIPE, text=True,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=TIMEOUT_S,
                          preexec_fn=cap_memory if limit_memory else None)


@pytest.fixture
def tmpfs(tmp_path: Path):
    """mount(options) -> a fresh tmpfs folder mounted with those options (e.g. "size=64k", "ro")."""
    mounted: list[Path] = []

    def mount(options: str) -> Path:
        folder = tmp_path / f"mnt{len(mounted)}"
        folder.mkdir()
        try:
            done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True,
                                  text=True)
        except FileNotFoundError:
            pytest.skip("no mount command here")
        if done.returncode:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:  # lazily when a failed command's traceback still holds a file open there
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(folder)], check=False)


def _frame(path: Path) -> Path:
    noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)  # ~200 KB as PNG
    Image.fromarray(noise).save(path)
    return path


def _writers(bundle: Path, out: Path, frame: Path) -> dict[str, list[str]]:
    """Every kind of writer: an atomic file (export), a staged bundle (build), an infer folder, checkpoints (train)."""
    return {
        "export": ["export", "--checkpoint", str(bundle / "checkpoint.pt"), "--out", str(out / "m.onnx")],
        "build": ["build", "--onnx", str(bundle / "model.onnx"), "--precision", "fp32", "--out", str(out / "b")],
        "infer": ["infer", str(bundle), str(frame), "--out", str(out / "o")],
        "train": ["train", "--model", "fcn32s_mobilenet_v2", "--data", "synthetic:64x96", "--epochs", "1",
                  "--batch-size", "2", "--width", "0.35", "--workers", "0", "--max-train-samples", "2",
                  "--max-val-samples", "1", "--out", str(out / "run")],
    }


@pytest.mark.parametrize("command", ["export", "build", "infer", "train"])
def test_a_full_disk_is_one_line(command: str, tiny_dynamic_bundle: Path, tmpfs, tmp_path: Path) -> None:
    full = tmpfs("size=64k")
    args = _writers(tiny_dynamic_bundle, full, _frame(tmp_path / "frame.png"))[command]
    res = CliRunner().invoke(main, args)
    _one_line_exit_2(res.exit_code, res.stderr, "No space left on device (ENOSPC); free space on that disk")
    assert f"cannot write {full}" in res.stderr


@pytest.mark.parametrize("command", ["export", "build", "infer", "train"])
def test_a_read_only_output_folder_is_one_line(command: str, tiny_dynamic_bundle: Path, tmpfs,
                                               tmp_path: Path) -> None:
    read_only = tmpfs("ro,size=64k")
    args = _writers(tiny_dynamic_bundle, read_only, _frame(tmp_path / "frame.png"))[command]
    res = CliRunner().invoke(main, args)
    _one_line_exit_2(res.exit_code, res.stderr, "Read-only file system")
    assert str(read_only) in res.stderr


def _fifo_cases(bundle: Path, tmp: Path) -> dict[str, list[str]]:
    fifo = tmp / "pipe.png"
    os.mkfifo(fifo)
    for kind in ("images", "masks"):
        (tmp / "ds" / kind).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp / "ds" / kind / "a.png")
        os.mkfifo(tmp / "ds" / kind / "b.png")
    return {
        "checkpoint": ["export", "--checkpoint", str(fifo), "--out", str(tmp / "m.onnx")],
        "onnx": ["build", "--onnx", str(fifo), "--precision", "fp32", "--out", str(tmp / "b")],
        "calibration manifest": ["quantize", "--onnx", str(bundle / "model.onnx"), "--precision", "int8",
                                 "--calib", str(fifo), "--out", str(tmp / "q.onnx")],
        "calibration image": ["calibrate", "--onnx", str(bundle / "model.onnx"), "--data",
                              f"images:{tmp / 'ds' / 'images'}", "--count", "2", "--out", str(tmp / "c.json")],
        "dataset mask": ["eval", "--checkpoint", str(bundle / "checkpoint.pt"), "--data", f"folder:{tmp / 'ds'}",
                         "--split", "train"],
        "infer input": ["infer", str(bundle), str(fifo), "--out", str(tmp / "o")],
    }


@pytest.mark.parametrize("case", ["checkpoint", "onnx", "calibration manifest", "calibration image", "dataset mask",
                                  "infer input"])
def test_a_fifo_where_a_file_should_be_is_refused_without_waiting(case: str, tiny_dynamic_bundle: Path,
                                                                  tmp_path: Path) -> None:
    res = _edgeseg(*_fifo_cases(tiny_dynamic_bundle, tmp_path)[case])
    _one_line_exit_2(res.returncode, res.stderr, "is a named pipe")


def test_standard_output_on_a_full_device_is_one_line(tiny_dynamic_bundle: Path) -> None:
    with open("/dev/full", "w") as full:
        res = _edgeseg("info", str(tiny_dynamic_bundle), stdout=full)
    _one_line_exit_2(res.returncode, res.stderr, "No space left on device (ENOSPC)")


def test_a_size_above_the_frame_limit_is_refused_before_allocating() -> None:
    res = _edgeseg("models", "--filter", "fcn32s_mobilenet_v2", "--input-size", "100000x100000", limit_memory=True)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-3000:]
    assert "expected at most 64 megapixels (e.g. 8000x8000), edgeseg's frame limit" in res.stderr.splitlines()[-1]


def test_every_size_option_has_the_frame_limit() -> None:
    assert parse_size("8000x8000") == (8000, 8000) and parse_size("1x64000000") == (1, 64_000_000)
    for value in ("8001x8000", "1x64000001", "100000x100000"):
        with pytest.raises(click.BadParameter, match="expected at most 64 megapixels"):
            parse_size(value)


def test_a_synthetic_size_above_the_frame_limit_is_one_line(tiny_dynamic_bundle: Path, tmp_path: Path) -> None:
    res = _edgeseg("calibrate", "--onnx", str(tiny_dynamic_bundle / "model.onnx"), "--data", "synthetic:100000x100000",
                   "--count", "2", "--out", str(tmp_path / "c.json"), limit_memory=True)
    _one_line_exit_2(res.returncode, res.stderr, "the synthetic size is 100000x100000 pixels (HxW), 10000 megapixels")
