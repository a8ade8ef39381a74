"""The native runtime (native/, issue 14): build it with CMake, run its ctest suite, and compare it with
the Python package: resize/normalize/postprocess against torch, numpy and edgeseg's own code, class
maps of the sample program against ``edgeseg.load`` (OpenVINO on both sides), and the refusals.

Skips with the reason when CMake, a C++ compiler or a dependency is absent. The CamVid parity test
(reference FP32 and INT8 bundles, 20 val frames) is marked camvid + slow.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "native" / "python"))

from edgeseg_native import (NativeError, NativeLib, NativeUnavailable, build_native,  # noqa: E402
                            python_segmenter)

from _bundles import rebuilt_copy  # noqa: E402

TRT_HEADERS = REPO.parent / "shared" / "third_party" / "tensorrt"
REFERENCE = REPO / "benchmarks" / "reference" / "deeplabv3plus_mobilenet_v2_camvid.pt"


@pytest.fixture(scope="module")
def native(tmp_path_factory):
    try:
        return build_native(tmp_path_factory.mktemp("native-build"))
    except NativeUnavailable as e:
        pytest.skip(f"native runtime not built: {e}")


@pytest.fixture(scope="module")
def lib(native):
    return NativeLib(native.library)


@pytest.fixture(scope="module")
def app(native):
    if not native.built("edgeseg-native"):
        pytest.skip(f"edgeseg-native not built: {native.features['missing']}")
    if not native.built("backend openvino"):
        pytest.skip(f"the OpenVINO backend was not built: {native.features['missing']}")
    return native.app


@pytest.fixture(scope="module")
def tiny_bundle(request, tmp_path_factory) -> Path:
    """A tiny fp32 bundle: the suite's shared one when conftest has it, else one built with the CLI."""
    try:
        return request.getfixturevalue("tiny_dynamic_bundle")
    except pytest.FixtureLookupError:
        root = tmp_path_factory.mktemp("tiny-native")
        run = lambda *a: subprocess.run(["edgeseg", *a], check=True, capture_output=True)  # noqa: E731
        run("train", "--model", "deeplabv3plus_mobilenet_v2", "--data", "synthetic:64x96", "--epochs", "1",
            "--width", "0.35", "--workers", "0", "--out", str(root / "ckpt"))
        run("build", "--checkpoint", str(root / "ckpt" / "best.pt"), "--data", "synthetic:64x96", "--precision",
            "fp32", "--val-limit", "2", "--calib-count", "8", "--out", str(root / "fp32"))
        return root / "fp32"


def network_size(bundle: Path) -> tuple[int, int]:
    h, w = json.loads((bundle / "manifest.json").read_text())["preprocessing"]["size"]
    return h, w


