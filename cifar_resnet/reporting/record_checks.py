"""Where `record` writes (the clone's results/, wherever in the clone it is run), and what it checks before it copies a run: that the record holds what `evaluate` and the figures would
accept (a configuration that loads, whole predictions and history, the metrics a finished run has, weights
that fit the configuration they were trained with), and the name of the data it was measured on, kept in the
record in place of the machine's data folder."""

from __future__ import annotations

import csv
import hashlib
import io
from pathlib import Path

from .. import run_folder
from ..config import ConfigError, load_config

# SHA-256 of the labels of CIFAR-10's 10,000 test images, in order, as uint8 (predictions.safetensors keeps them
# so): a run whose predictions carry exactly these was measured on CIFAR-10's test set.
CIFAR10_TEST_LABELS = "cec8a24a1e92aa2ecaa0bbd3dbfa86bf6cd8759fbd209a832824c8cf0afca9d5"
CIFAR10_TEST = "CIFAR-10 test set (10,000 images)"
# What a finished run's metrics.json holds, besides the accuracy of the split it was evaluated on.
REQUIRED_METRICS = ("name", "status", "eval_split", "params", "epochs", "epochs_completed", "device")


def results_folder(given: str | Path | None) -> Path:
    """`given`, else the results/ of the clone the current folder is in (found upwards: its root holds
    pyproject.toml and results/runs/), so that a record made from inside results/ or notebooks/ still lands in
    results/runs/; a one-line `ConfigError` outside a clone."""
    if given is not None:
        return Path(given)
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "results" / "runs").is_dir():
            return folder / "results"
    raise ConfigError(f"{here} is in no clone of the repository (no folder above it holds pyproject.toml and "
                      "results/runs/): run record inside the clone, or give --results FOLDER")


def _damaged(path: Path, what: str) -> run_folder.CheckpointError:
    return run_folder.CheckpointError(f"{path} {what}: it is no record of a finished run; train it again (or "
                                      "restore the file), then record it")


def check_record(src: Path, weights: bool) -> None:
    """Refuse a run whose files would not load where the figures read them: its configuration, its predictions
    (complete, one row per label), its metrics (every value a finished run has), its history (whole lines,
    one per epoch completed), the configuration against the fingerprint its weights keep (where it has
    weights) and, with `weights`, the weights themselves (the checks `evaluate` makes, and that they fit the
    configuration)."""
    from ..evaluation.evaluate import check_weights, model_from_weights

    cfg = load_config(src / run_folder.CONFIG)
    tensors, _ = run_folder.load_predictions(src / run_folder.PREDICTIONS)
    probs, labels = tensors.get("probs"), tensors.get("labels")
    if probs is None or labels is None or probs.ndim != 2 or len(probs) != len(labels) or any(
            t.shape != probs.shape for k, t in tensors.items() if k.startswith("probs")):
        raise _damaged(src / run_folder.PREDICTIONS, "does not hold one row of probabilities per label")
    metrics = run_folder.read_metrics(src)
    split = metrics.get("eval_split")
    missing = [k for k in (*REQUIRED_METRICS, *([f"{split}_acc"] if split else [])) if metrics.get(k) is None]
    if missing:
        raise _damaged(src / run_folder.METRICS, f"has no {', '.join(missing)}")
    _check_history(src / run_folder.HISTORY, metrics["epochs_completed"])
    has_weights = run_folder.present(src / run_folder.WEIGHTS)
    if weights and not has_weights:
        raise FileNotFoundError(f"{src} holds no {run_folder.WEIGHTS}: record it without --weights")
    if has_weights:  # copied or not, they tell whether config.yaml is still the one they were trained with
        check_weights(src)
    if weights:
        model_from_weights(cfg, src / run_folder.WEIGHTS)  # they fit the configuration: evaluate builds the same


def _check_history(path: Path, epochs: int) -> None:
    """history.csv: whole lines (a file cut mid-line is refused), the same columns on each, one row per epoch."""
    try:
        text = run_folder.read_run_file(path).decode("utf-8")
    except FileNotFoundError:
        raise _damaged(path, "is missing") from None
    except UnicodeDecodeError:
        raise _damaged(path, "is not text") from None
    rows = list(csv.reader(io.StringIO(text)))
    if not text.endswith("\n") or not rows or any(len(row) != len(rows[0]) for row in rows):
        raise _damaged(path, "is cut short (its last line is not whole)")
    if len(rows) - 1 != epochs:
        raise _damaged(path, f"has {len(rows) - 1} epochs, not the {epochs} metrics.json says were completed")


def data_name(src: Path, metrics: dict) -> str:
    """The data a run was measured on, as a record names it: CIFAR-10's test set where its predictions carry
    exactly that set's labels, else what it was and where it came from."""
    tensors, _ = run_folder.load_predictions(src / run_folder.PREDICTIONS)
    labels = tensors["labels"].to("cpu").contiguous().numpy().tobytes()
    if metrics.get("eval_split") == "test" and hashlib.sha256(labels).hexdigest() == CIFAR10_TEST_LABELS:
        return CIFAR10_TEST
    root = metrics.get("data_root")
    where = f" in {Path(root).name or root}" if isinstance(root, str) and root else ""
    return (f"not CIFAR-10's test set: {len(tensors['labels']):,} {metrics.get('eval_split')} images{where} (a "
            "subset, a held-out part of the training images, or other data)")
