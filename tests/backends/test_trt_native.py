"""The C++ TensorRT backend: its logger (native/src/backends/tensorrt_logger.hpp), one per process and never
destroyed, and its platform check.

TensorRT keeps the first logger it is given for every later builder / runtime (NVIDIA/TensorRT#1475: "TensorRT
maintains only a single logger pointer at any given time"). The old backend owned a logger per runner, so a
second runner's errors went to the first runner's logger, and after the first runner was destroyed TensorRT
called a destroyed object. The harness below plays libnvinfer's part (it keeps the first logger pointer, as the
fakes of tests/_trt_fakes.py do) and is compiled against every TensorRT header set in
../shared/third_party/tensorrt (8.6, 10.3, 11.1); no TensorRT library is linked.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BACKEND = REPO / "native" / "src" / "backends"
HEADER_SETS = sorted((REPO.parent / "shared" / "third_party" / "tensorrt").glob("*/include"))
CUDA_INCLUDE = Path("/usr/local/cuda/include")

HARNESS = r"""
#include "tensorrt_logger.hpp"

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <thread>

using Severity = nvinfer1::ILogger::Severity;
static nvinfer1::ILogger* g_kept = nullptr;  // libnvinfer: the one logger pointer of the process

static void create_runtime(nvinfer1::ILogger& logger) {  // createInferRuntime / createInferBuilder
  if (!g_kept) g_kept = &logger;
}

struct Runner {  // what the backend does: hand TensorRT the process logger, read errors since a mark
  edgeseg::trt::ProcessLogger& logger = edgeseg::trt::process_logger();
  Runner() { create_runtime(logger); }
};

#define CHECK(c) do { if (!(c)) { std::printf("FAILED %s (line %d)\n", #c, __LINE__); return 1; } } while (0)

int main() {
  std::atexit([] { if (g_kept) g_kept->log(Severity::kERROR, "logged during exit"); });
  auto first = std::make_unique<Runner>();
  Runner second;
  first.reset();  // the first runner is gone; TensorRT still holds the pointer it was given
  const auto mark = second.logger.mark();
  CHECK(second.logger.last_error(mark) == "no error logged");
  g_kept->log(Severity::kERROR, "second runner: cannot deserialize");
  CHECK(second.logger.last_error(mark) == "second runner: cannot deserialize");
  g_kept->log(Severity::kWARNING, "a warning is not an error");
  CHECK(second.logger.last_error(mark) == "second runner: cannot deserialize");
  const auto later = second.logger.mark();
  std::thread([] { g_kept->log(Severity::kINTERNAL_ERROR, "another thread"); }).join();
  CHECK(second.logger.last_error(later) == "another thread");
  g_kept->log(Severity::kERROR, "this thread");
  CHECK(second.logger.last_error(later) == "this thread");
  CHECK(&edgeseg::trt::process_logger() == g_kept);
  std::printf("OK\n");
  return 0;
}
"""


def _compiler() -> str:
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    if not (CUDA_INCLUDE / "cuda_runtime_api.h").is_file():
        pytest.skip(f"no CUDA headers in {CUDA_INCLUDE} (TensorRT's headers include cuda_runtime_api.h)")
    return cxx


@pytest.mark.parametrize("headers", HEADER_SETS, ids=[h.parent.name for h in HEADER_SETS])
def test_one_process_logger_hears_every_runner(tmp_path, headers):
    cxx = _compiler()
    (tmp_path / "harness.cpp").write_text(HARNESS)
    exe = tmp_path / "harness"
    build = subprocess.run([cxx, "-std=c++17", "-Wall", "-Wextra", "-pthread", "-isystem", str(headers), "-isystem",
                            str(CUDA_INCLUDE), "-I", str(BACKEND), str(tmp_path / "harness.cpp"), "-o", str(exe)],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-3000:]
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout.strip() == "OK", run.stdout + run.stderr


def test_the_backend_uses_the_process_logger_and_checks_every_address():
    """No logger member of its own, the process logger handed to createInferRuntime, errors read since a mark,
    and setTensorAddress's result checked (it was ignored)."""
    source = (BACKEND / "tensorrt_backend.cpp").read_text()
    assert "class Logger" not in source and re.search(r"ProcessLogger& logger_ = trt::process_logger\(\)", source)
    assert "createInferRuntime(logger_)" in source and "last_error()" not in source
    assert not re.search(r"^\s*context_->setTensorAddress", source, re.M)  # only inside bind(), result checked
    assert "if (!context_->setTensorAddress(" in source


def test_the_backend_refuses_plans_of_another_platform_and_hardware_compatible_plans_on_jetson():
    """edgeseg.backends.trt_api.platform_problems, in C++: the manifest's engine.platform (read by bundle.cpp) is
    compared with this machine's OS, architecture and L4T; the old backend compared versions and GPUs only."""
    source = (BACKEND / "tensorrt_backend.cpp").read_text()
    assert "for (auto& p : platform_problems(*bundle.engine()))" in source
    assert '"/etc/nv_tegra_release"' in source and "not portable across platforms" in source
    bundle = (REPO / "native" / "src" / "bundle.cpp").read_text()
    assert 'r.platform_arch = pl.value("arch"' in bundle
