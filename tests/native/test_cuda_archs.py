"""Issue 25 point 8: the CUDA kernels carry a kernel image for the GPUs users have (SASS for 7.2 where the nvcc
still builds it, 7.5, 8.0, 8.6, Orin 8.7, 8.9, 9.0) and PTX for later ones, proved with cuobjdump on the built
library; each call sets the device it was given. Builds only the kernels (OpenVINO, TensorRT and the tests
off). Skips without nvcc or cuobjdump (pip install nvidia-cuda-cuobjdump; it is in the dev extra)."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "native" / "python"))

from edgeseg_native import NativeUnavailable, build_native  # noqa: E402

NVCC = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if Path("/usr/local/cuda/bin/nvcc").exists() else None)
USERS_GPUS = {75, 80, 86, 87, 89, 90}  # + 72 (Xavier) where nvcc still has it (CUDA < 13)


def _cuobjdump() -> str | None:
    found = shutil.which("cuobjdump")
    if found:
        return found
    if NVCC and (Path(NVCC).resolve().parent / "cuobjdump").exists():
        return str(Path(NVCC).resolve().parent / "cuobjdump")
    for site in map(Path, sys.path):
        hits = sorted(site.glob("nvidia/cu*/bin/cuobjdump"))
        if hits:
            return str(hits[-1])
    return None


def _nvcc_version() -> tuple[int, int]:
    out = subprocess.run([NVCC, "--version"], capture_output=True, text=True).stdout
    major, minor = re.search(r"release (\d+)\.(\d+)", out).groups()
    return int(major), int(minor)


@pytest.fixture(scope="module")
def kernels(tmp_path_factory):
    if NVCC is None:
        pytest.skip("no nvcc: the CUDA kernels are not built here")
    tool = _cuobjdump()
    if tool is None:
        pytest.skip("no cuobjdump (pip install nvidia-cuda-cuobjdump, or the CUDA toolkit's)")
    build = tmp_path_factory.mktemp("cuda-build")
    try:
        native = build_native(build, extra=["-DEDGESEG_OPENVINO=OFF", "-DEDGESEG_TENSORRT=OFF",
                                            "-DEDGESEG_TESTS=OFF"])
    except NativeUnavailable as e:
        pytest.skip(f"native runtime not built: {e}")
    (library,) = build.rglob("libedgeseg_cuda.a")
    return native, library, tool


def _listing(tool: str, flag: str, library: Path) -> set[int]:
    out = subprocess.run([tool, flag, str(library)], capture_output=True, text=True, check=True).stdout
    return {int(m) for m in re.findall(r"sm_(\d+)", out)}


def test_the_kernels_carry_sass_for_the_users_gpus_and_ptx_for_later_ones(kernels) -> None:
    """Before: sm_87 and sm_90 only, so a T4, A100, RTX 30 or L4 got "no kernel image is available"."""
    native, library, tool = kernels
    expected = USERS_GPUS | ({72} if _nvcc_version() < (13, 0) else set())
    assert _listing(tool, "--list-elf", library) == expected
    assert _listing(tool, "--list-ptx", library) == {90}  # JIT for Blackwell (10.x, 12.x) and later
    assert native.features["cuda_architectures"] == [*(f"{a}-real" for a in sorted(expected - {90})), "90"]


def test_an_explicit_architecture_list_wins(tmp_path: Path) -> None:
    if NVCC is None or _cuobjdump() is None:
        pytest.skip("no nvcc or cuobjdump")
    try:
        native = build_native(tmp_path, extra=["-DEDGESEG_OPENVINO=OFF", "-DEDGESEG_TENSORRT=OFF",
                                               "-DEDGESEG_TESTS=OFF",
                                               "-DCMAKE_CUDA_ARCHITECTURES=87-real"])
    except NativeUnavailable as e:
        pytest.skip(f"native runtime not built: {e}")
    (library,) = tmp_path.rglob("libedgeseg_cuda.a")
    assert _listing(_cuobjdump(), "--list-elf", library) == {87}
    assert native.features["cuda_architectures"] == ["87-real"]


def test_each_call_takes_the_device(kernels) -> None:
    """The public calls take the GPU index and set it for the launch (native/tests/test_cuda.cu runs it on every
    GPU of a device); before, they launched on whatever device the calling thread had current."""
    _, library, _ = kernels
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("no nm")
    out = subprocess.run([nm, "-C", "--defined-only", str(library)], capture_output=True, text=True).stdout
    signatures = [line.split(" T ", 1)[1] for line in out.splitlines()
                  if " T edgeseg::cuda::" in line and "(anonymous namespace)" not in line]
    assert sorted(s.split("(")[0] for s in signatures) == ["edgeseg::cuda::labels_from_logits",
                                                           "edgeseg::cuda::preprocess"]
    assert all(s.endswith("void*, int)") for s in signatures), signatures
    source = (REPO / "native" / "src" / "cuda" / "kernels.cu").read_text()
    assert source.count("const DeviceGuard on(device);") == 2 and "cudaSetDevice(device)" in source
