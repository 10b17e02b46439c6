"""Evaluating networks: test-time views, predictions, and reloading a run folder's weights (checksum-verified)."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .. import fingerprint, run_folder
from ..config import Config, load_config
from ..data.cifar10 import BATCH_DIR, load_splits
from ..data.gpu_loader import GpuLoader
from ..models import create_model
from ..runtime import autocast, default_device, resolve_device, resolve_precision


def tta_views(x: torch.Tensor, mode: str) -> list[tuple[torch.Tensor, float]]:
    """The test-time views of a normalised batch and their weights: identity, flip, and 1-pixel translates
    (`mode` as `train.tta` allows it, checked when the configuration was read)."""
    if mode == "none":
        return [(x, 1.0)]
    views = [(x, 0.5), (x.flip(-1), 0.5)]
    if mode == "flip_translate":  # as airbench: half the weight on the plain views, a quarter on each shift
        padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
        up_left, down_right = padded[..., :-2, :-2], padded[..., 2:, 2:]
        views = [(v, w * 0.5) for v, w in views] + [(up_left, 0.125), (up_left.flip(-1), 0.125),
                                                    (down_right, 0.125), (down_right.flip(-1), 0.125)]
    return views


def half_rounded(model: nn.Module) -> nn.Module:
    """A copy of `model` whose floating-point weights and buffers are rounded to half precision, as
    `run_folder.save_weights` stores them."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.half().float())
    return model


