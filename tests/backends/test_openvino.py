"""The OpenVINO runner on real OpenVINO: FP32 and INT8 Q/DQ bundles against ONNX Runtime and PyTorch,
inputs checked at the door, devices and precisions refused with one line, the compiled-model cache,
and the parity of bench / edgeseg.load / infer with PyTorch FP32 on CamVid val frames."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import edgeseg
from edgeseg.backends.onnxruntime import OrtRunner
from edgeseg.backends.openvino import openvino_missing
from edgeseg.backends.registry import RunnerOptions
from edgeseg.bundle.build import BuildOptions, build_bundle
from edgeseg.bundle.manifest import read_bundle
from edgeseg.cli import main
from edgeseg.data import open_dataset
from edgeseg.errors import EdgesegError
from edgeseg.models.checkpoint import load_checkpoint

pytestmark = pytest.mark.skipif(openvino_missing() is not None, reason=str(openvino_missing()))

SPEC = "synthetic:64x96"
REFERENCE = Path(__file__).resolve().parents[2] / "benchmarks" / "reference" / "deeplabv3plus_mobilenet_v2_camvid.pt"


def _runner(path, **kw):
    from edgeseg.backends.openvino import OpenVinoRunner

    return OpenVinoRunner(path, threads=1, **kw)


def _capabilities() -> list[str]:
    import openvino as ov

    return [str(c) for c in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")]


@pytest.fixture(scope="module")
def int8_bundle(tiny_dynamic_bundle: Path, tmp_path_factory) -> Path:
    """An INT8 bundle (Q/DQ, cpu layout) of the session's tiny model, static batch."""
    bundle = read_bundle(tiny_dynamic_bundle)
    out = tmp_path_factory.mktemp("ov") / "int8"
    build_bundle(BuildOptions(precision="int8", out=out, checkpoint=bundle.file("checkpoint"), data=SPEC, calib_count=4,
                              val_limit=2, backend="ort", select_images=2, runtime_rounds=3), log=lambda s: None)
    return out


def _frames(n: int = 3) -> list[np.ndarray]:
    val = open_dataset(SPEC, "val")
    return [val[i][0] for i in range(n)]


def test_fp32_logits_match_onnx_runtime_and_dynamic_batch_runs(tiny_dynamic_bundle: Path) -> None:
    bundle = read_bundle(tiny_dynamic_bundle)
    x = np.stack([bundle.preprocessing(f) for f in _frames()])  # batch 3 inside the export's 1..8
    with OrtRunner(bundle.file("fp32")) as ort, _runner(bundle.file("fp32"), inference_precision="f32") as ov:
        ref, got = ort.infer(x), ov.infer(x)
        assert ov.inference_precision == "f32"
        assert ov.input_spec.min_shape[0] == 1 and ov.input_spec.max_shape[0] == 8
    assert got.shape == ref.shape and got.dtype == np.float32
    assert np.abs(got - ref).max() <= 1e-3 * max(1.0, np.abs(ref).max())
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.999


def test_int8_qdq_model_runs_and_agrees_with_onnx_runtime_int8(int8_bundle: Path) -> None:
    bundle = read_bundle(int8_bundle)
    x = bundle.preprocessing(_frames(1)[0])[None]
    with OrtRunner(bundle.file("int8")) as ort, _runner(bundle.file("int8"), inference_precision="f32") as ov:
        ref, got = ort.infer(x), ov.infer(x)
    assert got.shape == ref.shape
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.95  # two INT8 kernels' roundings, same Q/DQ scales
    with OrtRunner(bundle.file("fp32")) as fp32:
        assert np.abs(got - fp32.infer(x)).max() > 0, "the Q/DQ model must actually quantize"