def torch_resize_u8(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The Python side's "bilinear" definition (edgeseg.data.resize): torch interpolate (half-pixel, no
    antialias) in float32 on the uint8 values, rounded half up, stored as uint8."""
    from edgeseg.data.resize import bilinear

    return bilinear(image, size)


def run_app(app: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(app), *map(str, args)], capture_output=True, text=True, timeout=300)


def write_frames(folder: Path, frames: list[np.ndarray]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, f in enumerate(frames):
        paths.append(folder / f"frame{i:02d}.png")
        Image.fromarray(f).save(paths[-1])
    return paths


def read_labels(out: Path, name: str) -> np.ndarray:
    return np.asarray(Image.open(out / "labels" / f"{name}.png"))


# ----------------------------------------------------------------------------- build, ctest, compile checks

def test_ctest_passes(native):
    done = subprocess.run([native.ctest, "--test-dir", str(native.root), "--output-on-failure"], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "tests passed" in done.stdout


def test_backends_kernels_and_tensorrt_headers_compiled(native):
    assert native.built("backend openvino"), native.features["missing"]  # openvino is in the dev extra
    if shutil.which("nvcc") or Path("/usr/local/cuda/bin/nvcc").exists():
        assert native.built("cuda kernels"), native.features["missing"]
    if not TRT_HEADERS.is_dir():
        pytest.skip(f"TensorRT header sets not found at {TRT_HEADERS} (shared folder absent)")
    expected = sorted(p.parent.name for p in TRT_HEADERS.glob("*/include"))
    assert sorted(native.features["trt_header_checks"]) == expected  # the build compiled each one (or failed)
    assert set(expected) >= {"8.6", "10.3", "11.1"}


# ----------------------------------------------------------------------------- pre/post-processing vs Python

@pytest.mark.parametrize("src,dst", [((360, 480), (128, 160)), ((64, 96), (150, 211)), ((37, 53), (37, 17)),
                                     ((360, 480), (361, 479))])
def test_resize_matches_torch_definition(lib, src, dst):
    rng = np.random.default_rng(sum(src) + sum(dst))
    image = rng.integers(0, 256, (*src, 3), dtype=np.uint8)
    ours, ref = lib.resize_u8(image, dst).astype(int), torch_resize_u8(image, dst).astype(int)
    diff = np.abs(ours - ref)
    assert diff.max() <= 1, f"max difference {diff.max()} LSB"
    assert (diff == 0).mean() >= 0.999, f"only {(diff == 0).mean():.5f} of values bit-identical"


def test_resize_logits_and_labels_match_torch_numpy(lib):
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((11, 23, 30)).astype(np.float32)
    ref = F.interpolate(torch.from_numpy(logits)[None], size=(90, 120), mode="bilinear", align_corners=False)[0]
    ours = lib.resize_logits(logits, (90, 120))
    np.testing.assert_allclose(ours, ref.numpy(), rtol=0, atol=1e-6)  # bit-identical here; see image_ops.cpp
    labels = lib.labels(logits, (90, 120))
    agree = (labels == ref.numpy().argmax(0)).mean()
    assert agree >= 0.9999, agree
    ties = np.zeros((3, 2, 2), np.float32)  # all equal: numpy picks class 0
    assert (lib.labels(ties, (4, 4)) == 0).all()


def test_nv12_and_bgr_match_opencv(lib):
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(1)
    yuv = rng.integers(0, 256, (48 * 3 // 2, 64), dtype=np.uint8)
    ref = cv2.cvtColor(yuv, cv2.COLOR_YUV2RGB_NV12)
    ours = lib.frame_to_rgb(yuv, 64, 48, "NV12")
    assert np.abs(ours.astype(int) - ref.astype(int)).max() == 0
    bgr = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(lib.frame_to_rgb(bgr, 7, 5, "BGR"), bgr[:, :, ::-1])


def test_tiny_bundle_matches_edgeseg_load(app, lib, tiny_bundle, tmp_path):
    """Frames at the network size: the sample program's labels == edgeseg.load's (OpenVINO both sides),
    the native preprocessing == the tensor edgeseg feeds its runner, bit for bit, and the native
    postprocessing of edgeseg's logits == edgeseg's labels."""
    size = network_size(tiny_bundle)
    rng = np.random.default_rng(2)
    frames = [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(4)]
    frames.append(np.zeros((*size, 3), np.uint8))
    paths = write_frames(tmp_path / "frames", frames)
    done = run_app(app, tiny_bundle, tmp_path / "frames", "--out", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    assert "FPS" in done.stdout and "backend openvino" in done.stdout
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    seg, runner = python_segmenter(tiny_bundle)
    for path, frame in zip(paths, frames):
        py = seg(frame)
        assert np.array_equal(lib.normalize(frame, manifest["preprocessing"])[None], runner.last_input)
        assert np.array_equal(lib.labels(runner.last_output[0], frame.shape[:2]), py)
        ours = read_labels(tmp_path / "out", path.stem)
        assert ours.shape == frame.shape[:2] and ours.dtype == np.uint8
        assert (ours == py).mean() >= 0.999
        assert (tmp_path / "out" / "overlays" / path.name).is_file()
    native_seg = lib.open(tiny_bundle, "openvino")  # the C API end to end
    try:
        assert native_seg.backend == "openvino"
        assert np.array_equal(native_seg.segment(frames[0]), read_labels(tmp_path / "out", paths[0].stem))
        assert np.array_equal(native_seg.segment(np.ascontiguousarray(frames[0][:, :, ::-1]), "BGR"),
                              read_labels(tmp_path / "out", paths[0].stem))
        cv2 = pytest.importorskip("cv2")
        nv12 = np.random.default_rng(5).integers(0, 256, (size[0] * 3 // 2, size[1]), dtype=np.uint8)
        assert np.array_equal(native_seg.segment(nv12, "NV12"), seg(cv2.cvtColor(nv12, cv2.COLOR_YUV2RGB_NV12)))
    finally:
        native_seg.close()


def test_bilinear_bundle_resizes_frames(app, tiny_bundle, tmp_path):
    """A bundle whose manifest says resize "bilinear" (issue 12's field) takes frames of any size: the
    result equals the Python composition torch resize -> edgeseg.load -> torch upsample -> argmax."""
    bundle = rebuilt_copy(tiny_bundle, tmp_path / "bundle",
                          lambda m, root: m["preprocessing"].update(resize="bilinear"))
    size = network_size(bundle)
    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 256, (97, 131, 3), dtype=np.uint8), rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)]
    paths = write_frames(tmp_path / "frames", frames)
    done = run_app(app, bundle, *paths, "--out", tmp_path / "out", "--no-overlays")
    assert done.returncode == 0, done.stderr
    seg, runner = python_segmenter(bundle)
    for path, frame in zip(paths, frames):
        seg(torch_resize_u8(frame, size))
        up = F.interpolate(torch.from_numpy(runner.last_output), size=frame.shape[:2], mode="bilinear",
                           align_corners=False)
        ref = up[0].numpy().argmax(0)
        assert (read_labels(tmp_path / "out", path.stem) == ref).mean() >= 0.999


# ----------------------------------------------------------------------------- refusals

def _refused(done: subprocess.CompletedProcess, out: Path, *phrases: str) -> None:
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    for p in phrases:
        assert p in lines[0], lines[0]
    assert not list(out.glob("**/*.png")), "no output file may be written"


def test_bad_bundles_and_frames_are_refused(app, lib, tiny_bundle, tmp_path):
    size = network_size(tiny_bundle)
    frame = write_frames(tmp_path / "frames", [np.zeros((*size, 3), np.uint8)])[0]
    out = tmp_path / "out"
    _refused(run_app(app, tmp_path / "missing", frame, "--out", out), out, "is not an edgeseg bundle")

    tampered = tmp_path / "tampered"
    shutil.copytree(tiny_bundle, tampered)
    model = tampered / json.loads((tampered / "manifest.json").read_text())["roles"]["fp32"]
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    _refused(run_app(app, tampered, frame, "--out", out), out, "changed (sha256 differs", "edgeseg build")

    escaped = tmp_path / "escaped"
    shutil.copytree(tiny_bundle, escaped)
    name = json.loads((escaped / "manifest.json").read_text())["roles"]["fp32"]
    shutil.move(escaped / name, tmp_path / "outside.onnx")
    (escaped / name).symlink_to(tmp_path / "outside.onnx")
    _refused(run_app(app, escaped, frame, "--out", out), out, "outside the bundle folder")

    newer = tmp_path / "newer"
    shutil.copytree(tiny_bundle, newer)
    manifest = json.loads((newer / "manifest.json").read_text())
    manifest["version"] = 99
    (newer / "manifest.json").write_text(json.dumps(manifest))
    _refused(run_app(app, newer, frame, "--out", out), out, "upgrade")

    wrong_size = write_frames(tmp_path / "big", [np.zeros((size[0] + 3, size[1] + 5, 3), np.uint8)])[0]
    legacy = json.loads((tiny_bundle / "manifest.json").read_text())["preprocessing"].get("resize", "pil_bilinear")
    if legacy == "pil_bilinear":
        _refused(run_app(app, tiny_bundle, wrong_size, "--out", out), out, "rebuild the bundle with a current edgeseg")
    _refused(run_app(app, tiny_bundle, frame, "--out", out, "--backend", "tensorrt"), out, "tensorrt")

    # a bundle taking frames at their own size, within its shape bounds
    dynamic = rebuilt_copy(tiny_bundle, tmp_path / "dynamic", lambda m, root: m["preprocessing"].update(size=None))
    _refused(run_app(app, dynamic, wrong_size, "--out", out), out, "outside the bundle's input bounds", "height 64..64")

    seg = lib.open(tiny_bundle, "openvino")
    try:
        with pytest.raises(NativeError, match="expected a 3-channel RGB frame .* got 4 channels"):
            seg.segment(np.zeros((*size, 4), np.uint8))
    finally:
        seg.close()


def _deep(m: dict) -> None:
    value: object = 1
    for _ in range(40):
        value = [value]
    m["build"] = value


# manifest edits of meaning (issue 21): refused by edgeseg.load and the native program alike, in one line
MEANING_EDITS = {
    "mean": (lambda m: m["preprocessing"].update(mean=[0.4, 0.4, 0.4]), "'preprocessing.mean'"),
    "std": (lambda m: m["preprocessing"].update(std=[0.5, 0.5, 0.5]), "'preprocessing.std'"),
    "channel_order": (lambda m: m["preprocessing"].update(channel_order="BGR"), "'preprocessing.channel_order'"),
    "scale": (lambda m: m["preprocessing"].update(scale=1.0), "'preprocessing.scale'"),
    "resize": (lambda m: m["preprocessing"].update(resize="pil_bilinear"), "'preprocessing.resize'"),
    "size": (lambda m: m["preprocessing"].update(size=None), "'preprocessing.size'"),
    "classes": (lambda m: m["classes"].reverse(), "'classes' is"),
    "class_newline": (lambda m: m["classes"].__setitem__(1, "sky\nroad"), "one printable line"),
    "palette": (lambda m: m["palette"].__setitem__(1, [1, 2, 3]), "'palette' is"),
    "precision": (lambda m: m.update(precision="int8"), "'roles.int8'"),
    "role_renamed": (lambda m: m["roles"].update(fp32="copy.onnx") or m["files"].update(
        {"copy.onnx": m["files"]["model.onnx"]}), "'roles.fp32' must be 'model.onnx'"),
    "deep": (_deep, "deeper than 32 levels"),
}


@pytest.mark.parametrize("case", sorted(MEANING_EDITS))
def test_manifest_edits_are_refused_by_python_and_native_alike(case, app, tiny_bundle, tmp_path):
    from edgeseg.bundle.manifest import read_bundle
    from edgeseg.errors import EdgesegError

    edit, phrase = MEANING_EDITS[case]
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    if case == "role_renamed":
        shutil.copyfile(bundle / "model.onnx", bundle / "copy.onnx")
    manifest = json.loads((bundle / "manifest.json").read_text())
    edit(manifest)
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EdgesegError) as python_error:
        read_bundle(bundle)
    assert "\n" not in str(python_error.value)
    size = network_size(tiny_bundle)
    frame = write_frames(tmp_path / "frames", [np.zeros((*size, 3), np.uint8)])[0]
    out = tmp_path / "out"
    _refused(run_app(app, bundle, frame, "--out", out), out, phrase)
    if case != "class_newline":  # Python names the rule ("one line of printable characters")
        assert phrase in str(python_error.value), str(python_error.value)


def test_invalid_utf8_manifest_is_one_line(app, tiny_bundle, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    text = (bundle / "manifest.json").read_bytes()
    (bundle / "manifest.json").write_bytes(text.replace(b'"background"', b'"back\xffground"', 1))
    size = network_size(tiny_bundle)
    frame = write_frames(tmp_path / "frames", [np.zeros((*size, 3), np.uint8)])[0]
    _refused(run_app(app, bundle, frame, "--out", tmp_path / "out"), tmp_path / "out", "not valid JSON")


# ----------------------------------------------------------------------------- CamVid parity (reference model)

@pytest.fixture(scope="module")
def reference_bundles(camvid_root, tmp_path_factory) -> dict[str, Path]:
    if not REFERENCE.is_file():
        pytest.skip(f"reference checkpoint {REFERENCE} absent")
    root = tmp_path_factory.mktemp("reference")
    bundles = {}
    for precision in ("fp32", "int8"):
        out = root / precision
        subprocess.run(["edgeseg", "build", "--checkpoint", str(REFERENCE), "--data", f"camvid:{camvid_root}",
                        "--precision", precision, "--val-limit", "2", "--calib-count", "16", "--out", str(out)],
                       check=True, capture_output=True)
        bundles[precision] = out
    return bundles


@pytest.mark.camvid
@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_camvid_parity_with_edgeseg_load(app, reference_bundles, camvid_root, precision, tmp_path):
    """20 CamVid val frames (360x480, the network size): >= 99.9 % of pixels agree on every frame."""
    bundle = reference_bundles[precision]
    frames = sorted((camvid_root / "val").glob("*.png"))[:20]
    done = run_app(app, bundle, *frames, "--out", tmp_path / "out", "--no-overlays")
    assert done.returncode == 0, done.stderr
    seg, _ = python_segmenter(bundle)
    agreement = []
    for path in frames:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        agreement.append(float((read_labels(tmp_path / "out", path.stem) == seg(rgb)).mean()))
    assert min(agreement) >= 0.999, f"{precision}: per-frame agreement {agreement}"
