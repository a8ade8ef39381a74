"""Segmentation models: DeepLab v3 / v3+ and FCN on ResNet, MobileNet and aligned Xception backbones."""
from edgeseg.models.complexity import Complexity, measure_complexity
from edgeseg.models.registry import MODEL_NAMES, TORCHVISION_NAMES, ModelConfig, build_model, split_name
from edgeseg.models.torchvision_import import load_torchvision_state_dict

__all__ = ["MODEL_NAMES", "TORCHVISION_NAMES", "ModelConfig", "build_model", "split_name", "Complexity",
           "measure_complexity", "load_torchvision_state_dict"]
