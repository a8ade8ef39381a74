"""The one ONNX Runtime session builder: runners, export parity checks, calibration statistics,
deployment configs and the roofline measurement all open their sessions here, so every session
flushes denormals and logs quietly. A common module because export (the parity check) sits below
backends in the stage order."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.errors import EdgesegError
from edgeseg.io_utils import require_file


def make_session(model: str | Path | bytes, threads: int = 0, providers: list[str] | None = None,
                 spinning: bool = True, *, optimize: bool = True, memory_arena: bool = True):
    """An InferenceSession for an ONNX file path or serialized model bytes; ``threads`` 0 lets ORT choose.

    ``spinning=False`` stops idle intra-op threads from busy-waiting: required when several
    sessions (or PyTorch) share the cores in one loop, e.g. interleaved benchmarks, where a spinning
    pool steals the next session's CPU (measured here: FP32 62 ms spinning vs 28 ms not).
    ``optimize=False`` disables graph optimizations so every tensor keeps its name (calibration);
    ``memory_arena=False`` returns freed buffers to the OS instead of keeping the peak for reuse."""
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.enable_cpu_mem_arena = memory_arena
    # Trained segmentation nets produce denormal activations; on x86 they are ~100x slower to
    # compute and numerically irrelevant (< 1.2e-38), so flush them to zero.
    opts.add_session_config_entry("session.set_denormal_as_zero", "1")
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    source = model if isinstance(model, bytes) else str(require_file(model, "ONNX file", "pass an ONNX model file"))
    try:
        return ort.InferenceSession(source, opts, providers=providers or ["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for corrupt files
        what = "the model" if isinstance(model, bytes) else str(model)
        raise EdgesegError(f"ONNX Runtime cannot load {what} ({str(e).splitlines()[0][:200]}); "
                           "expected a valid ONNX model; re-export it") from None


def median_latency_ms(path: str | Path, shape: tuple[int, ...], runs: int = 20, warmup: int = 3,
                      threads: int = 0) -> float:
    """Median wall time of one session.run on random input of ``shape``."""
    from edgeseg.timing import time_calls

    session = make_session(path, threads)
    feed: dict[str, Any] = {session.get_inputs()[0].name: np.random.default_rng(0).standard_normal(shape,
                                                                                                  dtype=np.float32)}
    return float(np.median(time_calls(lambda: session.run(None, feed), runs, 0.0, warmup)))
