"""Hostile and broken bundle manifests: every path contained, every role hashed, refused in one line."""
from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeseg.bundle.manifest import read_bundle, verify_bundle
from edgeseg.cli import main
from edgeseg.errors import EdgesegError


def _copy(bundle: Path, tmp_path: Path) -> Path:
    out = tmp_path / "bundle"
    shutil.copytree(bundle, out)
    return out


def _edit(root: Path, change: Callable[[dict], None]) -> None:
    path = root / "manifest.json"
    m = json.loads(path.read_text())
    change(m)
    path.write_text(json.dumps(m))


def _outside_copy(root: Path) -> None:
    """model.onnx becomes a symlink to an identical file outside the bundle: same sha256, only containment catches it."""
    outside = root.parent / "outside.onnx"
    shutil.copyfile(root / "model.onnx", outside)
    (root / "model.onnx").unlink()
    (root / "model.onnx").symlink_to(outside)


HOSTILE = {
    "role_dotdot": (lambda m: m["roles"].update(fp32="../../etc/passwd"), "roles.fp32"),
    "role_absolute": (lambda m: m["roles"].update(fp32="/etc/passwd"), "roles.fp32"),
    "role_not_in_files": (lambda m: m["roles"].update(extra="extra.onnx"), "not listed in 'files'"),
    "files_dotdot": (lambda m: m["files"].update({"../model.onnx": m["files"]["model.onnx"]}), "not a plain file name"),
    "files_subdir": (lambda m: m["files"].update({"sub/model.onnx": m["files"]["model.onnx"]}), "not a plain file name"),
    "engine_source": (lambda m: m.update(engine={"file": "model.onnx", "source": "../x.onnx"}), "engine.source"),
    "calibration_manifest": (lambda m: m.update(calibration={"manifest": "/etc/x.json"}), "calibration.manifest"),
    "bad_sha": (lambda m: m["files"]["model.onnx"].update(sha256="abc"), "64-hex"),
    "files_not_object": (lambda m: m.update(files=["model.onnx"]), "must be objects"),
    "version_text": (lambda m: m.update(version="2x"), "'version' must be an integer"),
}


def _refused_everywhere(root: Path, message: str, tmp_path: Path) -> None:
    """read_bundle, edgeseg.load, and `info`, `deploy --deepstream`, `infer` refuse ``root`` in one line
    naming ``message``, exit 2, writing nothing."""
    import numpy as np
    from PIL import Image

    import edgeseg

    with pytest.raises(EdgesegError, match=message):
        read_bundle(root)
    with pytest.raises(EdgesegError, match=message):
        edgeseg.load(root)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "frame.png")
    runner = CliRunner()
    for args in (["info", root], ["deploy", root, "--deepstream", tmp_path / "ds", "--no-verify"],
                 ["infer", root, tmp_path / "frame.png", "--out", tmp_path / "inf"]):
        res = runner.invoke(main, [str(a) for a in args])
        assert res.exit_code == 2, (args, res.output)
        assert re.search(message, res.output) and len(res.output.strip().splitlines()) == 1, res.output
    assert not (tmp_path / "ds").exists() and not (tmp_path / "inf").exists()


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_manifest_is_refused_in_one_line_everywhere(case: str, tiny_dynamic_bundle: Path,
                                                            tmp_path: Path) -> None:
    change, message = HOSTILE[case]
    root = _copy(tiny_dynamic_bundle, tmp_path)
    _edit(root, change)
    _refused_everywhere(root, message, tmp_path)


# issue 21 point 2: the manifest's meaning is held against the hashed ONNX metadata
MEANING = {
    "mean": (lambda m: m["preprocessing"].update(mean=[0.5, 0.5, 0.5]), r"'preprocessing.mean' is \[0.5, 0.5, 0.5\] "
             r"but model.onnx records \[0.485, 0.456, 0.406\]"),
    "std": (lambda m: m["preprocessing"].update(std=[1, 1, 1]), "'preprocessing.std'"),
    "channel_order": (lambda m: m["preprocessing"].update(channel_order="BGR"),
                      "'preprocessing.channel_order' is 'BGR'"),
    "scale": (lambda m: m["preprocessing"].update(scale=1.0), "'preprocessing.scale'"),
    "resize": (lambda m: m["preprocessing"].pop("resize"), "'preprocessing.resize' is 'pil_bilinear'"),
    "size": (lambda m: m["preprocessing"].update(size=[32, 48]), "'preprocessing.size'"),
    "classes": (lambda m: m["classes"].reverse(), "'classes' is"),
    "class_count": (lambda m: (m["classes"].pop(), m["palette"].pop()), "'classes' is"),
    "palette": (lambda m: m["palette"].__setitem__(2, [0, 255, 0]), "'palette' is"),
    "model": (lambda m: m.update(model="other"), "'model' is 'other'"),
    "precision": (lambda m: m.update(precision="fp16"), "'roles.fp16'"),
    "role_swap": (lambda m: m["roles"].update(fp32="checkpoint.pt", checkpoint="model.onnx"), "'roles.fp32' must be"),
    "bounds": (lambda m: m["input"]["shape_bounds"]["input"]["max"].__setitem__(0, 64), "'input.shape_bounds'"),
    "runtime_bf16": (lambda m: m["runtime"]["paths"][0].update(inference_precision="bf16"),
                     "null or 'f32' in an fp32 bundle"),
}