def test_inputs_are_checked_at_the_door(int8_bundle: Path) -> None:
    with _runner(read_bundle(int8_bundle).file("int8")) as ov:
        with pytest.raises(EdgesegError, match="must be float32, got float64"):
            ov.infer(np.zeros((1, 3, 64, 96)))
        with pytest.raises(EdgesegError, match="height 32 is outside the model's profile"):
            ov.infer(np.zeros((1, 3, 32, 96), np.float32))
        with pytest.raises(EdgesegError, match="batch 2 is outside"):
            ov.infer(np.zeros((2, 3, 64, 96), np.float32))
    with pytest.raises(EdgesegError, match="not active"):
        _runner(read_bundle(int8_bundle).file("int8")).infer(np.zeros((1, 3, 64, 96), np.float32))


def test_devices_precisions_and_files_are_refused_with_one_line(int8_bundle: Path, tmp_path: Path) -> None:
    path = read_bundle(int8_bundle).file("int8")
    with pytest.raises(EdgesegError, match="device 'NPU' is not available here") as e:
        _runner(path, device="NPU").activate()
    assert "\n" not in str(e.value)
    with pytest.raises(EdgesegError, match="must be one of f32, bf16, f16"):
        _runner(path, inference_precision="int4")
    if "FP16" not in _capabilities():
        with pytest.raises(EdgesegError, match="cannot compute in f16"):
            _runner(path, inference_precision="f16").activate()
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx file")
    with pytest.raises(EdgesegError, match="OpenVINO cannot compile") as e:
        _runner(bad).activate()
    assert "\n" not in str(e.value)


def test_inference_precision_is_read_back_never_assumed(tiny_dynamic_bundle: Path) -> None:
    path = read_bundle(tiny_dynamic_bundle).file("fp32")
    with _runner(path) as default:  # OpenVINO's device default: bf16 on CPUs with AVX512_BF16 or AMX
        assert default.inference_precision == ("bf16" if "BF16" in _capabilities() else "f32")
    if "BF16" not in _capabilities():
        pytest.skip("this CPU has no BF16: the bf16 hint cannot be checked")
    x = read_bundle(tiny_dynamic_bundle).preprocessing(_frames(1)[0])[None]
    with _runner(path, inference_precision="bf16") as bf16, _runner(path, inference_precision="f32") as f32:
        assert bf16.inference_precision == "bf16"
        a, b = bf16.infer(x), f32.infer(x)
    assert 0 < np.abs(a - b).max() < 0.1 * np.abs(b).max()  # bf16 really computed: close, not equal


def test_compiled_model_cache_lives_in_the_given_folder_and_follows_the_model(int8_bundle: Path,
                                                                               tmp_path: Path) -> None:
    bundle = read_bundle(int8_bundle)
    model = tmp_path / "m.onnx"
    shutil.copyfile(bundle.file("fp32"), model)
    cache = tmp_path / "ov-cache"
    x = bundle.preprocessing(_frames(1)[0])[None]
    with _runner(model, inference_precision="f32", cache_dir=cache) as first:
        assert not first.loaded_from_cache
        out_first = first.infer(x)
    assert any(cache.iterdir())
    with _runner(model, inference_precision="f32", cache_dir=cache) as second:
        assert second.loaded_from_cache
        assert np.array_equal(second.infer(x), out_first)
    shutil.copyfile(bundle.file("int8"), model)  # another model at the same path: the cache must not serve the old one
    with _runner(model, inference_precision="f32", cache_dir=cache) as changed, \
            _runner(bundle.file("int8"), inference_precision="f32") as fresh:
        expected = fresh.infer(x)
        assert not np.array_equal(expected, out_first)  # the two models differ, so a stale cache would show
        assert np.array_equal(changed.infer(x), expected)


