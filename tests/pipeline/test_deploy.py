"""`edgeseg deploy`: nvinfer normalization arithmetic (RGB and BGR), nvinfer config checked against the
documented keys and ranges, Triton config.pbtxt parsed by Triton's own protobuf schema."""
from __future__ import annotations

import configparser
import functools
import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeseg.bundle.manifest import read_bundle
from edgeseg.bundle.build import BuildOptions, build_bundle
from edgeseg.cli import main
from edgeseg.data.preprocess import Preprocessing
from edgeseg.backends.artifacts import PRECISIONS
from edgeseg.pipeline.deepstream import DS_CONFIG, DS_ONNX, STD_SPREAD_WARN, nvinfer_normalization, write_deepstream
from edgeseg.pipeline.nvinfer_schema import NETWORK_MODES, validate_nvinfer
from edgeseg.pipeline.triton import write_triton
from edgeseg.errors import EdgesegError
from _bundles import rebuilt_copy

SPEC = "synthetic:64x96"


@pytest.fixture(scope="module")
def dyn_bundle(tiny_dynamic_bundle: Path) -> Path:
    """The session's tiny fp32 bundle with a dynamic batch dim (tests/conftest.py)."""
    return tiny_dynamic_bundle


@pytest.fixture(scope="module")
def int8_bundle(dyn_bundle: Path, tmp_path_factory) -> Path:
    """int8 with a fixed batch of 1: the same export with the batch dim fixed (graph and metadata), then
    `build_bundle(onnx=...)` (calibration, TensorRT cache), which saves a second export."""
    import onnx

    root = tmp_path_factory.mktemp("int8")
    model = onnx.load(str(dyn_bundle / "model.onnx"))
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = 1
    for prop in model.metadata_props:
        if prop.key == "edgeseg.shape_bounds":
            bounds = json.loads(prop.value)
            for shapes in bounds.values():
                for key in shapes:
                    shapes[key][0] = 1
            prop.value = json.dumps(bounds)
        elif prop.key == "edgeseg.dynamic":
            prop.value = "null"
    static = root / "static.onnx"
    onnx.save(model, str(static))
    out = root / "bundle"
    build_bundle(BuildOptions(precision="int8", out=out, onnx=static, data=SPEC, calib_count=4, val_limit=2),
                 log=lambda s: None)
    return out


def _props(text: str) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None, delimiters=("=",), comment_prefixes=("#",))
    parser.read_string(text)
    return dict(parser.items("property"))


def _edited_copy(src: Path, dst: Path, edit) -> Path:
    """A copy of a bundle whose manifest ``edit(manifest, root)`` changed, as a build would write it (its ONNX
    metadata too, hashes rewritten: tests/_bundles.py)."""
    return rebuilt_copy(src, dst, edit)


