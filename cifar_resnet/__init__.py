"""cifar_resnet: residual networks under 5M parameters, trained from scratch on CIFAR-10.

Importing the package loads torch and nothing heavier: plotting and search libraries are imported only by
the modules that need them (`plots`, `search`).
"""

from .config import Config, ConfigError, DataConfig, ModelConfig, TrainConfig, load_config, save_config
from .data.cifar10 import CIFAR10Split, CLASSES, DataError, load_cifar10, write_synthetic_cifar10
from .data.gpu_loader import GpuLoader
from .models import OverBudgetError, PARAMETER_BUDGET, ResNet, count_parameters, create_model

__all__ = [
    "CLASSES", "CIFAR10Split", "Config", "ConfigError", "DataConfig", "DataError", "GpuLoader", "ModelConfig",
    "OverBudgetError", "PARAMETER_BUDGET", "ResNet", "TrainConfig", "count_parameters", "create_model",
    "load_cifar10", "load_config", "save_config", "write_synthetic_cifar10",
]
