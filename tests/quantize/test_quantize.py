"""INT8 Q/DQ layouts, FP16, calibration manifests, statistics cache and the accuracy guard."""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from onnx import TensorProto, numpy_helper
from PIL import Image
from torch import nn

from _helpers import export_small
from edgeseg.cli import main
from edgeseg.data import Preprocessing, open_dataset
from edgeseg.errors import EdgesegError
from edgeseg.models import ModelConfig, build_model
from edgeseg.export.metadata import PREPROCESSING_KEY
from edgeseg.backends.onnxruntime import OrtRunner
from edgeseg.ort_session import make_session
from edgeseg.quantize.calib_set import (iter_calibration_inputs, iter_manifest_images, load_manifest,
                                        manifest_from_dataset)
from edgeseg.quantize.fp16 import convert_fp16
from edgeseg.quantize.guard import quantize_with_guard
from edgeseg.quantize.histograms import cached_stats, collect_stats, iter_activation_groups
from edgeseg.quantize.ptq import calibration_stats
from edgeseg.quantize.qdq import activation_ranges, fp16_qdq_graph, quantize_qdq
from edgeseg.quantize.sensitivity import rank_layers
from edgeseg.quantize.trt_placement import resizes_left_float

SPEC = "synthetic:64x96"
PRE = Preprocessing()


def _export(model: nn.Module, path: Path, size=(64, 96)) -> Path:
    return export_small(model, path, size, PRE)


@pytest.fixture(scope="module")
def fp32(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = build_model(ModelConfig("deeplabv3plus_mobilenet_v2", 8, width=0.35))
    return _export(model, tmp_path_factory.mktemp("onnx") / "model.onnx")


@pytest.fixture(scope="module")
def stats(fp32: Path):
    manifest = manifest_from_dataset(SPEC, "train", 6, PRE)
    return collect_stats(fp32, iter_calibration_inputs(manifest, PRE))


def iter_activations(onnx_path: Path, inputs) -> Iterator[dict[str, np.ndarray]]:
    """For each input, every FP32 activation at once (few small images only)."""
    current, acts = None, {}
    for index, group in iter_activation_groups(onnx_path, inputs, max_exposed_mb=None):
        if current is not None and index != current:
            yield acts
            acts = {}
        current = index
        acts.update(group)
    if current is not None:
        yield acts


def _consumers(model) -> dict[str, list]:
    out: dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            out.setdefault(i, []).append(n)
    return out


def test_trt_layout_follows_the_tensorrt_placement_rules(fp32: Path, stats, tmp_path: Path) -> None:
    out = quantize_qdq(fp32, tmp_path / "trt.onnx", activation_ranges(stats, "entropy", "trt"), "trt")
    q = onnx.load(str(out))
    inits = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer}
    producers = {o: n for n in q.graph.node for o in n.output}
    consumers = _consumers(q)
    dqs = [n for n in q.graph.node if n.op_type == "DequantizeLinear"]
    assert dqs
    for n in q.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zp = inits[n.input[2]]
            assert zp.dtype == np.int8 and not zp.any(), f"{n.name}: zero point must be int8 0"
    for dq in dqs:
        src = dq.input[0]
        assert not (src in inits and inits[src].dtype == np.int32), f"{dq.name}: int32 bias feeding DequantizeLinear"
        qnode = producers.get(src)
        weight = src if src in inits else (qnode.input[0] if qnode is not None and qnode.input[0] in inits else None)
        if weight is not None:  # a weight: per-channel on the output-channel axis
            (conv,) = consumers[dq.output[0]]
            axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
            assert axis == (0 if conv.op_type == "Conv" else 1)
            assert inits[dq.input[1]].size == inits[weight].shape[axis]
        else:  # an activation: per-tensor, and only feeding ops TensorRT fuses with Q/DQ
            assert inits[dq.input[1]].size == 1
            for c in consumers[dq.output[0]]:
                assert c.op_type in ("Conv", "ConvTranspose", "MaxPool", "AveragePool", "GlobalAveragePool", "Add",
                                     "Resize")
    fp32_model = onnx.load(str(fp32))
    float_resizes = set(resizes_left_float(fp32_model))
    quantized_resizes = 0
    for n in q.graph.node:
        if n.op_type == "Resize":
            # ModelOpt's rule: a Resize fed by Conv(+BN)+activation gets a Q/DQ input, every other stays float
            fed_by_dq = producers[n.input[0]].op_type == "DequantizeLinear"
            assert fed_by_dq == (n.name not in float_resizes), n.name
            quantized_resizes += fed_by_dq
            assert producers[n.output[0]].op_type == "Resize" and all(
                c.op_type != "QuantizeLinear" for c in consumers.get(n.output[0], [])), "no Q/DQ on a Resize output"
        if n.op_type == "Add" and any(producers.get(i) is not None and producers[i].op_type == "Conv" for i in n.input):
            kinds = sorted(producers[i].op_type for i in n.input if i in producers)
            assert kinds == ["Conv", "DequantizeLinear"], f"residual {n.name}: Q/DQ on the identity branch only"
    # DeepLab v3+: the ASPP image-pooling upsample and the decoder upsample (ModelOpt quantizes both);
    # the final logits upsample (fed by the classifier Conv, no activation) stays float
    assert quantized_resizes == 2 and len(float_resizes) == 1
    # no Q/DQ on op outputs: a Conv output is quantized only as the input of the quantized ops that consume it
    for n in q.graph.node:
        if n.op_type == "QuantizeLinear" and n.input[0] in producers and producers[n.input[0]].op_type == "Conv":
            assert not [c for c in consumers[n.input[0]] if c.op_type != "QuantizeLinear"], "float use beside the Q"
            users = [c for dq in consumers[n.output[0]] for c in consumers[dq.output[0]]]
            assert all(u.op_type in ("Conv", "ConvTranspose", "GlobalAveragePool", "Add") for u in users)


