"""Training (single process or torchrun DDP) and evaluation (confusion matrix, mIoU)."""
