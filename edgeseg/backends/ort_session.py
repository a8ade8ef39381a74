"""Where backends code has always imported the ONNX Runtime session builder from; the builder itself
lives in the common module ``edgeseg.ort_session`` (export's parity check needs it too)."""
from edgeseg.ort_session import make_session, median_latency_ms

__all__ = ["make_session", "median_latency_ms"]
