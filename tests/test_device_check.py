"""Issue 25 point 11: tools/device_check.sh, the one script a GPU machine runs. What can be checked without a GPU:
bash syntax, shellcheck (where installed), the dry run's step list, argument errors, the refusal without a GPU,
and the step runner (summary, pass / fail / timeout) with a stand-in nvidia-smi."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tools" / "device_check.sh"
STEPS = ["env", "gpu_tests", "doctor", "amp_resume", "cuda_kernels", "native_trt"]


def _run(*args: str, env: dict | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def _fake_gpu(tmp_path: Path) -> dict:
    """PATH with a stand-in nvidia-smi (and no real one), so the script believes a GPU is here."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'name, compute_cap'\necho 'Fake GPU, 9.0'\n")
    smi.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHON": sys.executable}


def test_the_script_parses_and_is_shellcheck_clean() -> None:
    assert os.access(SCRIPT, os.X_OK)
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed (apt-get install shellcheck)")
    done = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


def test_the_dry_run_lists_every_step_within_one_call(tmp_path: Path) -> None:
    done = _run("--dry-run", "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    lines = [ln for ln in done.stdout.splitlines() if ln[:1].isdigit()]
    assert [ln.split()[1] for ln in lines] == STEPS
    limits = [int(ln.split("(limit")[1].split("s)")[0]) for ln in lines]
    assert sum(limits) <= 570  # one `run` call on a lent device is at most 600 s
    assert "edgeseg doctor --json" in done.stdout and "cuda_vs_cpu" in done.stdout and "gpu or tensorrt" in done.stdout
    assert not (tmp_path / "out").exists()  # nothing written
    only = _run("--dry-run", "--only", "doctor,env")
    assert [ln.split()[1] for ln in only.stdout.splitlines() if ln[:1].isdigit()] == ["env", "doctor"]


@pytest.mark.parametrize("args, message", [(["--bogus"], "unknown argument '--bogus'"),
                                           (["--only", "doctor,nope"], "unknown step 'nope'")])
def test_bad_arguments_exit_2_in_one_line(args: list[str], message: str) -> None:
    done = _run(*args)
    assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_without_a_gpu_nothing_runs(tmp_path: Path) -> None:
    if shutil.which("nvidia-smi") or Path("/etc/nv_tegra_release").exists():
        pytest.skip("this machine has an NVIDIA GPU")
    done = _run("--out", str(tmp_path / "out"))
    assert done.returncode == 77 and "no NVIDIA GPU" in done.stderr
    assert not (tmp_path / "out").exists()


def test_steps_are_recorded_pass_fail_and_timeout(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = _fake_gpu(tmp_path)
    done = _run("--only", "env", "--out", str(out), env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    log = (out / "env.log").read_text()
    assert "Fake GPU, 9.0" in log and "torch:" in log and "onnxruntime:" in log
    rows = [ln.split("\t") for ln in (out / "summary.tsv").read_text().splitlines()]
    assert rows[0] == ["step", "status", "seconds", "limit"] and rows[1][:2] == ["env", "pass"]
    failing = _run("--only", "doctor", "--out", str(out), env={**env, "PYTHON": "false"})
    assert failing.returncode == 1 and "doctor\tfail(1)" in (out / "summary.tsv").read_text()
    slow = _run("--only", "env", "--out", str(out), env={**env, "STEP_LIMIT_ENV": "0.01"})
    assert slow.returncode == 1 and "env\ttimeout" in (out / "summary.tsv").read_text()
