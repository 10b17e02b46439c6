"""cifar_resnet: residual networks under 5M parameters, trained from scratch on CIFAR-10.

The library is layered, each layer importing only those before it:

    config, run_folder, formats   the configuration reader; what a run folder holds; how numbers are written;
    files                         folders and files the user names: folder names, atomic writes, own files
    notebook_setup                the notebooks' set-up: install on a fresh runtime, where data and runs are kept
    models, data/                 the ResNet family and the budget; CIFAR-10, the GPU loader, augmentation
    evaluation/                   a network in inference: device, test-time views, a run's weights, corruptions
    training/                     the engine and its parts, whether a run should start, disconnect-proof sessions
    studies/                      the search, sweeps of runs, the speed run
    reporting/                    recorded runs, tables, figures, the paper
    cli                           the `cifar-resnet` command

The names below are the package's face, so that a notebook reads `from cifar_resnet import train` wherever
the module behind a name lives. They are imported when first used: importing the package loads no module
of its own, and nothing heavier than torch is loaded until a plotting or search function is called.
"""

from __future__ import annotations

import importlib

# name -> module (below cifar_resnet) that defines it
_FACE = {
    "Config": "config", "ConfigError": "config", "DataConfig": "config", "ModelConfig": "config",
    "TrainConfig": "config", "load_config": "config", "override": "config", "save_config": "config",
    "PARAMETER_BUDGET": "models", "OverBudgetError": "models", "ResNet": "models", "count_parameters": "models",
    "create_model": "models",
    "CLASSES": "data.cifar10", "CIFAR10Split": "data.cifar10", "DataError": "data.cifar10",
    "load_cifar10": "data.cifar10", "write_synthetic_cifar10": "data.cifar10", "GpuLoader": "data.gpu_loader",
    "read_images": "data.user_images",
    "evaluate_run": "evaluation.evaluate", "load_run": "evaluation.evaluate", "predict": "evaluation.predict_images",
    "train": "training.engine", "Trainer": "training.engine", "train_in_sessions": "training.session",
    "record_run": "reporting.records",
}

__all__ = sorted(_FACE)


def __getattr__(name: str):
    if name in _FACE:
        value = getattr(importlib.import_module(f".{_FACE[name]}", __name__), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'cifar_resnet' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_FACE))
