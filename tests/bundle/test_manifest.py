"""Hostile and broken bundle manifests: every path contained, every role hashed, refused in one line."""
from __future__ import annotations

import json
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


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_manifest_is_refused_in_one_line_everywhere(case: str, tiny_dynamic_bundle: Path,
                                                            tmp_path: Path) -> None:
    change, message = HOSTILE[case]
    root = _copy(tiny_dynamic_bundle, tmp_path)
    _edit(root, change)
    with pytest.raises(EdgesegError, match=message):
        read_bundle(root)
    import numpy as np
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "frame.png")
    runner = CliRunner()
    for args in (["info", root], ["deploy", root, "--deepstream", tmp_path / "ds", "--no-verify"],
                 ["infer", root, tmp_path / "frame.png", "--out", tmp_path / "inf"]):
        res = runner.invoke(main, [str(a) for a in args])
        assert res.exit_code == 2, (args, res.output)
        assert message in res.output and len(res.output.strip().splitlines()) == 1, res.output
    assert not (tmp_path / "ds").exists() and not (tmp_path / "inf").exists()


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
