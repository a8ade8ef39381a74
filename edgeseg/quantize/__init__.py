"""Calibration sets, activation statistics, calibrators, INT8 Q/DQ and FP16 ONNX, the mIoU guard, TensorRT calibration caches."""