def test_cpu_layout_becomes_qlinearconv_in_onnx_runtime(fp32: Path, stats, tmp_path: Path) -> None:
    import onnxruntime as ort

    out = quantize_qdq(fp32, tmp_path / "cpu.onnx", activation_ranges(stats, "percentile", "cpu"), "cpu")
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(out), opts, providers=["CPUExecutionProvider"])
    ops = Counter(n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node)
    assert ops["QLinearConv"] > 0.8 * ops.get("Conv", 0) + ops["QLinearConv"] * 0.8
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(meta["edgeseg.precision"]) == "int8" and PREPROCESSING_KEY in meta


def test_int8_logits_track_fp32(fp32: Path, stats, tmp_path: Path) -> None:
    x = torch.from_numpy(PRE(open_dataset(SPEC, "val")[0][0])[None])
    with OrtRunner(fp32) as runner:
        ref = torch.as_tensor(runner(x))
    for layout in ("trt", "cpu"):
        q = quantize_qdq(fp32, tmp_path / f"{layout}.onnx", activation_ranges(stats, "entropy", layout), layout)
        with OrtRunner(q) as runner:
            got = torch.as_tensor(runner(x))
        sqnr = 10 * torch.log10((ref ** 2).mean() / ((ref - got) ** 2).mean())
        assert sqnr > 15, f"{layout}: SQNR {sqnr:.1f} dB"


def test_fp16_keeps_fp32_io_and_fixes_the_output_cast(fp32: Path, tmp_path: Path) -> None:
    out = convert_fp16(fp32, tmp_path / "fp16.onnx")
    m = onnx.load(str(out))
    assert m.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert m.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert any(i.data_type == TensorProto.FLOAT16 for i in m.graph.initializer)
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 96)).astype(np.float32)
    a = make_session(fp32).run(None, {"input": x})[0]
    b = make_session(out).run(None, {"input": x})[0]
    assert b.dtype == np.float32
    assert np.abs(a - b).max() < 1e-2 * max(1.0, np.abs(a).max())


