"""What a training run is asked to do (``TrainConfig``) and the choices its options take. No torch
here: the CLI reads the choices at start-up."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

OPTIMIZERS = ("sgd", "adamw")  # SGD (Nesterov, momentum 0.9) or AdamW
CLASS_WEIGHTS = ("none", "median")  # none, or median-frequency balancing over the training set


@dataclass
class TrainConfig:
    model: str
    data: str | list[str]  # one spec or several with the same classes, trained (and validated) together
    out: Path
    epochs: int = 30
    batch_size: int = 8  # per process
    lr: float | None = None  # default: 0.01 for SGD, 1e-3 for AdamW
    optimizer: str = "sgd"  # one of OPTIMIZERS
    weight_decay: float = 1e-4
    crop: tuple[int, int] | None = None  # training crop (H, W); default: the input size / frame size
    input_size: tuple[int, int] | None = None  # network input (H, W) at eval/deploy; None = frame size
    scale: tuple[float, float] = (0.5, 2.0)
    class_weights: str = "none"  # one of CLASS_WEIGHTS
    output_stride: int | None = None
    width: float = 1.0
    separable: bool | None = None
    workers: int = 1
    seed: int = 0
    resume: bool = False
    device: str = "auto"
    amp: bool | None = None  # default: on for CUDA
    val_split: str = "val"  # "none": no validation, best.pt is the last epoch
    train_split: str = "train"  # or several joined by "+", e.g. "train+val"
    pretrained: str = "none"  # imagenet | FILE (classification state_dict) | none
    init: Path | None = None  # edgeseg checkpoint or segmentation state_dict to fine-tune from
    freeze_backbone: int = 0  # epochs with the backbone frozen (weights and BatchNorm statistics)
    sync_bn: bool = True  # SyncBatchNorm when more than one process
    ema: float | None = None  # decay of an exponential moving average of the weights, e.g. 0.999
    max_train_samples: int | None = None  # for smoke tests
    max_val_samples: int | None = None
    overwrite: bool = False  # replace ``out`` even when it holds files that are not an earlier run's

    @property
    def specs(self) -> list[str]:
        """The dataset specs, one or several."""
        return [self.data] if isinstance(self.data, str) else list(self.data)

    @property
    def validates(self) -> bool:
        return self.val_split != "none"
