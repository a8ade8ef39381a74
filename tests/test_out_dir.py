"""Output folders: what each folder-writing command may replace, --overwrite, parents, leftovers of killed runs."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeseg.cli import main
from edgeseg.errors import EdgesegError
from edgeseg.out_dir import (
    OLD,
    STAGING,
    _new_locked_stage,
    check_inputs_outside,
    check_out_dir,
    check_out_file,
    clean_leftovers,
    contained_path,
    only_names,
    scratch_dir,
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
    _refused(*_run("infer", tiny_dynamic_bundle, images, "--out", out), out / "labels" / "mine.txt")
    (out / "labels" / "mine.txt").unlink()
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


# ----------------------------------------------------------------------------- issue 21: files, inputs, order

def test_file_rule_replaces_only_its_own_kind(tmp_path: Path) -> None:
    own = lambda p: p.read_bytes() == b"ours"  # noqa: E731
    assert check_out_file(tmp_path / "a" / "new.onnx", own, "a thing") == tmp_path / "a" / "new.onnx"
    mine = tmp_path / "mine.onnx"
    mine.write_bytes(b"ours")
    check_out_file(mine, own, "a thing")
    theirs = tmp_path / "theirs.onnx"
    theirs.write_bytes(b"user data")
    with pytest.raises(EdgesegError, match=re.escape(f"{theirs} is a file that is not a thing") + ".*--overwrite"):
        check_out_file(theirs, own, "a thing")
    check_out_file(theirs, own, "a thing", overwrite=True)
    fifo = tmp_path / "fifo.onnx"
    os.mkfifo(fifo)  # never opened: asking own() would hang
    with pytest.raises(EdgesegError, match="special file"):
        check_out_file(fifo, lambda p: pytest.fail("own() asked of a FIFO"), "a thing")
    link = tmp_path / "link.onnx"
    link.symlink_to(mine)
    with pytest.raises(EdgesegError, match="symbolic link"):
        check_out_file(link, own, "a thing")
    with pytest.raises(EdgesegError, match="is a folder"):
        check_out_file(tmp_path, own, "a thing", overwrite=True)
    with pytest.raises(EdgesegError, match="is a file"):
        check_out_file(theirs / "sub.onnx", own, "a thing", overwrite=True)


def test_an_input_is_never_inside_what_is_replaced(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "images").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "link").symlink_to(out / "images")
    check_inputs_outside(out, {"--onnx": tmp_path / "model.onnx", "--data": None})
    for inp, word in ((out, "is"), (out / "images", "lies inside"), (tmp_path / "elsewhere" / "link", "lies inside"),
                      (tmp_path / "out" / ".." / "out" / "x.png", "lies inside")):
        message = f"input {inp} {word} --out {out}, which this command replaces"
        with pytest.raises(EdgesegError, match=re.escape(message)):
            check_inputs_outside(out, {"input": inp})


def test_scratch_folder_is_removed_and_cleaned_after_a_kill(tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    with scratch_dir(out) as scratch:
        (scratch / "best.pt").write_bytes(b"x")
        assert clean_leftovers(out) == [], "a live run's scratch folder is left alone"
    assert list(tmp_path.iterdir()) == []


def test_infer_never_deletes_its_own_input(tiny_dynamic_bundle: Path, tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    out = tmp_path / "out"
    (out / "images").mkdir(parents=True)
    Image.fromarray(np.full((40, 50, 3), 60, np.uint8)).save(out / "images" / "a.png")
    for source, flags in ((out / "images", ["--overwrite"]), (out, ["--overwrite"])):
        code, text = _run("infer", tiny_dynamic_bundle, source, "--out", out, *flags)
        assert code == 2 and f"input {source}" in text and "which this command replaces" in text, text
        assert len(text.strip().splitlines()) == 1 and (out / "images" / "a.png").is_file()
    earlier = tmp_path / "earlier"  # an earlier infer output, its labels taken as the next input
    assert _run("infer", tiny_dynamic_bundle, out / "images", "--out", earlier)[0] == 0
    code, text = _run("infer", tiny_dynamic_bundle, earlier / "labels", "--out", earlier)
    assert code == 2 and "lies inside --out" in text and (earlier / "labels" / "a.png").is_file(), text
    bundle_copy = tmp_path / "b" / "bundle"
    shutil.copytree(tiny_dynamic_bundle, bundle_copy)
    code, text = _run("infer", bundle_copy, out / "images", "--out", tmp_path / "b", "--overwrite")
    assert code == 2 and f"bundle {bundle_copy} lies inside" in text and (bundle_copy / "manifest.json").is_file()


def test_infer_replaces_only_the_frames_its_marker_lists(tiny_dynamic_bundle: Path, tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.full((40, 50, 3), 60, np.uint8)).save(images / "a.png")
    out = tmp_path / "out"
    assert _run("infer", tiny_dynamic_bundle, images, "--out", out)[0] == 0
    (out / "masks" / "holiday.png").write_bytes(b"a user's picture")  # a PNG, but not one the run wrote
    _refused(*_run("infer", tiny_dynamic_bundle, images, "--out", out), out / "masks" / "holiday.png")
    (out / "masks" / "holiday.png").unlink()
    (out / "labels" / "sub").mkdir()
    _refused(*_run("infer", tiny_dynamic_bundle, images, "--out", out), out / "labels" / "sub")


def test_infer_refuses_two_frames_with_one_output_name(tiny_dynamic_bundle: Path, tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    for name, value in (("a.png", 10), ("a.jpg", 200), ("a_png.png", 100)):  # a.png -> a_png, like a_png.png
        Image.fromarray(np.full((40, 50, 3), value, np.uint8)).save(images / name)
    code, text = _run("infer", tiny_dynamic_bundle, images, "--out", tmp_path / "out")
    assert code == 2 and len(text.strip().splitlines()) == 1, text
    assert "maps to the output labels/a_png.png" in text and "rename one of the inputs" in text, text


def test_train_checks_every_argument_before_emptying_an_earlier_run(tmp_path: Path) -> None:
    args = ["train", "--model", "fcn32s_mobilenet_v2", "--data", TINY_SPEC, "--width", "0.35", "--workers", "0",
            "--max-train-samples", "2", "--max-val-samples", "1"]
    out = tmp_path / "run"
    assert _run(*args, "--epochs", "1", "--batch-size", "2", "--out", out)[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    for bad, message in ((["--epochs", "1", "--batch-size", "1"], "--batch-size must be >= 2"),
                         (["--epochs", "1", "--batch-size", "2", "--val-split", "nope"], "unknown split"),
                         (["--epochs", "0", "--batch-size", "2"], "--epochs must be >= 1"),
                         (["--epochs", "1", "--batch-size", "2", "--init", out / "best.pt"], "lies inside --out"),
                         (["--epochs", "1", "--batch-size", "2", "--resume"], "nothing left to train")):
        code, text = _run(*args, *bad, "--out", out)
        assert code == 2 and message in text and len(text.strip().splitlines()) == 1, (bad, text)
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before, bad
    code, text = _run(*args, "--epochs", "0", "--batch-size", "2", "--out", tmp_path / "new")
    assert code == 2 and not (tmp_path / "new").exists(), "no best.pt reported, no folder made"


def test_export_and_quantize_replace_only_their_own_files(tiny_dynamic_bundle: Path, tmp_path: Path) -> None:
    onnx = tiny_dynamic_bundle / "model.onnx"
    ckpt = tiny_dynamic_bundle / "checkpoint.pt"
    notes = tmp_path / "notes.onnx"
    notes.write_text("my notes")
    export = ["export", "--checkpoint", ckpt, "--input-size", "32x48"]
    quantize = ["quantize", "--onnx", onnx, "--precision", "fp16"]
    for args in (export, quantize):
        code, text = _run(*args, "--out", notes)
        assert code == 2 and f"--out {notes} is a file that is not" in text and "--overwrite" in text, text
        assert notes.read_text() == "my notes"
    fp32, fp16 = tmp_path / "m.onnx", tmp_path / "m.fp16.onnx"
    for args, out in ((export, fp32), (export, fp32), (quantize, fp16), (quantize, fp16)):  # new, then replaced
        code, text = _run(*args, "--out", out)
        assert code == 0, text
    for args, out in ((export, fp16), (quantize, fp32)):  # the other command's output is not its own
        code, text = _run(*args, "--out", out)
        assert code == 2 and "--overwrite" in text, text
    code, text = _run("quantize", "--onnx", fp32, "--precision", "fp16", "--out", fp32, "--overwrite")
    assert code == 2 and f"--onnx {fp32} is --out {fp32}" in text, text
    copy = tmp_path / "ck.pt"
    shutil.copyfile(ckpt, copy)
    code, text = _run("export", "--checkpoint", copy, "--out", copy, "--overwrite")
    assert code == 2 and f"--checkpoint {copy} is --out" in text and copy.read_bytes() == ckpt.read_bytes(), text
    fifo = tmp_path / "fifo.onnx"
    os.mkfifo(fifo)
    code, text = _run(*quantize, "--out", fifo)
    assert code == 2 and "special file" in text, text
    assert _run(*quantize, "--out", notes, "--overwrite")[0] == 0


def test_the_demo_build_checks_first_and_leaves_nothing_beside_its_bundle(tmp_path: Path, monkeypatch) -> None:
    import edgeseg.cli.build as build_cli

    monkeypatch.setattr(build_cli, "DEMO_DATA", TINY_SPEC)
    monkeypatch.setattr(build_cli, "DEMO_MODEL", dict(model="fcn32s_mobilenet_v2", width=0.35, epochs=1, batch_size=2,
                                                      max_train_samples=2, max_val_samples=1))
    out = tmp_path / "demo" / "fp32"
    code, text = _run("build", "--precision", "fp32", "--backend", "ort", "--val-limit", "0", "--out", out)
    assert code == 2 and "--val-limit must be >= 1" in text and "training" not in text, text
    assert _run("build", "--precision", "fp32", "--backend", "ort", "--out", out)[0] == 0
    assert [p.name for p in out.parent.iterdir()] == ["fp32"], "no quick-model/ or scratch folder beside it"
    assert "checkpoint.pt" in {p.name for p in out.iterdir()}
