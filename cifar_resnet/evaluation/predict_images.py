"""Predictions for images the project has never seen: a run's class probabilities, a competition-style CSV
(`ID,Labels`), and, where the images are labelled, their accuracy and its drop from the run's recorded
CIFAR-10 test accuracy (JSON beside the CSV).

The images go through `evaluate`'s own path (the run's normalisation, `predict_views`, the run's test-time
augmentation), so the predictions for CIFAR-10's test images are those the run recorded for them.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .. import run_folder
from ..audience import option, progress_bar
from ..config import ConfigError
from ..data.cifar10 import CIFAR10Split, CLASSES
from ..data.gpu_loader import GpuLoader
from ..data.user_images import Images, as_images, read_images
from ..runtime import default_device
from .evaluate import load_run, predict_views

BATCH_SIZE = 1024  # as evaluate_run


def predict_both(run: str | Path, images: Images | torch.Tensor | np.ndarray, *, tta: bool = False,
                 device: str | torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor | None, str]:
    """Probabilities (N, classes) of uint8 images (N, 32, 32, 3 or N, 3, 32, 32) by the run in `run`, without
    and (with `tta`) with its test-time augmentation, from one pass, and the TTA's name ("none" without)."""
    pixels = images.images if isinstance(images, Images) else as_images(images, "images")
    device = torch.device(device) if device else default_device()
    cfg, model = load_run(run, device)
    loader = GpuLoader(CIFAR10Split(pixels, torch.zeros(len(pixels), dtype=torch.long)), batch_size=BATCH_SIZE,
                       device=device, train=False, channels_last=cfg.train.channels_last)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    mode = (cfg.train.tta if cfg.train.tta != "none" else "flip") if tta else "none"  # as `evaluate --tta`
    batches = progress_bar(loader, desc="predict", unit="batch") if len(loader) > 1 else loader  # large inputs
    logits, logits_tta = predict_views(model, batches, mode, cfg.train.precision, device=loader.device)
    return (torch.softmax(logits, 1).cpu(),
            torch.softmax(logits_tta, 1).cpu() if logits_tta is not None else None, mode)


def predict(run: str | Path, images: Images | torch.Tensor | np.ndarray, *, tta: bool = False,
            device: str | torch.device | None = None) -> torch.Tensor:
    """Class probabilities (N, classes) of uint8 images by the run folder `run`, with its TTA if `tta`."""
    probs, probs_tta, _ = predict_both(run, images, tta=tta, device=device)
    return probs if probs_tta is None else probs_tta


def top_classes(probs: torch.Tensor, ids: list[str], k: int = 3, labels: torch.Tensor | None = None) -> list[dict]:
    """Per image, its id, its true class where `labels` are given, and its `k` most probable classes with
    their probabilities ("cat 91.2%")."""
    values, indices = probs.topk(k, dim=1)
    rows = []
    for n, (image_id, v, ix) in enumerate(zip(ids, values.tolist(), indices.tolist())):
        row = {"id": image_id} | ({"true class": CLASSES[int(labels[n])]} if labels is not None else {})
        rows.append(row | {f"top {j + 1}": f"{CLASSES[c]} {p:.1%}" for j, (p, c) in enumerate(zip(v, ix))})
    return rows


def submission_csv(ids: list[str], probs: torch.Tensor, *, probabilities: bool = False,
                   class_names: bool = False) -> str:
    """CSV text with one row per image: `ID,Labels` (the predicted class's index, or its name with
    `class_names`), then the ten class probabilities with `probabilities`."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["ID", "Labels"] + (list(CLASSES) if probabilities else []))
    for image_id, p in zip(ids, probs.tolist()):
        label = int(np.argmax(p))
        writer.writerow([image_id, CLASSES[label] if class_names else label]
                        + ([f"{q:.6f}" for q in p] if probabilities else []))
    return buffer.getvalue()


def _accuracy(probs: torch.Tensor, labels: torch.Tensor) -> float:
    return (probs.argmax(1) == labels).float().mean().item()


def labelled_report(run: str | Path, source: str | Path, labels: torch.Tensor, probs: torch.Tensor,
                    probs_tta: torch.Tensor | None, tta: str) -> dict:
    """Accuracy (and with TTA), per-class accuracy of the predictions given (with TTA where there is one), and
    the drop in points from the run's recorded CIFAR-10 test accuracy (metrics.json)."""
    try:
        metrics = run_folder.read_metrics(run)
    except FileNotFoundError:
        metrics = {}
    chosen = probs if probs_tta is None else probs_tta
    predicted = chosen.argmax(1)
    per_class = {}
    for index, name in enumerate(CLASSES):
        mine = labels == index
        total, correct = int(mine.sum()), int((predicted[mine] == index).sum())
        per_class[name] = {"images": total, "correct": correct, "accuracy": correct / total if total else None}
    report = {"run": str(run), "input": str(source), "images": len(labels), "tta": tta,
              "accuracy": _accuracy(probs, labels)}
    recorded = metrics.get("test_acc") if metrics.get("eval_split", "test") == "test" else None
    report["recorded_test_acc"] = recorded
    report["drop_points"] = (recorded - report["accuracy"]) * 100 if recorded is not None else None
    if probs_tta is not None:
        report["accuracy_tta"] = _accuracy(probs_tta, labels)
        recorded_tta = metrics.get("test_acc_tta") if recorded is not None else None
        report["recorded_test_acc_tta"] = recorded_tta
        report["drop_points_tta"] = (recorded_tta - report["accuracy_tta"]) * 100 if recorded_tta is not None else None
    report["per_class_accuracy"] = per_class
    return report


