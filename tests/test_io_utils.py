"""What edgeseg writes is readable by other users as the umask allows, durable before it is published,
and nothing is left outside a command's outputs (no temporary files, no staging folders)."""
from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgeseg import io_utils, out_dir
from edgeseg.errors import EdgesegError

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


@pytest.fixture
def fifo(tmp_path: Path):
    """A named pipe. Should a reader block on it (the bug these tests pin), a writer opens it after 5 s so the
    reader returns and the test fails instead of hanging; at teardown a non-blocking reader frees that writer."""
    import threading

    path = tmp_path / "pipe.bin"
    os.mkfifo(path)
    writer = threading.Timer(5.0, lambda: os.close(os.open(path, os.O_WRONLY)))
    writer.daemon = True
    writer.start()
    yield path
    writer.cancel()
    if writer.is_alive():  # the writer is waiting for a reader: give it one
        os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
    writer.join(timeout=1)


def test_require_file_accepts_regular_files_and_links_to_them(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "link.txt").symlink_to(tmp_path / "a.txt")
    assert io_utils.require_file(tmp_path / "link.txt") == tmp_path / "link.txt"


def test_require_file_refuses_what_is_not_a_regular_file_in_one_line(tmp_path: Path, fifo: Path) -> None:
    import socket

    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "s.sock"))
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    for path, said in [(fifo, "is a named pipe (FIFO)"), (Path("/dev/null"), "is a character device"),
                       (tmp_path / "s.sock", "is a socket"), (tmp_path, "is a folder: expected a file"),
                       (tmp_path / "nowhere", "does not exist"), (tmp_path / "dangling", "does not exist")]:
        with pytest.raises(EdgesegError) as info:
            io_utils.require_file(path, "checkpoint", "pass the file train wrote")
        assert str(info.value).startswith(f"checkpoint {path} {said}") and "\n" not in str(info.value)
        assert str(info.value).endswith("; pass the file train wrote")
    sock.close()


def test_sha256_of_a_fifo_is_refused_instead_of_waiting_for_a_writer(fifo: Path) -> None:
    with pytest.raises(EdgesegError, match="is a named pipe"):
        io_utils.sha256_file(fifo)


@pytest.mark.parametrize(("code", "said"), [(errno.ENOSPC, "No space left on device (ENOSPC); free space"),
                                            (errno.EDQUOT, "(EDQUOT); your disk quota is used up"),
                                            (errno.EROFS, "(EROFS); the file system is mounted read-only"),
                                            (errno.EACCES, "(EACCES); you lack the permission")])
def test_a_failed_write_is_one_line_naming_the_target_and_leaves_nothing(code: int, said: str, tmp_path: Path) -> None:
    target = tmp_path / "model.onnx"
    with pytest.raises(EdgesegError) as info:
        with io_utils.atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise OSError(code, os.strerror(code))
    assert str(info.value).startswith(f"cannot write {target}: ") and said in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_an_os_error_that_is_not_the_users_keeps_its_traceback(tmp_path: Path) -> None:
    with pytest.raises(OSError) as info:
        with io_utils.atomic_path(tmp_path / "x.bin"):
            raise OSError(errno.EIO, "Input/output error")
    assert not isinstance(info.value, EdgesegError) and info.value.errno == errno.EIO


def test_a_checkpoint_that_does_not_fit_says_so_in_one_line(tmp_path: Path, monkeypatch) -> None:
    """torch.save on a full disk raises an unnamed RuntimeError ("unexpected pos ..."); the checkpoint is written
    as bytes, so a full disk is named."""
    import torch

    from edgeseg.data.preprocess import Preprocessing
    from edgeseg.models.checkpoint import Checkpoint, save_checkpoint
    from edgeseg.models.registry import ModelConfig

    real_write = Path.write_bytes

    def full_disk(self, data):
        real_write(self, bytes(data)[:10])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    ckpt = Checkpoint(ModelConfig(name="fcn32s_mobilenet_v2", num_classes=2), {"w": torch.zeros(3)}, ["a", "b"],
                      [[0, 0, 0], [1, 1, 1]], Preprocessing())
    with pytest.raises(EdgesegError, match=r"cannot write .*best\.pt: No space left on device \(ENOSPC\)"):
        save_checkpoint(tmp_path / "best.pt", ckpt)
    assert list(tmp_path.iterdir()) == []