def test_statistics_are_cached_by_model_and_manifest(fp32: Path, tmp_path: Path) -> None:
    manifest = manifest_from_dataset(SPEC, "train", 3, PRE)
    first, hit1 = cached_stats(fp32, {"manifest": manifest.sha256}, iter_calibration_inputs(manifest, PRE), tmp_path)
    second, hit2 = cached_stats(fp32, {"manifest": manifest.sha256}, iter([]), tmp_path)  # no data needed on a hit
    assert (hit1, hit2) == (False, True)
    name = next(iter(first))
    assert np.array_equal(first[name].hist, second[name].hist) and first[name].maximum == second[name].maximum


def test_bounded_statistics_equal_the_unbounded_pass(fp32: Path) -> None:
    # A budget of 0.1 MB cuts the small DeepLab into many pieces; every statistic must be bit-identical
    # to exposing all activations at once, and no group may exceed the budget unless one node does.
    inputs = [PRE(open_dataset(SPEC, "train")[i][0])[None] for i in range(3)]
    groups = list(iter_activation_groups(fp32, inputs[:1], max_exposed_mb=0.1))
    assert len(groups) > 5
    single_tensor_max = max(v.nbytes for _, g in groups for v in g.values())
    assert all(sum(v.nbytes for v in g.values()) <= max(0.1 * 2 ** 20, 2 * single_tensor_max) for _, g in groups)
    bounded = collect_stats(fp32, inputs, max_exposed_mb=0.1)
    unbounded = collect_stats(fp32, inputs, max_exposed_mb=None)
    assert list(bounded) == list(unbounded)
    for name, a in unbounded.items():
        b = bounded[name]
        assert np.array_equal(a.hist, b.hist) and np.array_equal(a.neg, b.neg), name
        assert (a.minimum, a.maximum, a.bin_width) == (b.minimum, b.maximum, b.bin_width), name


def test_statistics_cache_key_covers_preprocessing_and_changed_images(fp32: Path, tmp_path: Path) -> None:
    root = _folder_dataset(tmp_path / "data")
    manifest = manifest_from_dataset(f"folder:{root}", "train", 3, PRE)
    cache = tmp_path / "cache"
    pre = Preprocessing(size=(64, 96))
    first, hit = calibration_stats(fp32, manifest, pre, cache_dir=cache)
    assert not hit and calibration_stats(fp32, manifest, pre, cache_dir=cache)[1]
    # --mean/--std (or another input size) change every activation: the cached statistics must not be reused
    other = Preprocessing(mean=(0.5, 0.5, 0.5), std=(0.1, 0.1, 0.1), size=(64, 96))
    second, hit = calibration_stats(fp32, manifest, other, cache_dir=cache)
    assert not hit and second["input"].minimum < first["input"].minimum
    # --allow-changed calibrates on the files as they are now, not on what the manifest recorded
    Image.fromarray(np.full((32, 48, 3), 255, np.uint8)).save(root / manifest.images[0]["path"])
    third, hit = calibration_stats(fp32, manifest, pre, allow_changed=True, cache_dir=cache)
    assert not hit and third["input"].maximum > first["input"].maximum
    assert calibration_stats(fp32, manifest, pre, allow_changed=True, cache_dir=cache)[1]


def _folder_dataset(root: Path, n: int = 4) -> Path:
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (32, 48, 3), dtype=np.uint8)).save(root / "images" / f"{i}.png")
        Image.fromarray((rng.integers(0, 3, (32, 48)) if i else np.zeros((32, 48), int)).astype(np.uint8)).save(
            root / "masks" / f"{i}.png")
    return root


def test_manifest_round_trip_and_hash_refusal(tmp_path: Path) -> None:
    root = _folder_dataset(tmp_path / "data")
    manifest = manifest_from_dataset(f"folder:{root}", "train", 3, PRE)
    path = manifest.save(tmp_path)
    loaded = load_manifest(path)
    assert loaded.sha256 == manifest.sha256 and loaded.count == 3
    assert all(not Path(im["path"]).is_absolute() for im in loaded.images)
    assert len(list(iter_manifest_images(loaded))) == 3
    changed = root / loaded.images[0]["path"]
    Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(changed)
    with pytest.raises(EdgesegError, match="changed since the manifest"):
        list(iter_manifest_images(loaded))
    assert len(list(iter_manifest_images(loaded, allow_changed=True))) == 3


