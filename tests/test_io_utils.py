"""What edgeseg writes is readable by other users as the umask allows, durable before it is published,
and nothing is left outside a command's outputs (no temporary files, no staging folders)."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgeseg import io_utils, out_dir

SCRIPT = r"""
import os, sys
os.umask(int(sys.argv[1], 8))
from edgeseg.cli import main
work, onnx, frame = sys.argv[2:5]
for args in (["build", "--onnx", onnx, "--precision", "fp32", "--out", f"{work}/out/bundle"],
             ["deploy", f"{work}/out/bundle", "--deepstream", f"{work}/out/ds", "--triton", f"{work}/out/models"],
             ["infer", f"{work}/out/bundle", frame, "--out", f"{work}/out/infer"],
             ["calibrate", "--onnx", onnx, "--data", "synthetic:64x96", "--count", "2", "--out", f"{work}/out/calib"],
             ["train", "--model", "fcn32s_mobilenet_v2", "--data", "synthetic:64x96", "--epochs", "1",
              "--batch-size", "2", "--width", "0.35", "--workers", "0", "--max-train-samples", "2",
              "--max-val-samples", "1", "--out", f"{work}/out/run"],
             ["export", "--checkpoint", f"{work}/out/run/best.pt", "--out", f"{work}/out/export/m.onnx"]):
    try:
        main(args, standalone_mode=False)
    except SystemExit as e:
        if e.code:
            raise
"""


@pytest.mark.parametrize("umask", ["022", "077"])
def test_outputs_get_the_umask_modes_and_nothing_is_left_behind(umask: str, tiny_dynamic_bundle: Path,
                                                                 tmp_path: Path) -> None:
    frame = tmp_path / "inputs" / "frame.png"
    frame.parent.mkdir()
    Image.fromarray(np.full((40, 50, 3), 90, np.uint8)).save(frame)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    env = dict(os.environ, TMPDIR=str(tmp), HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"),
               EDGESEG_CACHE=str(tmp_path / "cache"))
    env.pop("ORT_DISABLE_TELEMETRY", None)  # edgeseg's own default must keep ONNX Runtime from writing files
    res = subprocess.run([sys.executable, "-c", SCRIPT, umask, str(tmp_path), str(tiny_dynamic_bundle / "model.onnx"),
                          str(frame)], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    mask = int(umask, 8)
    want = {"file": 0o666 & ~mask, "dir": 0o777 & ~mask}
    seen = {"file": 0, "dir": 0}
    out = tmp_path / "out"
    for path in [out, *out.rglob("*")]:
        kind = "dir" if path.is_dir() else "file"
        seen[kind] += 1
        assert stat.S_IMODE(path.stat().st_mode) == want[kind], f"{path}: {oct(stat.S_IMODE(path.stat().st_mode))}"
    assert seen["file"] > 15 and seen["dir"] >= 8
    assert not list(tmp.iterdir()), f"left in TMPDIR: {list(tmp.iterdir())}"
    assert not (home / ".cache" / "Microsoft").exists(), "ONNX Runtime telemetry files under HOME"
    hidden = [p for p in out.rglob(".*")]
    assert not hidden, f"temporary or staging files left: {hidden}"
    assert sorted(p.name for p in out.iterdir()) == ["bundle", "calib", "ds", "export", "infer", "models", "run"]


def test_atomic_write_fsyncs_the_file_before_the_rename_and_the_folder_after(tmp_path: Path, monkeypatch) -> None:
    events: list[tuple[str, str]] = []
    real_fsync, real_replace, real_open = os.fsync, os.replace, os.open
    fds: dict[int, str] = {}

    def spy_open(path, flags, *args, **kwargs):
        fd = real_open(path, flags, *args, **kwargs)
        fds[fd] = Path(path).name
        return fd

    def spy_fsync(fd):
        events.append(("fsync", fds.get(fd, "?")))
        return real_fsync(fd)

    def spy_replace(a, b):
        events.append(("rename", Path(b).name))
        return real_replace(a, b)

    monkeypatch.setattr(os, "open", spy_open)
    monkeypatch.setattr(os, "fsync", spy_fsync)
    monkeypatch.setattr(os, "replace", spy_replace)
    io_utils.atomic_write_text(tmp_path / "model.json", "{}")
    assert [e[0] for e in events] == ["fsync", "rename", "fsync"]
    assert events[0][1].startswith(".model.json.") and events[1][1] == "model.json" and events[2][1] == tmp_path.name


def test_a_published_folder_is_synced_before_the_swap(tmp_path: Path, monkeypatch) -> None:
    order: list[str] = []
    real_tree, real_exchange = out_dir.fsync_tree, out_dir._exchange
    monkeypatch.setattr(out_dir, "fsync_tree", lambda root: (order.append("fsync_tree"), real_tree(root))[1])
    monkeypatch.setattr(out_dir, "_exchange", lambda a, b: (order.append("exchange"), real_exchange(a, b))[1])
    target = tmp_path / "bundle"
    target.mkdir()
    (target / "old").write_text("old")
    with out_dir.staging_dir(target) as stage:
        (stage / "new").write_text("new")
    assert order == ["fsync_tree", "exchange"]
    assert sorted(p.name for p in target.iterdir()) == ["new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]
