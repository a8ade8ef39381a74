"""Bundles: build on CPU, manifest and hashes, edgeseg.load against PyTorch, bad input at the door."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import edgeseg
from edgeseg.bundle.manifest import read_bundle, verify_bundle
from edgeseg.bundle.build import BuildOptions, build_bundle
from edgeseg.models.checkpoint import load_checkpoint
from edgeseg.cli import main
from edgeseg.data import open_dataset
from edgeseg.errors import EdgesegError
from edgeseg.train.loop import TrainConfig, train

SPEC = "synthetic:64x96"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ckpt")
    return train(TrainConfig(model="deeplabv3plus_mobilenet_v2", data=SPEC, width=0.35, batch_size=8, epochs=1,
                             max_train_samples=32, max_val_samples=4, workers=0, out=out), log=lambda s: None).best_path


@pytest.fixture(scope="module")
def int8_bundle(checkpoint: Path, tmp_path_factory) -> tuple[Path, list[str]]:
    out = tmp_path_factory.mktemp("bundles") / "int8"
    logs: list[str] = []
    result = build_bundle(BuildOptions(precision="int8", out=out, checkpoint=checkpoint, data=SPEC, calib_count=6,
                                       val_limit=6), log=logs.append)
    return out, result.notes


def test_int8_bundle_holds_every_artifact_with_hashes(int8_bundle) -> None:
    out, notes = int8_bundle
    bundle = read_bundle(out)
    m = bundle.manifest
    assert set(m["roles"]) >= {"fp32", "int8", "int8_trt", "int8_trt_fp16", "calibration_cache", "checkpoint"}
    assert m["roles"]["int8_trt_fp16"] == "model.int8.trt16.onnx" and m["calibration"]["trt_cache"] == "calibration.cache"
    assert set(m["files"]) == {p.name for p in out.iterdir() if p.name != "manifest.json"}
    assert m["precision"] == "int8" and m["engine"] is None
    assert len(m["calibration"]["manifest_sha256"]) == 64
    assert set(m["metrics"]["miou"]) == {"fp32", "int8"}
    assert m["preprocessing"]["size"] == [64, 96]
    assert (out / "calibration.cache").read_text().startswith("TRT-8601-EntropyCalibration2")
    assert any("edgeseg build --from" in n and "--backend trt" in n for n in notes)
    verify_bundle(bundle)
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")], "staging folders left behind"


def test_load_matches_pytorch_argmax(int8_bundle, checkpoint: Path) -> None:
    out, _ = int8_bundle
    ckpt = load_checkpoint(checkpoint)
    model = ckpt.build()
    frames = [open_dataset(SPEC, "val")[i][0] for i in range(3)]
    fp32 = edgeseg.load(out, backend="ort")
    assert fp32.runner.path.name == "model.int8.onnx"  # int8 bundle -> INT8 model on CPU
    torch_seg = edgeseg.load(out, backend="torch")
    for frame in frames:
        with torch.no_grad():
            ref = model(torch.from_numpy(ckpt.preprocessing(frame))[None])[0].argmax(0).numpy()
        assert (torch_seg(frame) == ref).mean() == 1.0
        labels, logits = fp32(frame, logits=True)
        assert labels.shape == frame.shape[:2] and labels.dtype == np.uint8
        assert logits.shape == (len(fp32.classes), *frame.shape[:2])
        assert (labels == ref).mean() >= 0.90


def test_fp32_bundle_agrees_with_pytorch_and_bgr_frames(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "fp32"
    build_bundle(BuildOptions(precision="fp32", out=out, checkpoint=checkpoint, data=SPEC, val_limit=2),
                 log=lambda s: None)
    ckpt = load_checkpoint(checkpoint)
    model = ckpt.build()
    seg = edgeseg.load(out)
    seg_bgr = edgeseg.load(out, color="BGR")
    frame = open_dataset(SPEC, "val")[5][0]
    with torch.no_grad():
        ref = model(torch.from_numpy(ckpt.preprocessing(frame))[None])[0].argmax(0).numpy()
    assert (seg(frame) == ref).mean() >= 0.995
    assert np.array_equal(seg_bgr(np.ascontiguousarray(frame[:, :, ::-1])), seg(frame))
    big = np.repeat(np.repeat(frame, 2, 0), 2, 1)  # any frame size: resized in, mask back at frame size
    assert seg(big).shape == big.shape[:2]


def test_bad_frames_and_tampered_bundles_are_refused(int8_bundle, tmp_path: Path) -> None:
    out, _ = int8_bundle
    seg = edgeseg.load(out)
    with pytest.raises(EdgesegError, match="HxWx3 uint8"):
        seg(np.zeros((64, 96, 3), np.float32))
    with pytest.raises(EdgesegError, match="HxWx3 uint8"):
        seg(np.zeros((64, 96, 4), np.uint8))
    with pytest.raises(EdgesegError, match="height 32 is outside the model's profile"):
        seg.runner.infer(np.zeros((1, 3, 32, 96), np.float32))
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    with open(copy / "model.int8.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(EdgesegError, match="model.int8.onnx changed"):
        edgeseg.load(copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["version"] = 99
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EdgesegError, match="upgrade edgeseg"):
        edgeseg.load(copy)


def test_cli_info_and_build_errors(int8_bundle, tmp_path: Path, checkpoint: Path) -> None:
    out, _ = int8_bundle
    runner = CliRunner()
    res = runner.invoke(main, ["info", str(out)])
    assert res.exit_code == 0, res.output
    assert "files verified" in res.output and "calibration: 6 images" in res.output
    res = runner.invoke(main, ["build", "--precision", "int8", "--checkpoint", str(checkpoint), "--data", SPEC,
                               "--backend", "trt", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "needs TensorRT" in res.output
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    res = runner.invoke(main, ["build", "--precision", "fp32", "--checkpoint", str(bad), "--out", str(tmp_path / "y")])
    assert res.exit_code == 2 and "cannot read checkpoint" in res.output
    assert not (tmp_path / "y").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".y")]


REFERENCE = Path(__file__).resolve().parents[2] / "benchmarks" / "reference" / "deeplabv3plus_mobilenet_v2_camvid.pt"


@pytest.mark.slow
@pytest.mark.camvid
def test_reference_fp32_bundle_matches_pytorch_on_camvid_frames(camvid_root: Path, tmp_path: Path) -> None:
    spec = f"camvid:{camvid_root}"
    build_bundle(BuildOptions(precision="fp32", out=tmp_path / "ref", checkpoint=REFERENCE, data=spec, val_limit=2),
                 log=lambda s: None)
    ckpt = load_checkpoint(REFERENCE)
    model = ckpt.build()
    seg = edgeseg.load(tmp_path / "ref")
    val = open_dataset(spec, "val")
    for i in (0, 50, 100):
        frame = val[i][0]
        with torch.no_grad():
            ref = model(torch.from_numpy(ckpt.preprocessing(frame))[None])[0].argmax(0).numpy()
        assert (seg(frame) == ref).mean() >= 0.995


def test_int8_bundle_builds_for_unet(tmp_path: Path) -> None:
    # U-Net's graph differs most from DeepLab's (ceil-mode max pools, up-convolutions, crops, concatenations);
    # every seed family's INT8 quantization is checked in tests/quantize/test_quantize.py
    ckpt = train(TrainConfig(model="unet", data=SPEC, width=0.125, batch_size=4, epochs=1, max_train_samples=8,
                             max_val_samples=2, workers=0, out=tmp_path / "ckpt"), log=lambda s: None).best_path
    out = tmp_path / "int8"
    build_bundle(BuildOptions(precision="int8", out=out, checkpoint=ckpt, data=SPEC, calib_count=4, val_limit=2),
                 log=lambda s: None)
    bundle = read_bundle(out)
    verify_bundle(bundle)
    assert {"int8", "int8_trt", "calibration_cache"} <= set(bundle.manifest["roles"])
    ckpt_loaded = load_checkpoint(ckpt)
    model = ckpt_loaded.build()
    seg = edgeseg.load(out, backend="ort")
    assert seg.runner.path.name == "model.int8.onnx"
    for frame in [open_dataset(SPEC, "val")[i][0] for i in range(2)]:
        with torch.no_grad():
            ref = model(torch.from_numpy(ckpt_loaded.preprocessing(frame))[None])[0].argmax(0).numpy()
        assert (seg(frame) == ref).mean() >= 0.9


# ----------------------------------------------------------------------------- accelerators: registry hooks, TensorRT

def test_int8_engine_source_per_tensorrt_version() -> None:
    """8.6 / 10.x: the FP32-scale Q/DQ graph (weakly typed, FP16|INT8 flags); 11.x: the FP16-scale graph
    (strongly typed INT8 + FP16). Either way the unquantized layers run FP16."""
    from edgeseg.backends.trt_api import engine_source

    roles = {"fp32": "model.onnx", "int8_trt": "model.int8.trt.onnx", "int8_trt_fp16": "model.int8.trt16.onnx",
             "fp16": "model.fp16.onnx"}
    assert engine_source(roles, "int8", "8.6.2") == engine_source(roles, "int8", "10.3.0") == "model.int8.trt.onnx"
    assert engine_source(roles, "int8", "11.1.0") == "model.int8.trt16.onnx"
    assert engine_source(roles, "fp16", "11.1.0") == "model.fp16.onnx"


def test_finishing_on_the_device_retargets_the_cache(int8_bundle, tmp_path) -> None:
    """`edgeseg build --from DIR --backend trt` rewrites calibration.cache for the running TensorRT (10.3 here),
    and leaves it for 8.6 / 10.x readers on 11.x (no implicit INT8 there)."""
    from edgeseg.backends.trt_engine import retarget_bundle_cache

    out, _ = int8_bundle
    copy = tmp_path / "b"
    shutil.copytree(out, copy)
    roles = read_bundle(copy).manifest["roles"]
    table = (copy / "calibration.cache").read_text().split("\n", 1)[1]
    assert retarget_bundle_cache(copy, roles, "10.3.0", log=lambda s: None) == "TRT-100300-EntropyCalibration2"
    assert (copy / "calibration.cache").read_text() == "TRT-100300-EntropyCalibration2\n" + table
    assert retarget_bundle_cache(copy, roles, "11.1.0", log=lambda s: None) is None
    assert (copy / "calibration.cache").read_text().startswith("TRT-100300-")


def test_build_names_no_accelerator() -> None:
    """bundle/build.py asks the registry for accelerators and calls their hook: it imports no TensorRT backend
    module (the TensorRT-layout Q/DQ graphs and the calibration cache are quantize's)."""
    import ast

    import edgeseg.bundle.build as build

    tree = ast.parse(Path(build.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not [m for m in imported if m.startswith("edgeseg.backends.") and "trt" in m], imported


def test_an_accelerator_is_one_registry_entry(checkpoint: Path, tmp_path: Path, monkeypatch) -> None:
    """A registry entry with a build_artifacts hook gets its files and record into a bundle built where it can
    run, and finishes a bundle built elsewhere (`edgeseg build --from DIR`, on_device=True)."""
    from edgeseg.backends import registry
    from edgeseg.bundle.build import finish_engine

    calls = []

    def build_npu_model(request: registry.ArtifactRequest) -> dict:
        calls.append((request.precision, request.on_device, sorted(request.roles)))
        (request.stage / "model.npu").write_bytes(b"compiled")
        request.roles["npu_model"] = "model.npu"
        return {"file": "model.npu", "source": request.roles["fp32"]}

    npu = registry.Backend("npu", "Test NPU", ("npu_model",), lambda: None, lambda path, bundle, options: None,
                           lambda bundle: "npu_model", accelerator=True, produces=("npu_model",), record="npu",
                           build_artifacts=build_npu_model)
    monkeypatch.setitem(registry.BACKENDS, "npu", npu)
    out = tmp_path / "b"
    build_bundle(BuildOptions(precision="fp32", out=out, checkpoint=checkpoint, input_size=(64, 96)),
                 log=lambda s: None)
    m = read_bundle(out).manifest
    assert m["roles"]["npu_model"] == "model.npu" and m["npu"] == {"file": "model.npu", "source": "model.onnx"}
    assert m["engine"] is None  # TensorRT cannot run here: its record says so
    result = finish_engine(out, backend="npu", log=lambda s: None)
    assert calls == [("fp32", False, ["checkpoint", "fp32"]), ("fp32", True, ["checkpoint", "fp32", "npu_model"])]
    verify_bundle(read_bundle(out))
    assert result.manifest["npu"]["source"] == "model.onnx"


def test_finishing_without_an_accelerator_says_what_is_missing(int8_bundle) -> None:
    from edgeseg.bundle.build import finish_engine

    out, _ = int8_bundle
    with pytest.raises(EdgesegError, match="no accelerator can build its artifacts here .*TensorRT"):
        finish_engine(out, log=lambda s: None)


def test_calibrators_tensorrt_cannot_replay_build_without_a_cache(checkpoint: Path, tmp_path) -> None:
    logs: list[str] = []
    build_bundle(BuildOptions(precision="int8", out=tmp_path / "p", checkpoint=checkpoint, data=SPEC, calib_count=4,
                              val_limit=2, calibrator="percentile"), log=logs.append)
    m = read_bundle(tmp_path / "p").manifest
    assert "calibration_cache" not in m["roles"] and not (tmp_path / "p" / "calibration.cache").exists()
    assert m["calibration"]["trt_cache"] is None and any("no percentile calibrator" in line for line in logs)


def test_val_limit_0_and_an_input_inside_out_are_refused_before_any_write(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "b"
    with pytest.raises(EdgesegError, match="--val-limit must be >= 1"):  # was: NaN mIoU and the split's size
        build_bundle(BuildOptions(precision="fp32", out=out, checkpoint=checkpoint, data=SPEC, val_limit=0))
    assert not out.exists()
    build_bundle(BuildOptions(precision="fp32", out=out, checkpoint=checkpoint, input_size=(32, 48)),
                 log=lambda s: None)
    before = (out / "model.onnx").read_bytes()
    with pytest.raises(EdgesegError, match="--onnx .*model.onnx lies inside --out"):
        build_bundle(BuildOptions(precision="fp32", out=out, onnx=out / "model.onnx", overwrite=True))
    assert (out / "model.onnx").read_bytes() == before