@torch.no_grad()
def predict_views(model: nn.Module, loader: GpuLoader, tta: str = "none", precision: str = "fp32", *,
                  device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logits (N, classes) of the loader's images in order, without test-time augmentation and, unless `tta`
    is "none", averaged over its views; each view is computed once (the plain one serves both). `loader` may
    be any iterable of its batches (a progress bar over it) where `device` names the loader's."""
    model.eval()
    device = device or loader.device
    precision = resolve_precision(precision, device)  # once: "auto" becomes what this device computes in
    plain, averaged = [], []
    for x, _ in loader:
        with autocast(device, precision):
            views = tta_views(x, tta)
            outputs = [model(v).float() for v, _ in views]
        plain.append(outputs[0])
        averaged.append(sum(w * out for (_, w), out in zip(views, outputs)))
    return torch.cat(plain), (torch.cat(averaged) if tta != "none" else None)


def predict(model: nn.Module, loader: GpuLoader, tta: str = "none", precision: str = "fp32") -> torch.Tensor:
    """Logits (N, classes) of the loader's images in order, averaged over the test-time views."""
    plain, averaged = predict_views(model, loader, tta, precision)
    return plain if averaged is None else averaged


def evaluate(model: nn.Module, loader: GpuLoader, tta: str = "none", precision: str = "fp32") -> tuple[float, float]:
    """(mean cross-entropy, accuracy) on the loader's split."""
    logits = predict(model, loader, tta, precision)
    loss = F.cross_entropy(logits, loader.labels).item()
    return loss, (logits.argmax(1) == loader.labels).float().mean().item()


def record_predictions(model: nn.Module, loader: GpuLoader, out_dir: Path, split: str, tta: str,
                       precision: str) -> dict:
    """Evaluate `model` on `loader`'s split, save its probabilities (with and without `tta`) in
    predictions.safetensors, and return the metrics they give: loss, accuracy, accuracy with TTA."""
    logits, logits_tta = predict_views(model, loader, tta, precision)
    labels = loader.labels
    run_folder.save_predictions(Path(out_dir) / run_folder.PREDICTIONS, torch.softmax(logits, 1), labels,
                                probs_tta=torch.softmax(logits_tta, 1) if logits_tta is not None else None,
                                split=split, tta=tta)
    return {f"{split}_loss": F.cross_entropy(logits, labels).item(),
            f"{split}_acc": (logits.argmax(1) == labels).float().mean().item(), "tta": tta,
            f"{split}_acc_tta": (logits_tta.argmax(1) == labels).float().mean().item() if logits_tta is not None else None}


def model_from_weights(cfg: Config, weights: Path, device: torch.device | str = "cpu") -> nn.Module:
    """The network of `cfg` with the saved (half-precision, checksum-verified) weights, in float32 and eval mode."""
    model = create_model(cfg.model)
    try:
        model.load_state_dict(run_folder.load_weights(Path(weights)))
    except RuntimeError as err:
        if isinstance(err, run_folder.CheckpointError):
            raise
        raise run_folder.CheckpointError(f"{weights} does not fit the configuration beside it "
                                         f"({str(err).splitlines()[0]})") from None
    return model.to(device).eval()


def load_run(run_dir: str | Path, device: str | torch.device | None = None) -> tuple[Config, nn.Module]:
    """The configuration and trained network of a run folder; its weights are checked against metrics.json."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise run_folder.CheckpointError(f"run folder not found: {run_dir} (give a folder written by `cifar-resnet train`)")
    run_folder.check_own_files(run_dir, (run_folder.CONFIG, run_folder.METRICS, run_folder.WEIGHTS))  # no link
    config = run_dir / run_folder.CONFIG
    if not config.is_file():
        raise run_folder.CheckpointError(f"{run_dir} holds no {run_folder.CONFIG}: it is not a run folder written by "
                                         "`cifar-resnet train`, or that file was deleted")
    cfg = load_config(config)
    check_weights(run_dir)
    return cfg, model_from_weights(cfg, run_dir / run_folder.WEIGHTS, device or default_device())


def check_weights(run_dir: Path) -> None:
    """`CheckpointError` (one line) for a run without weights (one recorded without them is finished, not
    waiting to be trained), weights that differ from the SHA-256 metrics.json recorded, or a config.yaml
    changed since the weights were trained (the fingerprint kept in their metadata)."""
    weights, config = run_dir / run_folder.WEIGHTS, run_dir / run_folder.CONFIG
    if not run_folder.present(weights):
        try:
            finished = run_folder.read_metrics(run_dir).get("status") == "finished"
        except (FileNotFoundError, run_folder.CheckpointError):
            finished = False
        if finished:
            raise run_folder.CheckpointError(
                f"{run_dir} is a finished run recorded without its weights ({run_folder.WEIGHTS}): evaluate the run "
                "folder it was recorded from, or record it again with --weights")
    run_folder.verify_weights(run_dir)
    if fingerprint.config_changed(config, weights):
        raise run_folder.CheckpointError(f"{config} changed after {weights} was trained (it no longer matches the "
                                         "fingerprint kept in the weights): put back the configuration it was trained "
                                         "with, or train it again")


def run_data_root(run_dir: str | Path, data_root: str | None = None) -> str | None:
    """Where a run's CIFAR-10 is: the folder its metrics.json recorded, where that still holds the files; else
    `data_root` (None: the configuration's, else $CIFAR10_ROOT, else ./data, as `load_cifar10` looks)."""
    try:
        recorded = run_folder.read_metrics(run_dir).get("data_root")
    except (FileNotFoundError, run_folder.CheckpointError):
        recorded = None
    return recorded if isinstance(recorded, str) and (Path(recorded) / BATCH_DIR).is_dir() else data_root


def evaluate_run(run_dir: str | Path, *, tta: bool = False, data_root: str | None = None,
                 device: str | torch.device | None = None) -> dict:
    """Re-evaluate a run's saved weights on the split it was evaluated on; with `tta`, also with its TTA."""
    device = resolve_device(device)
    cfg, model = load_run(run_dir, device)
    _, evaluation, split = load_splits(cfg, run_data_root(run_dir, data_root))
    loader = GpuLoader(evaluation, batch_size=1024, device=device, train=False, channels_last=cfg.train.channels_last)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    mode = (cfg.train.tta if cfg.train.tta != "none" else "flip") if tta else "none"
    logits, logits_tta = predict_views(model, loader, mode, cfg.train.precision)
    labels = loader.labels
    result = {"run": str(run_dir), "split": split, "images": len(evaluation),
              f"{split}_loss": F.cross_entropy(logits, labels).item(),
              f"{split}_acc": (logits.argmax(1) == labels).float().mean().item(),
              "device": run_folder.environment(device)["device"]}
    if logits_tta is not None:
        result["tta"], result[f"{split}_acc_tta"] = mode, (logits_tta.argmax(1) == labels).float().mean().item()
    return result
