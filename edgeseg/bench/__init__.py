"""Benchmarking: latency statistics and mIoU per runner (measure), records out (report)."""