def test_load_and_cli_run_openvino(int8_bundle: Path, tmp_path: Path) -> None:
    seg = edgeseg.load(int8_bundle, backend="openvino", options=RunnerOptions(inference_precision="f32"))
    assert seg.backend == "openvino" and seg.runner.path.name == "model.int8.onnx"
    assert "OpenVINO on model.int8.onnx (asked for)" in seg.choice
    frame = _frames(1)[0]
    ref = edgeseg.load(int8_bundle, backend="ort")(frame)
    assert (seg(frame) == ref).mean() >= 0.95
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(frame).save(images / "a.png")
    res = CliRunner().invoke(main, ["infer", str(int8_bundle), str(images), "--out", str(tmp_path / "out"),
                                    "--backend", "openvino", "--ov-cache", str(tmp_path / "cache")])
    assert res.exit_code == 0, res.output
    assert "runner: OpenVINO on model.int8.onnx" in res.output and "(openvino, batch 1)" in res.output
    assert (tmp_path / "out" / "labels" / "a.png").is_file() and any((tmp_path / "cache").iterdir())
    res = CliRunner().invoke(main, ["infer", str(int8_bundle), str(images), "--out", str(tmp_path / "out2"),
                                    "--backend", "openvino", "--ov-device", "NPU"])
    assert res.exit_code == 2 and "device 'NPU' is not available" in res.output


# ----------------------------------------------------------------------------- CamVid parity (reference model)

@pytest.fixture(scope="module")
def reference_fp32_bundle(camvid_root: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ov-ref") / "fp32"
    build_bundle(BuildOptions(precision="fp32", out=out, checkpoint=REFERENCE, data=f"camvid:{camvid_root}",
                              val_limit=2, backend="openvino", select_images=2, runtime_rounds=3), log=lambda s: None)
    return out


VAL_FRAMES = (0, 50, 100)


def _pytorch_labels(frames: list[np.ndarray]) -> list[np.ndarray]:
    ckpt = load_checkpoint(REFERENCE)
    model = ckpt.build().eval()
    with torch.no_grad():
        return [model(torch.from_numpy(ckpt.preprocessing(f))[None])[0].argmax(0).numpy() for f in frames]


@pytest.mark.slow
@pytest.mark.camvid
def test_openvino_parity_with_pytorch_on_camvid_val_through_load_infer_and_bench(
        reference_fp32_bundle: Path, camvid_root: Path, tmp_path: Path) -> None:
    val = open_dataset(f"camvid:{camvid_root}", "val")
    frames = [val[i][0] for i in VAL_FRAMES]
    ref = _pytorch_labels(frames)
    # edgeseg.load
    seg = edgeseg.load(reference_fp32_bundle, backend="openvino")
    assert seg.runner.inference_precision == "f32"  # an FP32 bundle runs FP32 unless bf16 is asked for
    for frame, r in zip(frames, ref):
        assert (seg(frame) == r).mean() >= 0.995
    # auto on a bundle built with --backend openvino: the OpenVINO path it measured
    auto = edgeseg.load(reference_fp32_bundle)
    assert auto.backend == "openvino" and "openvino:fp32@f32" in auto.choice
    # infer
    images = tmp_path / "frames"
    images.mkdir()
    for i, frame in zip(VAL_FRAMES, frames):
        Image.fromarray(frame).save(images / f"{i:03d}.png")
    res = CliRunner().invoke(main, ["infer", str(reference_fp32_bundle), str(images), "--out", str(tmp_path / "out"),
                                    "--backend", "openvino", "--no-overlay"])
    assert res.exit_code == 0, res.output
    for i, r in zip(VAL_FRAMES, ref):
        labels = np.asarray(Image.open(tmp_path / "out" / "labels" / f"{i:03d}.png"))
        assert (labels == r).mean() >= 0.995
    # bench (its parity is against the PyTorch FP32 model on the same frames)
    out = tmp_path / "bench.json"
    res = CliRunner().invoke(main, ["bench", str(reference_fp32_bundle), "--data", f"camvid:{camvid_root}",
                                    "--backends", "openvino", "--limit", "3", "--min-iters", "3", "--min-seconds", "0",
                                    "--threads", "2", "--json", str(out)])
    assert res.exit_code == 0, res.output
    (rec,) = [r for r in json.loads(out.read_text()) if r["backend"] == "openvino"]
    assert rec["precision"] == "fp32" and rec["inference_precision"] == "f32"
    assert rec["agreement"] >= 99.5
