"""Output folders: what each folder-writing command may replace, --overwrite, parents, leftovers of killed runs."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeseg.cli import main
from edgeseg.errors import EdgesegError
from edgeseg.out_dir import (
    OLD,
    STAGING,
    _new_locked_stage,
    check_out_dir,
    clean_leftovers,
    contained_path,
    only_names,
    staging_dir,
)

TINY_SPEC = "synthetic:64x96"


def _run(*args) -> tuple[int, str]:
    res = CliRunner().invoke(main, [str(a) for a in args])
    return res.exit_code, res.output


def _refused(code: int, output: str, victim: Path) -> None:
    assert code == 2, output
    assert "Traceback" not in output and len(output.strip().splitlines()) == 1, output
    assert str(victim) in output and "--overwrite" in output, output


def _user_folder(root: Path) -> tuple[Path, Path]:
    """A folder a user cares about: a training run with an extra file."""
    root.mkdir(parents=True)
    (root / "last.pt").write_bytes(b"my weights")
    return root, root / "last.pt"


def test_rule_accepts_missing_empty_and_own_folders(tmp_path: Path) -> None:
    own = lambda out: only_names(out, ["a.txt"])  # noqa: E731
    assert check_out_dir(tmp_path / "new", own, "thing") == tmp_path / "new"
    (tmp_path / "empty").mkdir()
    check_out_dir(tmp_path / "empty", own, "thing")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "a.txt").write_text("x")
    check_out_dir(tmp_path / "mine", own, "thing")
    (tmp_path / "mine" / "b.txt").write_text("y")
    with pytest.raises(EdgesegError, match="b.txt is a file that is not part of an thing"):
        check_out_dir(tmp_path / "mine", own, "thing")
    check_out_dir(tmp_path / "mine", own, "thing", overwrite=True)
    (tmp_path / "file").write_text("z")
    with pytest.raises(EdgesegError, match="is a file"):
        check_out_dir(tmp_path / "file", own, "thing")


def test_build_refuses_a_folder_that_is_not_a_bundle(tiny_dynamic_bundle: Path, tmp_path: Path) -> None:
    onnx = tiny_dynamic_bundle / "model.onnx"
    runs, last = _user_folder(tmp_path / "runs")
    code, out = _run("build", "--onnx", onnx, "--precision", "fp32", "--out", runs)
    _refused(code, out, last)
    assert last.read_bytes() == b"my weights" and sorted(p.name for p in runs.iterdir()) == ["last.pt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "nothing left beside it"
    # a missing parent chain is created; an earlier bundle is replaced; --overwrite replaces the user folder
    deep = tmp_path / "a" / "b" / "c"
    assert _run("build", "--onnx", onnx, "--precision", "fp32", "--out", deep)[0] == 0
    assert _run("build", "--onnx", onnx, "--precision", "fp32", "--out", deep)[0] == 0
    (deep / "notes.txt").write_text("mine")
    _refused(*_run("build", "--onnx", onnx, "--precision", "fp32", "--out", deep), deep / "notes.txt")
    assert _run("build", "--onnx", onnx, "--precision", "fp32", "--out", runs, "--overwrite")[0] == 0
    assert not last.exists() and (runs / "manifest.json").is_file()


def test_infer_refuses_foreign_files_and_replaces_its_own_output(tiny_dynamic_bundle: Path, tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        Image.fromarray(np.full((40, 50, 3), 60 * i, np.uint8)).save(images / f"im{i}.png")
    photos, keep = _user_folder(tmp_path / "photos")
    _refused(*_run("infer", tiny_dynamic_bundle, images, "--out", photos), keep)
    assert keep.read_bytes() == b"my weights"
    out = tmp_path / "x" / "y" / "out"
    assert _run("infer", tiny_dynamic_bundle, images, "--out", out)[0] == 0  # parents created
    assert (out / "labels" / "im1.png").is_file() and (out / "edgeseg-infer.json").is_file()
    (images / "im1.png").unlink()
    assert _run("infer", tiny_dynamic_bundle, images, "--out", out)[0] == 0  # its own output: replaced
    assert sorted(p.name for p in (out / "labels").iterdir()) == ["im0.png"], "stale outputs are removed"
    (out / "labels" / "mine.txt").write_text("x")
    (out / "notes.txt").write_text("x")
    _refused(*_run("infer", tiny_dynamic_bundle, images, "--out", out), out / "notes.txt")
    assert _run("infer", tiny_dynamic_bundle, images, "--out", photos, "--overwrite")[0] == 0
    assert not keep.exists()


def test_deploy_refuses_foreign_files_and_replaces_its_own_output(tiny_dynamic_bundle: Path, tmp_path: Path) -> None:
    ds, keep = _user_folder(tmp_path / "ds")
    _refused(*_run("deploy", tiny_dynamic_bundle, "--deepstream", ds), keep)
    repo = tmp_path / "models"
    (repo / "m").mkdir(parents=True)
    (repo / "m" / "config.pbtxt").write_text('name: "m"\n')  # a hand-written Triton model of the same name
    _refused(*_run("deploy", tiny_dynamic_bundle, "--triton", repo, "--model-name", "m"), repo / "m" / "config.pbtxt")
    assert (repo / "m" / "config.pbtxt").read_text() == 'name: "m"\n'
    fresh = tmp_path / "p" / "q" / "ds"
    assert _run("deploy", tiny_dynamic_bundle, "--deepstream", fresh, "--triton", repo / "r")[0] == 0
    (fresh / "model.ds.onnx_b4_gpu0_fp32.engine").write_bytes(b"stale engine nvinfer saved")  # from the device
    assert _run("deploy", tiny_dynamic_bundle, "--deepstream", fresh, "--triton", repo / "r")[0] == 0
    assert not (fresh / "model.ds.onnx_b4_gpu0_fp32.engine").exists(), "a stale engine would load the old model"
    (fresh / "deepstream_app.txt").write_text("the user's app config")
    _refused(*_run("deploy", tiny_dynamic_bundle, "--deepstream", fresh), fresh / "deepstream_app.txt")
    assert _run("deploy", tiny_dynamic_bundle, "--deepstream", ds, "--overwrite")[0] == 0 and not keep.exists()


def test_train_refuses_foreign_files_and_replaces_an_earlier_run(tmp_path: Path) -> None:
    args = ["train", "--model", "fcn32s_mobilenet_v2", "--data", TINY_SPEC, "--epochs", "1", "--batch-size", "2",
            "--width", "0.35", "--workers", "0", "--max-train-samples", "2", "--max-val-samples", "1"]
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "last.pt").write_bytes(b"another framework's checkpoint")
    _refused(*_run(*args, "--out", runs), runs / "last.pt")
    assert (runs / "last.pt").read_bytes() == b"another framework's checkpoint"
    out = tmp_path / "a" / "b"
    assert _run(*args, "--out", out)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "last.pt"]
    assert _run(*args, "--out", out)[0] == 0  # an earlier run: replaced
    (out / "notes.txt").write_text("x")
    _refused(*_run(*args, "--out", out), out / "notes.txt")
    assert _run(*args, "--out", runs, "--overwrite")[0] == 0
    assert (runs / "last.pt").read_bytes() != b"another framework's checkpoint"


def test_calibrate_refuses_to_replace_a_foreign_file(tiny_dynamic_bundle: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("EDGESEG_CACHE", str(tmp_path / "cache"))
    onnx = tiny_dynamic_bundle / "model.onnx"
    target = tmp_path / "notes.json"
    target.write_text('{"mine": true}')
    args = ["calibrate", "--onnx", onnx, "--data", TINY_SPEC, "--count", "2"]
    code, out = _run(*args, "--out", target)
    assert code == 2 and str(target) in out and "--overwrite" in out and len(out.strip().splitlines()) == 1, out
    assert target.read_text() == '{"mine": true}'
    assert _run(*args, "--out", tmp_path / "c" / "d" / "set.json")[0] == 0  # parents created
    assert _run(*args, "--out", tmp_path / "c" / "d" / "set.json")[0] == 0  # its own manifest: replaced
    assert _run(*args, "--out", tmp_path / "e" / "f")[0] == 0 and len(list((tmp_path / "e" / "f").iterdir())) == 1
    code, out = _run(*args, "--out", target / "sub")
    assert code == 2 and "is a file" in out and len(out.strip().splitlines()) == 1, out
    assert _run(*args, "--out", target, "--overwrite")[0] == 0 and '"edgeseg.calibration"' in target.read_text()


def test_leftover_staging_folders_are_cleaned_but_not_a_live_one(tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    dead = tmp_path / f".bundle.{STAGING}dead"
    dead.mkdir()
    (dead / "model.onnx").write_bytes(b"half")
    live, fd = _new_locked_stage(out)  # another run's, still writing: holds the lock
    try:
        assert clean_leftovers(out) == [dead]
        assert live.is_dir() and not dead.exists()
    finally:
        os.close(fd)
    assert clean_leftovers(out) == [live]


def test_a_folder_moved_aside_by_the_two_rename_fallback_comes_back(tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    aside = tmp_path / f".bundle.{OLD}1234"
    aside.mkdir()
    (aside / "manifest.json").write_text("{}")
    clean_leftovers(out)  # killed between `out -> aside` and `stage -> out`: out is missing
    assert (out / "manifest.json").is_file() and not aside.exists()


def test_staging_replaces_only_on_success(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b"
    with staging_dir(out) as stage:
        (stage / "x").write_text("1")
    with pytest.raises(RuntimeError):
        with staging_dir(out) as stage:
            (stage / "x").write_text("2")
            raise RuntimeError("build failed")
    assert (out / "x").read_text() == "1"
    assert sorted(p.name for p in out.parent.iterdir()) == ["b"], "no staging folder left"


@pytest.mark.parametrize("relative", ["../outside.png", "/etc/passwd", "a/../../b.png", "", "a//b.png", "./a.png",
                                      "a\\..\\b.png"])
def test_contained_path_refuses_escapes(tmp_path: Path, relative: str) -> None:
    with pytest.raises(EdgesegError, match="manifest may only name files inside its folder"):
        contained_path(tmp_path, relative, "image path")


def test_contained_path_refuses_a_symlink_leading_out(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (tmp_path / "secret.png").write_bytes(b"x")
    (root / "sub" / "link.png").symlink_to(tmp_path / "secret.png")
    (root / "sub" / "ok.png").write_bytes(b"y")
    assert contained_path(root, "sub/ok.png", "image path") == root / "sub" / "ok.png"
    with pytest.raises(EdgesegError, match="outside"):
        contained_path(root, "sub/link.png", "image path")