def test_stratified_sampling_covers_rare_classes() -> None:
    manifest = manifest_from_dataset(SPEC, "train", 8, PRE)
    assert manifest.classes_covered == list(range(8))


class _OneSensitiveLayer(nn.Module):
    """conv2's input has one channel at ~1000 that conv2 ignores (zero weights): per-tensor INT8 of that
    input crushes the small channels that carry the signal, so conv2 is the one sensitive layer."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 4, 1)
        with torch.no_grad():
            self.conv1.bias[0] = 1000.0
            self.conv2.weight[:, 0] = 0.0
            self.conv2.bias.zero_()
            self.head.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv2(torch.relu(self.conv1(x)))))


def test_guard_keeps_the_sensitive_layer_in_float_and_recovers(tmp_path: Path) -> None:
    fp32 = _export(_OneSensitiveLayer(), tmp_path / "sens.onnx", (32, 32))
    inputs = [np.random.default_rng(i).standard_normal((1, 3, 32, 32)).astype(np.float32) for i in range(4)]
    stats = collect_stats(fp32, inputs)
    ranges = activation_ranges(stats, "minmax", "cpu")
    ranking = rank_layers(onnx.load(str(fp32)), iter_activations(fp32, inputs), ranges, "cpu")
    assert "conv2" in ranking[0].node

    reference = [make_session(fp32).run(None, {"input": x})[0].argmax(1) for x in inputs]

    def agreement_miou(path: Path) -> float:  # mIoU of the candidate's labels against the FP32 labels
        from edgeseg.metrics import ConfusionMatrix

        cm = ConfusionMatrix(4)
        session = make_session(path)
        for x, ref in zip(inputs, reference):
            cm.update(session.run(None, {"input": x})[0].argmax(1), ref)
        return cm.miou()

    report = quantize_with_guard(fp32, tmp_path / "guarded.onnx", ranges, "cpu", agreement_miou, 0.5, ranking)
    assert report.fp32_miou == 100.0
    assert report.fp32_miou - report.int8_miou > 0.5, "the test model should lose accuracy when fully quantized"
    assert report.fits and any("conv2" in n for n in report.excluded)
    assert report.final_miou > report.int8_miou
    assert (tmp_path / "guarded.onnx").is_file()


def test_guard_leaves_no_temporary_file_when_the_final_copy_fails(tmp_path: Path, monkeypatch) -> None:
    import errno
    import shutil

    import edgeseg.quantize.guard as guard

    fp32 = _export(_OneSensitiveLayer(), tmp_path / "sens.onnx", (32, 32))
    inputs = [np.random.default_rng(i).standard_normal((1, 3, 32, 32)).astype(np.float32) for i in range(2)]
    ranges = activation_ranges(collect_stats(fp32, inputs), "minmax", "cpu")
    out = tmp_path / "out"
    out.mkdir()
    real_copy = shutil.copyfile

    def disk_full(src, dst):  # the copy writes part of the file, then the disk is full
        real_copy(src, dst)
        with open(dst, "r+b") as f:
            f.truncate(100)
        raise OSError(errno.ENOSPC, "No space left on device", str(dst))

    monkeypatch.setattr(guard.shutil, "copyfile", disk_full)
    with pytest.raises(EdgesegError, match="No space left on device"):  # one line naming the file (issue 21)
        quantize_with_guard(fp32, out / "guarded.onnx", ranges, "cpu", lambda path: 100.0, 0.5, [])
    assert list(out.iterdir()) == [], "neither a partial model nor a temporary file is left"


def test_cli_calibrate_and_quantize(fp32: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("EDGESEG_CACHE", str(tmp_path / "cache"))
    runner = CliRunner()
    res = runner.invoke(main, ["calibrate", "--onnx", str(fp32), "--data", SPEC, "--count", "4",
                               "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "only 4 calibration images" in res.output  # the calibration-set checks speak
    manifest = next(tmp_path.glob("synthetic-train-4-*.json"))
    res = runner.invoke(main, ["quantize", "--onnx", str(fp32), "--precision", "int8", "--calib", str(manifest),
                               "--layout", "trt", "--trt-cache", str(tmp_path / "calib.cache"),
                               "--out", str(tmp_path / "m.int8.onnx"), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output.strip().splitlines()[-1])
    assert summary["stats_cache_hit"] is False
    assert (tmp_path / "calib.cache").read_text().startswith("TRT-8601-EntropyCalibration2\n")
    res = runner.invoke(main, ["quantize", "--onnx", str(fp32), "--precision", "int8", "--calib", str(manifest),
                               "--calibrator", "mse", "--out", str(tmp_path / "m2.int8.onnx"), "--json"])
    assert json.loads(res.output.strip().splitlines()[-1])["stats_cache_hit"] is True  # another calibrator, no re-run
    res = runner.invoke(main, ["quantize", "--onnx", str(fp32), "--precision", "int8",
                               "--out", str(tmp_path / "nope" / "m.onnx")])
    assert res.exit_code == 2 and "needs --calib" in res.output
    assert not (tmp_path / "nope").exists(), "a refused command creates no folders"
    # --trt-version X.Y.Z writes X.Y.Z's header, labelled with the calibrator that made the table
    res = runner.invoke(main, ["quantize", "--onnx", str(fp32), "--precision", "int8", "--calib", str(manifest),
                               "--layout", "trt", "--calibrator", "minmax", "--trt-cache", str(tmp_path / "c10.cache"),
                               "--trt-version", "10.3.0", "--out", str(tmp_path / "m3.int8.onnx")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "c10.cache").read_text().startswith("TRT-100300-MinMaxCalibration\n")
    for extra, match in ((["--trt-version", "11.1.0"], "no implicit INT8"), (["--calibrator", "mse"], "entropy or minmax")):
        res = runner.invoke(main, ["quantize", "--onnx", str(fp32), "--precision", "int8", "--calib", str(manifest),
                                   "--trt-cache", str(tmp_path / "x.cache"), "--out", str(tmp_path / "m4.onnx"), *extra])
        assert res.exit_code == 2 and match in res.output and len(res.output.strip().splitlines()) == 1, res.output
        assert not (tmp_path / "x.cache").exists() and not (tmp_path / "m4.onnx").exists()


def test_calib_checks_flag_unnormalised_inputs_and_missing_classes() -> None:
    from edgeseg.quantize.calib_checks import calibration_warnings

    frames = [np.full((32, 32, 3), 200, np.uint8)] * 2
    raw = Preprocessing(scale=1.0)  # forgot the /255
    warnings = calibration_warnings(frames, raw, 100, 4, [0, 1, 2], ["a", "b", "c", "d"])
    assert any("0-255 vs 0-1" in w for w in warnings)
    assert any("missing from the calibration set: d" in w for w in warnings)
    assert calibration_warnings([np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)], PRE, 100,
                                4, [0, 1, 2, 3]) == []


def test_fp16_scales_for_strongly_typed_tensorrt(tmp_path: Path) -> None:
    from edgeseg.export.onnx_export import export_onnx

    torch.manual_seed(0)
    model = build_model(ModelConfig("deeplabv3plus_mobilenet_v2", 8, width=0.35))
    pre = Preprocessing(size=(64, 96))
    for opset in (17, 19):
        export_onnx(model, tmp_path / f"o{opset}.onnx", input_size=(64, 96), opset=opset, metadata={"preprocessing": pre})
    inputs = [pre(open_dataset(SPEC, "train")[i][0])[None] for i in range(3)]
    ranges = activation_ranges(collect_stats(tmp_path / "o19.onnx", inputs), "entropy", "trt")
    with pytest.raises(EdgesegError, match="opset >= 19"):
        quantize_qdq(tmp_path / "o17.onnx", tmp_path / "x.onnx", ranges, "trt", fp16_scales=True)
    out = quantize_qdq(tmp_path / "o19.onnx", tmp_path / "q16.onnx", ranges, "trt", fp16_scales=True)
    ref = quantize_qdq(tmp_path / "o19.onnx", tmp_path / "q32.onnx", ranges, "trt")
    q = onnx.load(str(out))
    inits = {i.name: i for i in q.graph.initializer}
    scales = [inits[n.input[1]].data_type for n in q.graph.node
              if n.op_type in ("QuantizeLinear", "DequantizeLinear") and n.input[1] in inits]
    assert scales and set(scales) == {TensorProto.FLOAT16}
    assert q.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert q.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    x = inputs[0]
    a, b = make_session(ref).run(None, {"input": x})[0], make_session(out).run(None, {"input": x})[0]
    assert (a.argmax(1) == b.argmax(1)).mean() > 0.99


# U-Net's INT8 build: tests/bundle/test_build.py::test_int8_bundle_builds_for_unet
@pytest.mark.parametrize("name, width, stride", [("deeplabv1_vgg16", 0.125, None), ("deeplabv2_mobilenet_v2", 0.35, 16)])
def test_seed_models_quantize_to_int8(name: str, width: float, stride: int | None, tmp_path: Path) -> None:
    from _helpers import randomize_bn
    from edgeseg.export.onnx_export import export_onnx

    torch.manual_seed(0)
    fp32 = tmp_path / "model.onnx"
    assert export_onnx(randomize_bn(build_model(ModelConfig(name, 8, stride, width))), fp32, input_size=(64, 96),
                       metadata={"preprocessing": PRE}).ok
    stats = collect_stats(fp32, iter_calibration_inputs(manifest_from_dataset(SPEC, "train", 4, PRE), PRE))
    q = quantize_qdq(fp32, tmp_path / "int8.onnx", activation_ranges(stats, "percentile", "cpu"), "cpu")
    x = torch.from_numpy(PRE(open_dataset(SPEC, "val")[0][0])[None])
    with OrtRunner(fp32) as runner:
        ref = torch.as_tensor(runner(x))
    with OrtRunner(q) as runner:
        got = torch.as_tensor(runner(x))
    sqnr = 10 * torch.log10((ref ** 2).mean() / ((ref - got) ** 2).mean())
    assert sqnr > 15, f"SQNR {sqnr:.1f} dB"
    ops = Counter(n.op_type for n in onnx.load(str(q)).graph.node)
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] >= ops["Conv"]  # every conv's weight quantized


def test_fp16_qdq_graph_from_an_opset_17_export(fp32: Path, stats, tmp_path: Path) -> None:
    """The bundle's mixed INT8 + FP16 graph for TensorRT 11 comes from the opset-17 export (upgraded to 19):
    FP16 scales, same tensor names (the opset-17 statistics apply), close to the FP32-scale Q/DQ graph."""
    from edgeseg.backends.trt_engine import summarize_onnx

    ranges = activation_ranges(stats, "entropy", "trt")
    out = fp16_qdq_graph(fp32, tmp_path / "model.int8.trt16.onnx", ranges)
    ref = quantize_qdq(fp32, tmp_path / "q32.onnx", ranges, "trt")
    q = onnx.load(str(out))
    assert max(o.version for o in q.opset_import if o.domain in ("", "ai.onnx")) >= 19
    summary = summarize_onnx(q)
    assert summary.precision == "int8" and summary.fp16_qdq and not summarize_onnx(onnx.load(str(ref))).fp16_qdq
    x = next(iter_calibration_inputs(manifest_from_dataset(SPEC, "val", 1, PRE), PRE))
    a, b = make_session(ref).run(None, {"input": x})[0], make_session(out).run(None, {"input": x})[0]
    assert (a.argmax(1) == b.argmax(1)).mean() > 0.99
