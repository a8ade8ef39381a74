"""The device record (edgeseg.backends.trt_device) read from fixtures of what a Jetson has: /etc/nv_tegra_release,
/etc/nvpmodel.conf, /var/lib/nvpmodel/status and `nvpmodel -q`, the GPU's devfreq and the EMC's BPMP clock files,
at the paths jetson_stats (rbonghi/jetson_stats jtop/core) reads; and the comparison that keeps figures of
different power modes apart."""
from __future__ import annotations

import pytest

from edgeseg.backends import trt_device

from _trt_fakes import TEGRA_35_2, jetson_tree, no_commands

VERSIONS = {"tensorrt": "10.3.0", "cuda": "12.6", "cudnn": "9.3.0"}


def test_a_jetson_record_from_its_files(tmp_path):
    record = trt_device.device_record(jetson_tree(tmp_path), run=no_commands, versions=VERSIONS)
    assert record["platform"]["jetson"] is True
    assert (record["l4t"], record["jetpack"]) == ("36.4.0", "6.1")
    assert record["power_mode"] == {"id": 0, "name": "MAXN"}  # /var/lib/nvpmodel/status named by nvpmodel.conf
    assert record["gpu_clock_mhz"] == {"cur": 1300.5, "min": 306.0, "max": 1300.5}
    assert record["emc_clock_mhz"] == {"cur": 3199.0, "min": 204.0, "max": 3199.0}
    assert record["jetson_clocks"] is False  # the GPU's min is not pinned to its max
    assert record["tensorrt"] == "10.3.0" and record["cudnn"] == "9.3.0"
    assert trt_device.setup_summary(record).startswith("Jetson JetPack 6.1 (L4T 36.4.0), nvpmodel MAXN (0), "
                                                       "jetson_clocks off, GPU 1300.5 MHz, EMC 3199.0 MHz")


def test_nvpmodel_q_and_dpkg_take_precedence(tmp_path):
    outputs = {"nvpmodel": "NVPM WARN: fan mode is not set!\nNV Power Mode: MODE_30W\n2\n",
               "dpkg-query": "6.2.1+b38"}
    record = trt_device.device_record(jetson_tree(tmp_path, pmode=0), run=lambda argv: outputs.get(argv[0]),
                                      versions=VERSIONS)
    assert record["power_mode"] == {"id": 2, "name": "MODE_30W"} and record["jetpack"] == "6.2.1"


def test_jetson_clocks_on_pins_the_gpu_at_its_maximum(tmp_path):
    on = jetson_tree(tmp_path / "on", gpu_hz=(1300500000, 1300500000, 1300500000))
    assert trt_device.device_record(on, run=no_commands, versions=VERSIONS)["jetson_clocks"] is True
    xavier = jetson_tree(tmp_path / "xavier", tegra=TEGRA_35_2, gpu_node="17000000.gv11b", gpu_name="gv11b",
                         gpu_hz=(1377000000, 1377000000, 1377000000), emc_hz=(1600000000, 204000000, 2133000000))
    record = trt_device.device_record(xavier, run=no_commands, versions=VERSIONS)
    assert record["jetpack"] == "5.1" and record["gpu_clock_mhz"]["max"] == 1377.0
    assert record["jetson_clocks"] is False  # EMC below its maximum


def test_unreadable_facts_are_none_not_errors(tmp_path):
    root = jetson_tree(tmp_path)
    for rel in ("var/lib/nvpmodel/status", "sys/kernel/debug/bpmp/debug/clk/emc/rate"):
        (root / rel).unlink()  # debugfs is root only; nvpmodel may never have run
    record = trt_device.device_record(root, run=no_commands, versions=VERSIONS)
    assert record["power_mode"] is None and record["emc_clock_mhz"] is None and record["jetson_clocks"] is False


def test_a_discrete_gpu_machine_records_platform_and_versions_only(tmp_path):
    record = trt_device.device_record(tmp_path, run=no_commands, versions=VERSIONS)
    assert set(record) == {"platform", "tensorrt", "cuda", "cudnn"} and record["platform"]["jetson"] is False


@pytest.mark.parametrize("system,machine,expected", [("linux", "x86_64", ("linux", "x86_64")),
                                                     ("win32", "AMD64", ("win32", "x86_64")),
                                                     ("win32", "ARM64", ("win32", "aarch64")),
                                                     ("linux", "aarch64", ("linux", "aarch64"))])
def test_platform_record_spells_os_and_arch_one_way(tmp_path, system, machine, expected):
    record = trt_device.platform_record(tmp_path, system, machine)
    assert (record["os"], record["arch"], record["jetson"]) == (*expected, False)


def test_figures_of_different_power_modes_are_not_comparable(tmp_path):
    a = trt_device.device_record(jetson_tree(tmp_path / "a", pmode=0), run=no_commands, versions=VERSIONS)
    b = trt_device.device_record(jetson_tree(tmp_path / "b", pmode=1, gpu_hz=(420750000, 306000000, 420750000)),
                                 run=no_commands, versions=VERSIONS)
    diff = trt_device.differences(a, b)
    assert "nvpmodel power mode MAXN (0) vs MODE_15W (1)" in diff and "GPU max clock 1300.5 vs 420.8 MHz" in diff
    assert trt_device.differences(a, dict(a)) == []
    assert trt_device.differences(a, {"platform": a["platform"]}) == []  # an older record lacks the facts


@pytest.mark.parametrize("code,text", [(90300, "9.3.0"), (8907, "8.9.7"), (None, None)])
def test_cudnn_version_code(code, text):
    assert trt_device.cudnn_text(code) == text