def describe_report(report: dict) -> list[str]:
    """The lines `cifar-resnet predict` prints for a labelled input."""
    with_tta = "accuracy_tta" in report
    line = f"accuracy {report['accuracy']:.2%} on {report['images']:,} labelled images"
    if with_tta:
        line += f" ({report['accuracy_tta']:.2%} with {report['tta']} TTA)"
    lines = [line]
    if report["recorded_test_acc"] is None:
        lines.append("the run records no CIFAR-10 test accuracy to compare with")
    else:
        drop = (f"drop from the run's recorded CIFAR-10 test accuracy: {report['drop_points']:.2f} points "
                f"(from {report['recorded_test_acc']:.2%})")
        if with_tta and report.get("drop_points_tta") is not None:
            drop += f"; with TTA {report['drop_points_tta']:.2f} points (from {report['recorded_test_acc_tta']:.2%})"
        lines.append(drop)
    per_class = ", ".join(f"{name} {c['accuracy']:.1%}" for name, c in report["per_class_accuracy"].items()
                          if c["accuracy"] is not None)
    lines.append(f"per class{' (with TTA)' if with_tta else ''}: {per_class}")
    return lines


def _refuse_existing(path: Path) -> None:
    if path.exists():
        raise FileExistsError(f"{path} already exists: choose another {option('out', '--out')}, or delete it first")


def predict_file(run: str | Path, source: str | Path, out: str | Path, *, tta: bool = False,
                 device: str | torch.device | None = None, probabilities: bool = False, class_names: bool = False,
                 log: Callable[[str], None] = print) -> dict:
    """Predict the images in `source` (see `data.user_images.read_images`) with the run folder `run` and write the CSV
    `out`; where they are labelled, also `out` with .json (`labelled_report`). Every check comes before any
    file is written, and each file is written whole or not at all. Returns what was written."""
    out = Path(out)
    if out.suffix.lower() != ".csv":
        raise ConfigError(f"{option('out=', '--out ')}{out}: name a .csv file (the labelled-images report goes beside it as .json)")
    _refuse_existing(out)
    run_folder.writable_folder(out.parent)  # checked before the predictions are computed, not after
    images = read_images(source)
    report_path = out.with_suffix(".json") if images.labels is not None else None
    if report_path:
        _refuse_existing(report_path)
    if images.resize_note():
        log(images.resize_note())
    probs, probs_tta, mode = predict_both(run, images, tta=tta, device=device)
    chosen = probs if probs_tta is None else probs_tta
    text = submission_csv(images.ids, chosen, probabilities=probabilities, class_names=class_names)
    report = None
    if report_path:
        report = labelled_report(run, source, images.labels, probs, probs_tta, mode)
    out.parent.mkdir(parents=True, exist_ok=True)
    run_folder.atomic_write_text(out, text, new=True)  # a second predict of the same --out meanwhile: refused
    log(f"wrote {out}: {len(images):,} predictions{f' with {mode} TTA' if mode != 'none' else ''}")
    if report:
        run_folder.atomic_write_text(report_path, json.dumps(report, indent=2) + "\n", new=True)
        for line in describe_report(report):
            log(line)
        log(f"wrote {report_path}")
    return {"csv": out, "report": report_path, "images": len(images), "tta": mode, "labelled": report}
