"""Benchmark statistics, parity metric, Pareto front, JSON schema and skipped backends."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeseg.backends.openvino import openvino_missing
from edgeseg.bench.measure import label_agreement, pareto_front, run_bench
from edgeseg.bundle.build import BuildOptions, build_bundle
from edgeseg.cli import main
from edgeseg.errors import EdgesegError
from edgeseg.timing import latency_stats, time_calls
from edgeseg.train.loop import TrainConfig, train

REQUIRED = {"bundle", "backend", "precision", "batch", "miou", "pixel_acc", "latency_ms_p50", "latency_ms_p90",
            "latency_ms_p99", "fps", "agreement"}


def test_latency_statistics_on_known_samples() -> None:
    s = latency_stats([float(v) for v in range(1, 101)], batch=4)  # 1..100 ms
    assert s.mean_ms == 50.5
    assert s.p50_ms == 50.5  # numpy's linear interpolation between 50 and 51
    assert s.p90_ms == pytest.approx(90.1) and s.p99_ms == pytest.approx(99.01)
    assert s.fps == pytest.approx(4 * 1000 / 50.5) and s.iterations == 100
    with pytest.raises(EdgesegError):
        latency_stats([])


def test_time_calls_meets_both_minimums() -> None:
    calls = []
    samples = time_calls(lambda: calls.append(1), min_iters=7, min_seconds=0.0, warmup=2)
    assert len(samples) == 7 and len(calls) == 9


def test_agreement_counts_differing_pixels() -> None:
    a = np.zeros((10, 20), np.uint8)
    b = a.copy()
    b[0, :13] = 3  # 13 of 200 pixels differ
    assert label_agreement(a, b) == pytest.approx(100 * 187 / 200)
    with pytest.raises(EdgesegError, match="differ in shape"):
        label_agreement(a, b[:5])


def test_pareto_front() -> None:
    pts = [(10.0, 50.0), (5.0, 49.0), (12.0, 49.5), (5.0, 48.0), (20.0, 60.0)]
    assert pareto_front(pts) == [0, 1, 4]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bench")
    ckpt = train(TrainConfig(model="fcn8s_mobilenet_v2", data="synthetic:64x96", width=0.35, batch_size=8, epochs=1,
                             max_train_samples=16, max_val_samples=2, workers=0, out=root / "ckpt"),
                 log=lambda s: None).best_path
    build_bundle(BuildOptions(precision="int8", out=root / "b", checkpoint=ckpt, data="synthetic:64x96",
                              calib_count=4, val_limit=2), log=lambda s: None)
    return root / "b"


def test_bench_json_schema_and_skipped_backend(bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    res = CliRunner().invoke(main, ["bench", str(bundle), "--data", "synthetic:64x96", "--limit", "3",
                                    "--min-iters", "3", "--min-seconds", "0", "--batch", "1",
                                    "--json", str(out), "--csv", str(tmp_path / "r.csv"),
                                    "--plot", str(tmp_path / "r.png")])
    assert res.exit_code == 0, res.output
    records = json.loads(out.read_text())
    assert isinstance(records, list)
    done = [r for r in records if not r["skipped"]]
    expected = {("torch", "fp32"), ("ort", "fp32"), ("ort", "int8")}
    if openvino_missing() is None:  # in dev; without it, skipped with the reason
        expected |= {("openvino", "fp32"), ("openvino", "int8")}
    else:
        assert all("OpenVINO is not installed" in r["skipped"] for r in records if r["backend"] == "openvino")
    assert {(r["backend"], r["precision"]) for r in done} == expected
    for r in done:
        assert REQUIRED <= set(r)
        assert 0 <= r["miou"] <= 100 and 0 <= r["agreement"] <= 100 and r["latency_ms_p50"] > 0
    assert next(r for r in done if r["backend"] == "torch")["agreement"] == 100.0
    for backend in {b for b, _ in expected} - {"torch"}:
        assert next(r for r in done if r["backend"] == backend and r["precision"] == "fp32")["agreement"] > 99.0
    assert {r["inference_precision"] for r in done if r["backend"] == "openvino"} <= {"f32"}  # --ov-precision default
    trt = [r for r in records if r["backend"] == "trt"]
    assert trt and "no TensorRT engine" in trt[0]["skipped"]  # skipped with the reason, not a crash
    assert (tmp_path / "r.png").stat().st_size > 0 and (tmp_path / "r.csv").read_text().startswith("bundle,")


def test_every_bundle_gets_per_class_deltas_as_its_records_are_made(bundle: Path, tmp_path: Path,
                                                                    monkeypatch) -> None:
    """Each record reaches on_record complete (the CLI writes those snapshots), with its per-class IoU
    delta against the same bundle's PyTorch FP32 record: also for the second bundle of a run."""
    monkeypatch.setattr("edgeseg.bench.measure.measured_peak_gflops", lambda threads=0: None)
    second = tmp_path / "second"
    shutil.copytree(bundle, second)
    seen: list[dict] = []
    run_bench([bundle, second], "synthetic:64x96", "val", ["torch", "ort"], [1], limit=2, min_iters=1,
              min_seconds=0.0, on_record=lambda r: seen.append(r.to_dict()))
    done = [r for r in seen if not r["skipped"]]
    assert {Path(r["bundle"]).name for r in done} == {bundle.name, "second"}
    for r in done:
        assert set(r["per_class_iou_delta"]) == set(r["per_class_iou"]), (r["bundle"], r["backend"])
        if r["backend"] == "torch":
            assert all(d in (0.0, None) for d in r["per_class_iou_delta"].values())