@pytest.mark.parametrize("case", sorted(MEANING))
def test_an_edit_of_the_manifests_meaning_is_refused_everywhere(case: str, tiny_dynamic_bundle: Path,
                                                               tmp_path: Path) -> None:
    change, message = MEANING[case]
    root = _copy(tiny_dynamic_bundle, tmp_path)
    _edit(root, change)
    _refused_everywhere(root, message + ".*the manifest was edited", tmp_path)


def _deep(m: dict) -> None:
    value: object = {}
    for _ in range(40):
        value = {"x": value}
    m["build"] = value


# issue 21 point 5: malformed manifests are one line and exit 2, never a traceback
MALFORMED = {
    "classes_text": (lambda m: m.update(classes="road"), "'classes' must be a list"),
    "class_newline": (lambda m: m["classes"].__setitem__(1, "sky\nroad"), r"'classes\[1\]' must be one line"),
    "class_number": (lambda m: m["classes"].__setitem__(1, 7), r"'classes\[1\]' must be a non-empty string"),
    "model_newline": (lambda m: m.update(model='x"\ninput [ ]'), "'model' must be null or one line"),
    "palette_short": (lambda m: m["palette"].pop(), "'palette' must be a list of one"),
    "palette_value": (lambda m: m["palette"].__setitem__(0, [0, 0, 300]), r"'palette\[0\]' must be"),
    "preprocessing_list": (lambda m: m.update(preprocessing=[1, 2]), "'preprocessing' must be an object"),
    "mean_text": (lambda m: m["preprocessing"].update(mean="0.5"), "'preprocessing.mean' must be 3 finite"),
    "std_nan": (lambda m: m["preprocessing"].update(std=[float("nan")] * 3), "'preprocessing.std' must be 3 finite"),
    "no_preprocessing": (lambda m: m.pop("preprocessing"), "'preprocessing' must be an object"),
    "no_classes": (lambda m: m.pop("classes"), "'classes' must be a list"),
    "no_precision": (lambda m: m.pop("precision"), "'precision' must be one of"),
    "no_roles": (lambda m: m.pop("roles"), "'roles' must be an object"),
    "input_text": (lambda m: m.update(input="x"), "'input' must be an object"),
    "runtime_list": (lambda m: m.update(runtime=[1]), "'runtime' must be null or an object"),
    "runtime_path": (lambda m: m["runtime"]["paths"].append("ort"), r"'runtime.paths\[2\]' must be"),
    "engine_dla": (lambda m: m.update(engine={"dla_core": "1"}), "'engine.dla_core' must be"),
    "deep": (_deep, "deeper than 32 levels"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_manifest_is_one_line_and_exit_2(case: str, tiny_dynamic_bundle: Path, tmp_path: Path) -> None:
    change, message = MALFORMED[case]
    root = _copy(tiny_dynamic_bundle, tmp_path)
    _edit(root, change)
    _refused_everywhere(root, message, tmp_path)


@pytest.mark.parametrize("raw, message", [
    (b'{"format": "edgeseg.bundle", "model": "caf\xe9"}', r"is not UTF-8 text \(byte 42\)"),
    (b'{"format": "edgeseg.bundle", ', "is not valid JSON"),
    (b"[" * 100000 + b"]" * 100000, "deeper than 32 levels"),
    (b'"just text"', "is not an edgeseg bundle manifest"),
])
def test_a_manifest_file_that_is_not_json_is_one_line_and_exit_2(raw: bytes, message: str,
                                                                 tiny_dynamic_bundle: Path, tmp_path: Path) -> None:
    root = _copy(tiny_dynamic_bundle, tmp_path)
    (root / "manifest.json").write_bytes(raw)
    _refused_everywhere(root, message, tmp_path)


def test_a_fifo_manifest_is_refused_without_blocking(tiny_dynamic_bundle: Path, tmp_path: Path) -> None:
    root = _copy(tiny_dynamic_bundle, tmp_path)
    (root / "manifest.json").unlink()
    os.mkfifo(root / "manifest.json")
    with pytest.raises(EdgesegError, match=r"is a named pipe \(FIFO\): expected a regular file"):
        read_bundle(root)


def test_a_consistent_rebuild_with_another_meaning_is_read(tiny_dynamic_bundle: Path, tmp_path: Path) -> None:
    """What a build writes, it reads: the same edit made in the manifest and the ONNX metadata (as a build
    from such a model would) is accepted."""
    from _bundles import rebuilt_copy

    def to_bgr(m: dict, _: Path) -> None:
        m["preprocessing"].update(channel_order="BGR", mean=m["preprocessing"]["mean"][::-1])

    root = rebuilt_copy(tiny_dynamic_bundle, tmp_path / "b", to_bgr)
    assert read_bundle(root).preprocessing.channel_order == "BGR"


def test_class_count_must_equal_the_models_output_channels(tiny_dynamic_bundle: Path, tmp_path: Path) -> None:
    """7 names for a model with 8 output channels, consistent in manifest and metadata: the class dim is
    symbolic in this dynamic-batch export, so the Segmenter checks the scores it gets."""
    import numpy as np

    import edgeseg
    from _bundles import rebuilt_copy

    root = rebuilt_copy(tiny_dynamic_bundle, tmp_path / "b", lambda m, _: (m["classes"].pop(), m["palette"].pop()))
    seg = edgeseg.load(root)
    with pytest.raises(EdgesegError, match=r"returned scores of shape \(1, 8, 64, 96\) for 7 classes"):
        seg(np.zeros((64, 96, 3), np.uint8))


def test_a_build_refuses_class_names_it_could_not_read_back(tiny_dynamic_bundle: Path, tmp_path: Path) -> None:
    from _bundles import rebuilt_copy

    with pytest.raises(EdgesegError, match=r"cannot write the bundle manifest: 'classes\[1\]' must be one line"):
        rebuilt_copy(tiny_dynamic_bundle, tmp_path / "b", lambda m, _: m["classes"].__setitem__(1, "sky\nroad"))


def test_symlink_leading_out_is_refused_even_with_the_right_hash(tiny_dynamic_bundle: Path, tmp_path: Path) -> None:
    root = _copy(tiny_dynamic_bundle, tmp_path)
    _outside_copy(root)
    with pytest.raises(EdgesegError, match="outside"):
        read_bundle(root)
    res = CliRunner().invoke(main, ["deploy", str(root), "--deepstream", str(tmp_path / "ds"), "--no-verify"])
    assert res.exit_code == 2 and "outside" in res.output and not (tmp_path / "ds").exists()


def test_a_symlink_inside_the_bundle_is_fine(tiny_dynamic_bundle: Path, tmp_path: Path) -> None:
    root = _copy(tiny_dynamic_bundle, tmp_path)
    (root / "model.onnx").rename(root / "real.onnx")
    (root / "model.onnx").symlink_to("real.onnx")
    _edit(root, lambda m: m["files"].update({"real.onnx": m["files"]["model.onnx"]}))
    verify_bundle(read_bundle(root))


def test_every_file_handed_out_is_hash_checked_before_use(tiny_dynamic_bundle: Path, tmp_path: Path) -> None:
    import edgeseg

    root = _copy(tiny_dynamic_bundle, tmp_path)
    for name in ("model.onnx", "checkpoint.pt"):
        data = bytearray((root / name).read_bytes())
        data[-1] ^= 1
        (root / name).write_bytes(bytes(data))
    with pytest.raises(EdgesegError, match="model.onnx changed"):
        read_bundle(root)  # its metadata is held against the manifest: hash-checked first
    shutil.copyfile(tiny_dynamic_bundle / "model.onnx", root / "model.onnx")
    bundle = read_bundle(root)  # no verify_bundle: what bench and library callers do
    with pytest.raises(EdgesegError, match="checkpoint.pt changed"):
        bundle.file("checkpoint")
    with pytest.raises(EdgesegError, match="checkpoint.pt changed"):
        edgeseg.load(root)
    assert read_bundle(root, check_hashes=False).file("checkpoint") == root / "checkpoint.pt"  # the explicit opt-out


def test_calibration_manifest_paths_stay_inside_the_dataset_root(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    from edgeseg.data import Preprocessing
    from edgeseg.quantize.calib_set import CalibrationManifest, iter_manifest_images

    root = tmp_path / "data"
    root.mkdir()
    secret = tmp_path / "secret.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(secret)
    (root / "link.png").symlink_to(secret)
    for path, message in (("../secret.png", "not a relative path"), (str(secret), "not a relative path"),
                          ("link.png", "outside")):
        manifest = CalibrationManifest(source={"kind": "images", "spec": str(root), "split": "all", "root": str(root)},
                                       images=[{"path": path, "sha256": "0" * 64}], preprocessing=Preprocessing())
        with pytest.raises(EdgesegError, match=message):
            next(iter_manifest_images(manifest))
