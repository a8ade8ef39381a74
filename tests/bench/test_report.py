"""Bench records carry the device they were measured on, and a plot refuses figures of different device setups
(issue 25.10: never compare across power modes by mistake). Device records come from fixtures (tests/backends/
test_trt_device.py builds the Jetson trees)."""
from __future__ import annotations

import csv
import json

import pytest

from edgeseg.backends import trt_device
from edgeseg.bench.report import machine_description, with_machine, write_csv, write_json, write_plot
from edgeseg.errors import EdgesegError

from _trt_fakes import jetson_tree, no_commands

VERSIONS = {"tensorrt": "10.3.0", "cuda": "12.6", "cudnn": "9.3.0"}


def _record(bundle="b", latency=5.0):
    return {"bundle": bundle, "backend": "trt", "precision": "int8", "batch": 1, "miou": 60.0,
            "latency_ms_p50": latency, "skipped": None, "per_class_iou": {"road": 90.0}}


@pytest.fixture
def machines(tmp_path):
    maxn = trt_device.device_record(jetson_tree(tmp_path / "maxn", pmode=0), run=no_commands, versions=VERSIONS)
    w15 = trt_device.device_record(jetson_tree(tmp_path / "w15", pmode=1, gpu_hz=(420750000, 306000000, 420750000)),
                                   run=no_commands, versions=VERSIONS)
    return machine_description(maxn), machine_description(w15)


def test_written_records_carry_the_device_record(machines, tmp_path):
    maxn, _ = machines
    write_json([_record()], tmp_path / "r.json", machine=maxn)
    write_csv([_record()], tmp_path / "r.csv", machine=maxn)
    (record,) = json.loads((tmp_path / "r.json").read_text())
    device = record["machine"]["device"]
    assert device["power_mode"] == {"id": 0, "name": "MAXN"} and device["jetpack"] == "6.1"
    assert device["gpu_clock_mhz"]["max"] == 1300.5 and device["tensorrt"] == "10.3.0"
    (row,) = csv.DictReader((tmp_path / "r.csv").open())
    assert "nvpmodel MAXN (0)" in row["device_setup"] and "machine" not in row


def test_a_plot_refuses_figures_of_two_power_modes(machines, tmp_path):
    maxn, w15 = machines
    records = with_machine([_record("orin-maxn")], maxn) + with_machine([_record("orin-15w", 9.0)], w15)
    with pytest.raises(EdgesegError, match=r"different device setups \(nvpmodel power mode MAXN \(0\) vs MODE_15W"):
        write_plot(records, tmp_path / "p.png")
    write_plot(with_machine([_record("a"), _record("b", 6.0)], maxn), tmp_path / "ok.png")
    assert (tmp_path / "ok.png").stat().st_size > 0


def test_this_machines_description_has_a_device_record():
    device = machine_description()["device"]
    assert {"platform", "tensorrt", "cuda", "cudnn"} <= set(device)