def _nvinfer_input(frame_rgb: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """What nvinfer feeds the network: convert to model-color-format, y = k * (x - offsets[c]), CHW."""
    norm = nvinfer_normalization(pre)
    x = frame_rgb if norm.model_color_format == 0 else frame_rgb[:, :, ::-1]
    y = norm.net_scale_factor * (x.astype(np.float64) - np.asarray(norm.offsets))
    return y.transpose(2, 0, 1)


@pytest.mark.parametrize("order", ["RGB", "BGR"])
def test_net_scale_factor_and_offsets_reproduce_the_training_normalization(order: str) -> None:
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # listed in RGB order
    if order == "BGR":
        mean, std = mean[::-1], std[::-1]
    pre = Preprocessing(mean=mean, std=std, channel_order=order)
    norm = nvinfer_normalization(pre)
    assert norm.model_color_format == (0 if order == "RGB" else 1)
    assert norm.offsets == pytest.approx([m * 255 for m in mean])
    assert norm.net_scale_factor == pytest.approx(1 / (255 * np.mean(std)))
    assert norm.warning is None and norm.max_rel_error == pytest.approx(max(abs(s / np.mean(std) - 1) for s in std))
    frame = np.random.default_rng(0).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    truth = pre.normalize(frame).astype(np.float64)  # edgeseg's own path (flips to BGR itself)
    ds = _nvinfer_input(frame, pre)
    # the only difference: channel c is scaled by std[c] / mean std
    assert np.allclose(ds, truth * (np.asarray(std) / np.mean(std))[:, None, None], atol=1e-4)
    assert np.abs(ds - truth).max() <= norm.max_rel_error * np.abs(truth).max() + 1e-4
    equal = Preprocessing(mean=mean, std=(0.25, 0.25, 0.25), channel_order=order)
    assert np.allclose(_nvinfer_input(frame, equal), equal.normalize(frame), atol=1e-4)


def test_caffe_style_and_unequal_stds() -> None:
    caffe = nvinfer_normalization(Preprocessing(mean=(103.939, 116.779, 123.68), std=(1.0, 1.0, 1.0), scale=1.0,
                                                channel_order="BGR"))
    assert caffe.net_scale_factor == 1.0 and caffe.offsets == (103.939, 116.779, 123.68) and caffe.max_rel_error == 0
    skewed = nvinfer_normalization(Preprocessing(std=(0.2, 0.25, 0.3)))
    assert skewed.max_rel_error > STD_SPREAD_WARN and "20.0%" in skewed.warning and "net-scale-factor" in skewed.warning


# ----------------------------------------------------------------------------- DeepStream

def test_deepstream_int8_folder(int8_bundle: Path, tmp_path: Path) -> None:
    import onnxruntime as ort

    bundle = read_bundle(int8_bundle)
    res = write_deepstream(int8_bundle, tmp_path / "ds", trt_version="10.3.0")  # DeepStream 7.1 on JetPack 6.1
    ds = tmp_path / "ds"
    assert set(res.files) == {DS_CONFIG, DS_ONNX, "labels.txt", "calibration.cache", "README.md"} and not res.warnings
    text = (ds / DS_CONFIG).read_text()
    assert validate_nvinfer(text, ds) == []
    p = _props(text)
    norm = nvinfer_normalization(bundle.preprocessing)
    assert p["network-type"] == "2" and p["network-mode"] == "1" and p["int8-calib-file"] == "calibration.cache"
    # the bundle's table, its first line rewritten for the TensorRT nvinfer runs (the old code copied the 8.6.1
    # header verbatim, which TensorRT 10.3 ignores and then calibrates afresh with no data)
    written, original = (ds / "calibration.cache").read_bytes(), bundle.file("calibration_cache").read_bytes()
    assert original.startswith(b"TRT-8601-EntropyCalibration2\n")
    assert written.split(b"\n", 1) == [b"TRT-100300-EntropyCalibration2", original.split(b"\n", 1)[1]]
    assert "from calibration.cache: TRT-100300-EntropyCalibration2" in text
    assert float(p["net-scale-factor"]) == pytest.approx(norm.net_scale_factor, rel=1e-8)
    assert [float(v) for v in p["offsets"].split(";")] == pytest.approx(norm.offsets, rel=1e-8)
    assert p["model-color-format"] == "0" and p["infer-dims"] == "3;64;96" and p["batch-size"] == "1"
    assert p["num-detected-classes"] == str(len(bundle.classes)) and p["output-blob-names"] == "probs"
    assert p["model-engine-file"] == "model.ds.onnx_b1_gpu0_int8.engine" and "enable-dla" not in p
    assert "APPROXIMATED by the mean std" in text
    assert (ds / "labels.txt").read_text().splitlines() == bundle.classes
    readme = (ds / "README.md").read_text()
    assert "gst-launch-1.0" in readme and f"nvinfer config-file-path={DS_CONFIG}" in readme
    # the DeepStream model: probabilities whose argmax is the bundle model's
    x = np.random.default_rng(3).standard_normal((1, 3, 64, 96)).astype(np.float32)
    probs = ort.InferenceSession(str(ds / DS_ONNX)).run(["probs"], {"input": x})[0]
    logits = ort.InferenceSession(str(bundle.file("fp32"))).run(None, {"input": x})[0]
    assert np.allclose(probs.sum(1), 1, atol=1e-5) and np.array_equal(probs.argmax(1), logits.argmax(1))


def test_deepstream_dla_bgr_and_batch(int8_bundle: Path, dyn_bundle: Path, tmp_path: Path) -> None:
    def to_bgr_dla(m: dict, root: Path) -> None:
        pre = m["preprocessing"]
        pre.update(channel_order="BGR", mean=pre["mean"][::-1], std=pre["std"][::-1])
        (root / "model.engine").write_bytes(b"placeholder plan")  # DeepStream builds its own engine
        m["roles"]["engine"] = "model.engine"
        m["engine"] = {"dla_core": 1, "source": "model.int8.trt.onnx", "trt_version": "8.6.2"}

    copy = _edited_copy(int8_bundle, tmp_path / "bgr", to_bgr_dla)
    write_deepstream(copy, tmp_path / "ds")  # the engine's TensorRT is the default for the cache header
    assert (tmp_path / "ds" / "calibration.cache").read_text().startswith("TRT-8602-EntropyCalibration2\n")
    text = (tmp_path / "ds" / DS_CONFIG).read_text()
    assert validate_nvinfer(text, tmp_path / "ds") == []
    p = _props(text)
    assert p["enable-dla"] == "1" and p["use-dla-core"] == "1" and p["model-color-format"] == "1"
    assert p["model-engine-file"] == "model.ds.onnx_b1_dla1_int8.engine"
    assert [float(v) for v in p["offsets"].split(";")] == pytest.approx([103.53, 116.28, 123.675])
    write_deepstream(dyn_bundle, tmp_path / "ds4", batch_size=4)
    p = _props((tmp_path / "ds4" / DS_CONFIG).read_text())
    assert p["batch-size"] == "4" and p["network-mode"] == "0" and "int8-calib-file" not in p
    with pytest.raises(EdgesegError, match="outside the model's batch bounds 1..8"):
        write_deepstream(dyn_bundle, tmp_path / "ds9", batch_size=9)


VALID = """[property]
net-scale-factor=0.0173520736
offsets=123.675;116.28;103.53
model-color-format=0
onnx-file=model.ds.onnx
labelfile-path=labels.txt
infer-dims=3;64;96
batch-size=1
network-mode=0
network-type=2
num-detected-classes=8
segmentation-threshold=0.0
output-blob-names=probs
"""


@pytest.mark.parametrize("change, problem", [
    ("network-mode=0", None),
    ("network-mode=3", "network-mode: expected one of 0, 1, 2"),
    ("network-mode=1", "without int8-calib-file"),
    ("netwrok-type=2", "unknown key 'netwrok-type'"),
    ("segmentation-threshold=-0.1", "segmentation-threshold: expected a number >= 0.0"),
    ("infer-dims=3;64", "infer-dims: expected 3 values"),
    ("batch-size=2048", "batch-size: expected 1..1024"),
    ("use-dla-core=0", "use-dla-core is set but enable-dla is not 1"),
    ("network-type=0", "network-type must be 2"),
    ("offsets=1;2", "offsets needs 3 values"),
    ("net-scale-factor=0", "net-scale-factor: expected a number > 0"),
])
def test_validate_nvinfer_catches_mistakes(change: str, problem: str | None, tmp_path: Path) -> None:
    key = change.split("=")[0]
    lines = [line for line in VALID.splitlines() if not line.startswith(key + "=")] + [change]
    problems = validate_nvinfer("\n".join(lines) + "\n")
    assert (problems == []) if problem is None else any(problem in p for p in problems), problems
    assert any("onnx-file=model.ds.onnx does not exist" in p for p in validate_nvinfer(VALID, tmp_path))


def test_every_model_precision_has_an_nvinfer_network_mode() -> None:
    assert set(NETWORK_MODES) == set(PRECISIONS)


# ----------------------------------------------------------------------------- Triton

@functools.lru_cache(maxsize=1)
def _model_config_pb2():
    """Triton's ModelConfig schema as tritonclient ships it (tritonclient/grpc/model_config_pb2.py). It is
    loaded from its file because `import tritonclient.grpc` also needs grpcio, which the schema does not."""
    spec = importlib.util.find_spec("tritonclient")
    if spec is None:
        pytest.skip("tritonclient is not installed (pip install tritonclient protobuf)")
    path = Path(spec.submodule_search_locations[0]) / "grpc" / "model_config_pb2.py"
    module_spec = importlib.util.spec_from_file_location("_triton_model_config_pb2", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def _parse_config(path: Path):
    from google.protobuf import text_format

    pb2 = _model_config_pb2()
    return text_format.Parse(path.read_text(), pb2.ModelConfig()), pb2


def test_triton_repositories_parse_with_the_schema(int8_bundle: Path, dyn_bundle: Path, tmp_path: Path) -> None:
    repo = tmp_path / "models"
    res = write_triton(int8_bundle, repo)
    cfg, pb2 = _parse_config(res.out / "config.pbtxt")
    assert cfg.name == res.out.name == "deeplabv3plus_mobilenet_v2_int8" and cfg.platform == "onnxruntime_onnx"
    assert cfg.max_batch_size == 0  # fixed batch: full dims
    assert list(cfg.input[0].dims) == [1, 3, 64, 96] and cfg.input[0].data_type == pb2.TYPE_FP32
    assert cfg.input[0].name == "input" and cfg.output[0].name == "logits"
    assert list(cfg.output[0].dims) == [1, 8, 64, 96] and not cfg.HasField("dynamic_batching")
    assert (res.out / "1" / "model.onnx").read_bytes() == (int8_bundle / "model.int8.onnx").read_bytes()

    res = write_triton(dyn_bundle, repo, model_name="seg")
    cfg, _ = _parse_config(res.out / "config.pbtxt")
    assert cfg.max_batch_size == 8 and list(cfg.input[0].dims) == [3, 64, 96]
    assert list(cfg.output[0].dims) == [8, 64, 96] and cfg.HasField("dynamic_batching")
    assert sorted(p.name for p in repo.iterdir()) == ["deeplabv3plus_mobilenet_v2_int8", "seg"]  # others kept

    def with_engine(m: dict, root: Path) -> None:
        (root / "model.engine").write_bytes(b"placeholder plan")
        m["roles"]["engine"] = "model.engine"
        m["engine"] = {"dla_core": None, "source": "model.onnx",
                       "profile": {"min": [1, 3, 64, 96], "opt": [2, 3, 64, 96], "max": [4, 3, 64, 96]}}

    res = write_triton(_edited_copy(dyn_bundle, tmp_path / "trt", with_engine), repo, model_name="seg_trt")
    cfg, _ = _parse_config(res.out / "config.pbtxt")
    assert cfg.platform == "tensorrt_plan" and cfg.max_batch_size == 4 and list(cfg.input[0].dims) == [3, 64, 96]
    assert (res.out / "1" / "model.plan").read_bytes() == b"placeholder plan"


def test_deploy_cli_and_errors(int8_bundle: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(main, ["deploy", str(int8_bundle), "--deepstream", str(tmp_path / "ds"),
                               "--triton", str(tmp_path / "models"), "--trt-version", "10.3.0"])
    assert res.exit_code == 0, res.output
    assert "DeepStream:" in res.output and "Triton:" in res.output
    assert (tmp_path / "ds" / "calibration.cache").read_text().startswith("TRT-100300-")
    res = runner.invoke(main, ["deploy", str(int8_bundle), "--deepstream", str(tmp_path / "ds"),
                               "--trt-version", "8.6.1"])  # ours: replaced
    assert res.exit_code == 0, res.output
    for version, message in ((None, "pass --trt-version X.Y.Z"), ("11.1.0", "no implicit INT8")):
        res = runner.invoke(main, ["deploy", str(int8_bundle), "--deepstream", str(tmp_path / "ds-x"),
                                   *(["--trt-version", version] if version else [])])
        assert res.exit_code == 2 and res.output.count("\n") == 1 and message in res.output, res.output
        assert not (tmp_path / "ds-x").exists()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    copy = tmp_path / "tampered"
    shutil.copytree(int8_bundle, copy)
    with open(copy / "model.onnx", "ab") as f:
        f.write(b"\0")
    for args, message in [([], "expected --deepstream DIR and/or --triton DIR"),
                          (["--deepstream", str(foreign)], "notes.txt is a file that is not part of an edgeseg deploy")]:
        res = runner.invoke(main, ["deploy", str(int8_bundle), *args])
        assert res.exit_code == 2 and res.output.count("\n") == 1 and message in res.output, res.output
    res = runner.invoke(main, ["deploy", str(int8_bundle), "--deepstream", str(tmp_path / "no" / "such" / "dir"),
                               "--trt-version", "10.3.0"])
    assert res.exit_code == 0 and (tmp_path / "no" / "such" / "dir" / "config_infer_edgeseg.txt").is_file()
    res = runner.invoke(main, ["deploy", str(copy), "--triton", str(tmp_path / "m2")])
    assert res.exit_code == 2 and "model.onnx changed" in res.output
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_deepstream_scaling_filter_follows_the_resize_definition(dyn_bundle: Path, tmp_path: Path) -> None:
    assert read_bundle(dyn_bundle).manifest["preprocessing"]["resize"] == "bilinear", "training records bilinear"
    res = write_deepstream(dyn_bundle, tmp_path / "new")
    text = (tmp_path / "new" / DS_CONFIG).read_text()
    assert "scaling-filter=1\n" in text and "is the same definition" in text
    assert not any("resize" in w for w in res.warnings)
    old = _edited_copy(dyn_bundle, tmp_path / "old", lambda m, root: m["preprocessing"].pop("resize"))
    # a bundle from before the field: pil_bilinear, which nvinfer cannot reproduce
    res = write_deepstream(old, tmp_path / "ds-old")
    text = (tmp_path / "ds-old" / DS_CONFIG).read_text()
    assert "scaling-filter=1\n" in text and "is NOT the same" in text
    assert any("resize=pil_bilinear" in w and "no such filter" in w for w in res.warnings)
    assert "no such filter" in (tmp_path / "ds-old" / "README.md").read_text()


# ----------------------------------------------------------------------------- issue 21: values written are escaped

def test_values_written_into_deploy_files_stay_on_their_line() -> None:
    """config.pbtxt strings are protobuf literals (quotes, backslashes, newlines escaped); comments and headings
    escape what would start a new line; labels.txt refuses a name that is not one printable line."""
    from google.protobuf import text_format

    from edgeseg.pipeline.deploy_io import labels_text, one_line, pbtxt_string

    pb2 = _model_config_pb2()
    for name in ('seg"\ninput [ ]', "a\\b", "caf\u00e9", "tab\there\u2028"):
        cfg = text_format.Parse(f"name: {pbtxt_string(name)}\nplatform: {pbtxt_string('x')}", pb2.ModelConfig())
        assert cfg.name == name and cfg.platform == "x"
        assert "\n" not in one_line(name) and "\u2028" not in one_line(name)
    assert labels_text(["road", "sky"]) == "road\nsky\n"
    with pytest.raises(EdgesegError, match="class 1 name 'sky\\\\nroad' must be one line"):
        labels_text(["road", "sky\nroad", "car"])


def test_a_bundle_folder_name_cannot_inject_config_lines(dyn_bundle: Path, tmp_path: Path) -> None:
    odd = tmp_path / "bundle\nnetwork-mode=1"
    shutil.copytree(dyn_bundle, odd)
    write_deepstream(odd, tmp_path / "ds")
    text = (tmp_path / "ds" / DS_CONFIG).read_text()
    assert "\nnetwork-mode=1\n" not in text and _props(text)["network-mode"] == "0"
    res = write_triton(odd, tmp_path / "models", model_name="seg")
    assert _parse_config(res.out / "config.pbtxt")[0].name == "seg"
    assert (res.out / "config.pbtxt").read_text().splitlines()[0].endswith("(deeplabv3plus_mobilenet_v2, fp32).")
