"""`edgeseg doctor`: the first command on a Jetson or GPU box. It reports what the machine has
(``environment``: versions, DLA, the device record), checks the CPU paths on a tiny synthetic model
(``tiny``), then, where TensorRT is present, builds and runs FP32 / FP16 / INT8 engines of that model with a
dynamic-shape profile, compares them with ONNX Runtime and asks the engine inspector whether INT8 really runs
(``engines``). One row per check: PASS / FAIL / SKIPPED with the reason and the fix (``report``).

Stage: above export, backends and quantize (it uses all three), beside bundle, below the CLI."""
from edgeseg.doctor.engines import run_doctor
from edgeseg.doctor.report import FAIL, PASS, SKIPPED, Check, Report

__all__ = ["Check", "FAIL", "PASS", "Report", "SKIPPED", "run_doctor"]
