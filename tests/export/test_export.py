"""Export: ONNX Runtime parity with the PyTorch module (static, dynamic, other resolutions), the
argmax head, metadata round trip, torchvision weights, real-frame parity and user errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from _helpers import randomize_bn
from edgeseg.cli import main
from edgeseg.data import Preprocessing
from edgeseg.errors import EdgesegError
from edgeseg.export.metadata import read_onnx_metadata
from edgeseg.export.onnx_export import export_onnx
from edgeseg.models import ModelConfig, build_model

SIZE = (64, 96)
WIDTH = {"deeplabv1_vgg16": 0.125, "unet": 0.125}  # the rest: MobileNetV2 at 0.35


def _model(name: str) -> nn.Module:
    return randomize_bn(build_model(ModelConfig(name, 5, width=WIDTH.get(name, 0.35))))


def _ort(path: Path, x: np.ndarray) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def _torch(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = model(torch.from_numpy(x))
    return (out["out"] if isinstance(out, dict) else out).numpy()


def _x(n: int, hw: tuple[int, int], seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, *hw), dtype=np.float32)


@pytest.mark.parametrize("name, dynamic, other", [
    ("fcn_mobilenet_v2", None, None),
    ("deeplabv3_mobilenet_v2", None, None),
    ("deeplabv3plus_mobilenet_v2", None, None),
    ("fcn8s_mobilenet_v2", "hw", (1, (47, 131))),
    ("deeplabv3_mobilenet_v2", "batch", (3, SIZE)),
    ("deeplabv3plus_mobilenet_v2", "both", (2, (80, 72))),
    ("deeplabv1_vgg16", None, None),
    ("deeplabv2_mobilenet_v2", None, None),
    ("unet", "hw", (1, (47, 131))),  # crops after up-convolutions and ceil-mode pools under dynamic sizes
    ("unet_mobilenet_v2", None, None),
])
def test_onnx_matches_pytorch(name: str, dynamic: str | None, other, tmp_path: Path) -> None:
    model = _model(name)
    out = tmp_path / "m.onnx"
    report = export_onnx(model, out, input_size=SIZE, dynamic=dynamic)
    assert report.ok and report.parity[0].max_abs_diff <= 1e-4
    assert report.input_shape[0] == ("batch" if dynamic in ("batch", "both") else 1)
    assert (report.input_shape[2] == "height") == (dynamic in ("hw", "both"))
    assert len(report.parity) == (2 if dynamic in ("hw", "both") else 1)  # + a second resolution
    # independent check on the written file, at the export shape and (dynamic) another batch / resolution
    x = _x(1, SIZE)
    assert np.abs(_ort(out, x) - _torch(model, x)).max() <= 1e-4
    if other is not None:
        x = _x(other[0], other[1])
        got, ref = _ort(out, x), _torch(model, x)
        assert got.shape == ref.shape == (other[0], 5, *other[1])
        assert np.abs(got - ref).max() <= 1e-4
        assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.9999


def test_export_graph_is_opset_17_with_one_input_and_output(tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    model = _model("deeplabv3plus_mobilenet_v2").train()
    assert export_onnx(model, out, input_size=SIZE).ok  # exported and compared in eval mode
    assert model.training, "the caller's module comes back in the mode it was in"
    m = onnx.load(str(out))
    assert [o.version for o in m.opset_import if o.domain in ("", "ai.onnx")] == [17]
    assert [i.name for i in m.graph.input] == ["input"] and [o.name for o in m.graph.output] == ["logits"]
    ops = {n.op_type for n in m.graph.node}
    assert "BatchNormalization" not in ops and {"Conv", "Resize"} <= ops
    assert not list(tmp_path.glob(".*.tmp")), "the temporary file must be renamed away"


def test_no_fuse_keeps_batchnorm_and_collapse_removes_pointwise_convs(tmp_path: Path) -> None:
    model = _model("deeplabv3plus_mobilenet_v2")
    counts = {}
    for tag, kwargs in {"nofuse": {"fuse": False}, "keep": {"fuse_strategy": "keep"},
                        "collapse": {"fuse_strategy": "collapse"}}.items():
        report = export_onnx(model, tmp_path / f"{tag}.onnx", input_size=SIZE, **kwargs)
        assert report.ok, report.parity
        nodes = onnx.load(str(tmp_path / f"{tag}.onnx")).graph.node
        counts[tag] = {op: sum(n.op_type == op for n in nodes) for op in ("BatchNormalization", "Conv")}
    assert counts["nofuse"]["BatchNormalization"] > 0 and counts["keep"]["BatchNormalization"] == 0
    assert counts["collapse"]["Conv"] == counts["keep"]["Conv"] - 5  # five separable pairs became one conv each


def test_argmax_head_outputs_int32_labels(tmp_path: Path) -> None:
    model = _model("deeplabv3plus_mobilenet_v2")
    out = tmp_path / "labels.onnx"
    report = export_onnx(model, out, input_size=SIZE, argmax=True, dynamic="batch")
    assert report.ok and report.output_name == "labels"
    assert report.parity[-1].max_abs_diff is None and report.parity[-1].argmax_agreement >= 99.99
    m = onnx.load(str(out))
    (output,) = m.graph.output
    assert output.name == "labels" and output.type.tensor_type.elem_type == onnx.TensorProto.INT32
    x = _x(2, SIZE)
    labels = _ort(out, x)
    assert labels.dtype == np.int32 and labels.shape == (2, *SIZE)
    assert (labels == _torch(model, x).argmax(1)).mean() >= 0.9999
    assert read_onnx_metadata(out)["output"] == {"name": "labels", "dtype": "int32", "layout": "NHW"}


def test_metadata_round_trip(tmp_path: Path) -> None:
    prep = Preprocessing(mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3), scale=1 / 255, channel_order="BGR", size=(32, 32))
    classes = ["sky", "road", "car", "person", "tree"]
    palette = [[1, 2, 3], [4, 5, 6], [7, 8, 9], [10, 11, 12], [13, 14, 15]]
    out = tmp_path / "m.onnx"
    export_onnx(_model("fcn_mobilenet_v2"), out, input_size=SIZE, dynamic="hw", bounds={"height": (32, 64, 128)},
                metadata={"model": "fcn_mobilenet_v2", "classes": classes, "palette": palette, "preprocessing": prep})
    meta = read_onnx_metadata(out)
    assert meta["model"] == "fcn_mobilenet_v2" and meta["classes"] == classes and meta["palette"] == palette
    assert Preprocessing.from_dict(meta["preprocessing"]) == Preprocessing(
        mean=prep.mean, std=prep.std, scale=prep.scale, channel_order="BGR", size=SIZE)  # size = the export size
    assert meta["input_size"] == list(SIZE) and meta["dynamic"] == "hw"
    assert meta["shape_bounds"] == {"input": {"min": [1, 3, 32, 48], "opt": [1, 3, 64, 96], "max": [1, 3, 128, 192]}}
    import edgeseg

    assert meta["version"] == edgeseg.__version__ and meta["parity"][0]["ok"] is True
    assert meta["fusion"]["folded_bn"] > 0


def test_default_metadata_has_generic_classes_and_imagenet_preprocessing(tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    export_onnx(_model("fcn_mobilenet_v2"), out, input_size=SIZE)
    meta = read_onnx_metadata(out)
    assert meta["classes"] == [f"class_{i}" for i in range(5)] and len(meta["palette"]) == 5
    assert meta["preprocessing"]["mean"] == [0.485, 0.456, 0.406]


@pytest.mark.parametrize("kwargs, message", [
    ({"dynamic": "width"}, "dynamic must be one of"),
    ({"opset": 11}, "below 13"),
    ({"dynamic": "hw", "bounds": {"height": (70, 64, 128)}}, "1 <= min <= opt <= max"),
    ({"bounds": {"batch": (1, 1, 4)}}, "makes only"),
    ({"metadata": {"classes": ["a", "b"]}}, "2 class names but the model predicts 5"),
    ({"parity_images": [np.zeros((3, 32, 32), np.float32)]}, "parity images must be preprocessed"),
])
def test_bad_export_arguments_are_one_line_errors(kwargs, message: str, tmp_path: Path) -> None:
    with pytest.raises(EdgesegError, match=message) as e:
        export_onnx(_model("fcn_mobilenet_v2"), tmp_path / "m.onnx", input_size=SIZE, **kwargs)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "m.onnx").exists()


def test_output_under_a_file_is_refused_before_any_work(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(EdgesegError, match="is a file"):
        export_onnx(nn.Identity(), tmp_path / "file" / "m.onnx")
    with pytest.raises(EdgesegError, match="is a folder"):
        export_onnx(nn.Identity(), tmp_path)


def test_missing_output_parents_are_created(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b" / "m.onnx"
    assert export_onnx(_model("fcn_mobilenet_v2"), out, input_size=SIZE).ok and out.is_file()


def test_reading_bad_files(tmp_path: Path) -> None:
    good = tmp_path / "good.onnx"
    export_onnx(_model("fcn_mobilenet_v2"), good, input_size=SIZE)
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    text = tmp_path / "text.onnx"
    text.write_text("this is not a model\n")
    noinput = tmp_path / "noinput.onnx"
    graph = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "g",
                                   [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3])],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3])])
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), str(noinput))
    for path, message in [(cut, "truncated"), (text, "truncated, corrupt or not"), (noinput, "no input named 'input'"),
                          (tmp_path / "missing.onnx", "does not exist")]:
        with pytest.raises(EdgesegError, match=message):
            read_onnx_metadata(path)


def _run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_cli_errors_are_one_line_with_exit_code_2(tmp_path: Path) -> None:
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(b"\x08\x07\x12\x04abc")  # a protobuf cut mid-field
    for args, message in [
        (["check", cut], "truncated"),
        (["export", "--model", "fcn_mobilenet_v2", "--num-classes", "3", "--out", tmp_path / "cut.onnx" / "m.onnx",
          "--imagenet-preprocessing"], "is a file"),
        (["export", "--model", "fcn_mobilenet_v2", "--num-classes", "3", "--out", tmp_path / "m.onnx"],
         "records no preprocessing and edgeseg will not guess one"),
        (["export", "--model", "fcn_mobilenet_v2", "--num-classes", "3", "--out", tmp_path / "m.onnx", "--mean",
          "0.5,0.5", "--std", "0.2,0.2,0.2"], "--mean must be 3 comma-separated numbers"),
        (["export", "--out", tmp_path / "m.onnx"], "expected --checkpoint"),
        (["export", "--model", "fcn_resnet50", "--out", tmp_path / "m.onnx"], "needs --num-classes"),
        (["export", "--model", "fcn_mobilenet_v2", "--num-classes", "3", "--out", tmp_path / "m.onnx",
          "--imagenet-preprocessing", "--max-batch", "4"], "--max-batch needs --dynamic"),
    ]:
        res = _run(*args)
        assert res.exit_code == 2, res.output
        assert message in res.output and "Traceback" not in res.output
        assert len(res.output.strip().splitlines()) == 1, res.output


def test_cli_export_json_report(tmp_path: Path) -> None:
    import json

    out = tmp_path / "m.onnx"
    res = _run("export", "--model", "deeplabv3plus_mobilenet_v2", "--num-classes", "4", "--out", out,
               "--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25", "--input-size", "48x64", "--dynamic", "hw", "--min-size", "32x32", "--max-size", "96x128", "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert report["ok"] and report["shape_bounds"]["input"]["min"] == [1, 3, 32, 32]
    pre = read_onnx_metadata(out)["preprocessing"]
    assert pre["mean"] == [0.5, 0.5, 0.5] and pre["std"] == [0.25] * 3 and pre["resize"] == "bilinear"
    assert [b["choice"] for b in report["fusion"]["blocks"]] == ["keep"] * 5
    assert _run("check", out, "--trt", "8.6").exit_code == 0


def test_cli_export_from_checkpoint_carries_its_metadata(tmp_path: Path) -> None:
    from edgeseg.models.checkpoint import Checkpoint, save_checkpoint

    config = ModelConfig("deeplabv3plus_mobilenet_v2", 3, width=0.35)
    model = randomize_bn(build_model(config))
    prep = Preprocessing(mean=(0.4, 0.4, 0.4), std=(0.3, 0.3, 0.3), size=(48, 80))
    ckpt = tmp_path / "best.pt"
    save_checkpoint(ckpt, Checkpoint(config=config, state_dict=model.state_dict(), classes=["a", "b", "c"],
                                     palette=[[1, 1, 1], [2, 2, 2], [3, 3, 3]], preprocessing=prep))
    out = tmp_path / "m.onnx"
    res = _run("export", "--checkpoint", ckpt, "--out", out, "--argmax")
    assert res.exit_code == 0, res.output
    assert "parity 48x80" in res.output and "FAILED" not in res.output
    meta = read_onnx_metadata(out)
    assert meta["classes"] == ["a", "b", "c"] and meta["palette"] == [[1, 1, 1], [2, 2, 2], [3, 3, 3]]
    assert meta["input_size"] == [48, 80] and meta["preprocessing"]["mean"] == [0.4, 0.4, 0.4]
    assert meta["model"] == "deeplabv3plus_mobilenet_v2" and meta["config"]["width"] == 0.35
    x = _x(1, (48, 80))
    assert (_ort(out, x) == _torch(model, x).argmax(1)).mean() >= 0.9999


def _calibrated_torchvision(name: str) -> nn.Module:
    """A torchvision segmentation model conditioned like a trained one (random weights, no download).

    Random weights with identity BatchNorms are numerically far worse than trained ones: float32 itself
    then differs from float64 by ~1e-3 on fcn_resnet50's logits. So, as training does: BatchNorm statistics
    are calibrated on data, residual branches end with small BN gammas (cf. zero_init_residual), and the
    classifier gives logits of a trained model's scale.
    """
    from torchvision.models import segmentation
    from torchvision.models.resnet import Bottleneck

    torch.manual_seed(0)
    tv = getattr(segmentation, name)(weights=None, weights_backbone=None, num_classes=21, aux_loss=False)
    for m in tv.modules():
        if isinstance(m, Bottleneck):
            m.bn3.weight.data.mul_(0.1)
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # cumulative average over the calibration batches
    tv.train()
    with torch.no_grad():
        for _ in range(2):
            tv(torch.randn(2, 3, 64, 64))
        tv.eval()
        # a random head gives logits far beyond a trained model's (std ~24 for deeplabv3_mobilenet_v3_large)
        head = tv.classifier[-1]
        factor = 4.0 / tv(torch.randn(2, 3, 64, 64))["out"].std().item()
        head.weight.mul_(factor)
        head.bias.mul_(factor)
    return tv


@pytest.mark.slow
@pytest.mark.parametrize("name", ["deeplabv3_mobilenet_v3_large", "fcn_resnet50"])
def test_torchvision_weights_export_matches_torchvision(name: str, tmp_path: Path) -> None:
    tv = _calibrated_torchvision(name)
    weights = tmp_path / "weights.pth"
    torch.save(tv.state_dict(), weights)
    out = tmp_path / "tv.onnx"
    res = _run("export", "--model", name, "--weights", weights, "--out", out, "--input-size", "64x80")
    assert res.exit_code == 2 and "edgeseg will not guess one" in res.output and not out.exists()
    res = _run("export", "--model", name, "--weights", weights, "--out", out, "--input-size", "64x80",
               "--imagenet-preprocessing")
    assert res.exit_code == 0, res.output
    x = _x(1, (64, 80))
    got, ref = _ort(out, x), _torch(tv, x)
    assert 1 < ref.std() < 10, "the logits should have a trained model's scale"
    assert np.abs(got - ref).max() <= 1e-4
    meta = read_onnx_metadata(out)
    assert meta["classes"] == [f"class_{i}" for i in range(21)]
    assert meta["preprocessing"]["std"] == [0.229, 0.224, 0.225]


@pytest.mark.camvid
def test_parity_on_real_camvid_frames(camvid_root: Path, tmp_path: Path) -> None:
    from edgeseg.export.onnx_export import parity_images_from_dataset

    images = parity_images_from_dataset(f"camvid:{camvid_root}", "val", 3, Preprocessing(), SIZE)
    assert len(images) == 3 and images[0].shape == (3, *SIZE)
    report = export_onnx(_model("deeplabv3plus_mobilenet_v2"), tmp_path / "m.onnx", input_size=SIZE,
                         parity_images=images)
    (parity,) = report.parity
    assert parity.source == "dataset" and parity.images == 3
    assert parity.ok and parity.max_abs_diff <= 1e-4 and parity.argmax_agreement >= 99.99
