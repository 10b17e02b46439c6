"""What the figures and tables show, computed apart from how they are drawn (`plots` draws).

Sections: the data set, the design space under the parameter budget, one run's recorded test predictions
(confusion matrix, per-class accuracy, calibration, confident mistakes), and the architecture search; the
recorded runs and the table files are in `records`. Everything here is deterministic: the same inputs
give the same bytes on disk, on any CPU.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
import yaml

from .. import run_folder
from ..config import ConfigError, ModelConfig, load_config
from ..data.cifar10 import CIFAR10Split, CLASSES, MEAN, STD
from ..models import INPUT_SIZE, parameter_count, parameters_by_part

SEARCH_COMMAND = "cifar-resnet search --space configs/search_space.yaml --study main --trials 30"
NOT_PRESETS = ("smoke",)  # configs/*.yaml that are no presets (besides search_space*)

# ==== the data set ===================================================================================


def class_counts(train: CIFAR10Split, test: CIFAR10Split) -> pd.DataFrame:
    """Images per class in each split, with a total row."""
    n = len(CLASSES)
    table = pd.DataFrame({"class": list(CLASSES),
                          "train": torch.bincount(train.labels, minlength=n).tolist(),
                          "test": torch.bincount(test.labels, minlength=n).tolist()})
    total = pd.DataFrame({"class": ["total"], "train": [len(train)], "test": [len(test)]})
    return pd.concat([table, total], ignore_index=True)


def channel_histograms(images: torch.Tensor) -> np.ndarray:
    """Counts of each intensity 0..255 per channel (R, G, B) of uint8 images, NHWC or NCHW: (3, 256) int64."""
    if images.dtype != torch.uint8 or images.ndim != 4 or 3 not in (images.shape[1], images.shape[-1]):
        raise ValueError(f"expected uint8 images (N, 32, 32, 3) or (N, 3, 32, 32), got {images.dtype} {tuple(images.shape)}")
    channels = images.unbind(-1) if images.shape[-1] == 3 else images.unbind(1)
    return np.stack([torch.bincount(c.reshape(-1).long(), minlength=256).numpy() for c in channels])


def channel_stats(histograms: np.ndarray) -> pd.DataFrame:
    """Mean and (population) std per channel on the 0..255 scale, exact from the histograms, beside the
    constants the library normalises with (`data.cifar10.MEAN`, `data.cifar10.STD`)."""
    values = np.arange(256, dtype=np.float64)
    n = histograms.sum(axis=1)
    mean = histograms @ values / n
    std = np.sqrt(histograms @ values**2 / n - mean**2)
    return pd.DataFrame({"channel": ["red", "green", "blue"], "mean": mean.round(3), "library_mean": MEAN,
                         "std": std.round(3), "library_std": STD})


def first_of_each_class(split: CIFAR10Split, per_class: int) -> torch.Tensor:
    """Indices of the first `per_class` images of every class, class by class: (classes, per_class)."""
    return torch.stack([(split.labels == c).nonzero().flatten()[:per_class] for c in range(len(split.classes))])


# ==== the design space ===============================================================================


@functools.lru_cache(maxsize=None)
def _count(key: str) -> int:
    return parameter_count(ModelConfig(**json.loads(key)))


def count_params(cfg: ModelConfig) -> int:
    """Trainable parameters of the network `cfg` describes, over budget or not, without allocating it
    (`models.parameter_count`, remembered per design: the figures ask for the same designs often)."""
    return _count(json.dumps(dataclasses.asdict(cfg), sort_keys=True))


def three_stage(width: int, blocks: int, kernel: int = 3, skip_kernel: int = 1, pool: int = 0) -> ModelConfig:
    """The design-space family of the figures: stem of `width` channels, then stages of width, 2x and 4x,
    each of `blocks` basic blocks with F = `kernel`, K = `skip_kernel`, and pool P."""
    return ModelConfig(stem_channels=width, channels=[width, 2 * width, 4 * width], blocks=[blocks] * 3,
                       kernels=[kernel] * 3, skip_kernels=[skip_kernel] * 3, strides=[1, 2, 2], pool=pool)


def params_by_part(cfg: ModelConfig) -> pd.DataFrame:
    """Where the parameters of `cfg`'s network sit: stem, each stage, and the head (final norm + classifier)."""
    parts = parameters_by_part(cfg)
    total = sum(params for _, params in parts)
    return pd.DataFrame({"part": [name for name, _ in parts], "params": [params for _, params in parts],
                         "share": [round(params / total, 4) for _, params in parts]})


def sweep(name: str, values: Sequence[int], make: Callable[[int], ModelConfig]) -> pd.DataFrame:
    """Parameter count of `make(v)` for each v: columns `name`, params."""
    return pd.DataFrame({name: list(values), "params": [count_params(make(v)) for v in values]})


def width_sweep(widths: Sequence[int] = range(16, 137, 8), blocks: Sequence[int] = (1, 2, 3, 4)) -> pd.DataFrame:
    """Parameters against the first stage's width C for several blocks per stage B (F=3, K=1, P=0)."""
    return pd.concat([sweep("width", widths, lambda c: three_stage(c, b)).assign(blocks=b) for b in blocks],
                     ignore_index=True)


def depth_sweep(blocks: Sequence[int] = range(1, 11), widths: Sequence[int] = (16, 32, 48, 64)) -> pd.DataFrame:
    """Parameters against blocks per stage B for several first-stage widths C (F=3, K=1, P=0)."""
    return pd.concat([sweep("blocks", blocks, lambda b: three_stage(c, b)).assign(width=c) for c in widths],
                     ignore_index=True)


TRAINED_PRESET = "best"  # the preset of results/runs/best: the network the report's design figure marks


def trained_network() -> ModelConfig:
    """The design variables of the trained network (the `best` preset, as results/runs/best records)."""
    return load_config(TRAINED_PRESET).model


def kernel_sweep(base: ModelConfig | None = None) -> pd.DataFrame:
    """Parameters of `base` (default: the trained network) as one of F (conv kernel), K (projection
    kernel) or P (average-pool kernel; 0 = global) changes in every stage, the rest as in `base`: columns
    variable, value, params. P runs from global pooling (to 1x1) to none (P = 1, the whole 8x8 map)."""
    base = base or trained_network()
    n = len(base.channels)
    side = INPUT_SIZE // math.prod(base.strides)
    change = lambda **kw: dataclasses.replace(base, **kw)  # noqa: E731
    pools = [0] + [side // s for s in (2, 4, 8) if s <= side and side % s == 0]
    parts = [sweep("value", (1, 3, 5, 7), lambda f: change(kernels=[f] * n)).assign(variable="F"),
             sweep("value", (1, 3, 5), lambda k: change(skip_kernels=[k] * n)).assign(variable="K"),
             sweep("value", pools, lambda p: change(pool=p)).assign(variable="P")]
    return pd.concat(parts, ignore_index=True)[["variable", "value", "params"]]


def preset_paths(configs_dir: Path) -> list[Path]:
    """The ResNet presets: configs/*.yaml with a `model` section, except the search spaces and the smoke
    test (files of other schemas, such as the speed-run recipes, are no `Config`)."""
    paths = []
    for path in sorted(Path(configs_dir).glob("*.yaml")):
        if path.stem.startswith("search_space") or path.stem in NOT_PRESETS:
            continue
        data = yaml.safe_load(path.read_text())
        if isinstance(data, dict) and "model" in data:
            paths.append(path)
    return paths


def presets_table(configs_dir: Path) -> pd.DataFrame:
    """One row per preset: design variables, exact trainable parameters, epochs, and its description
    (the first sentence of the comment that opens its YAML file)."""
    rows = []
    for path in preset_paths(configs_dir):
        cfg = load_config(path)
        m = cfg.model
        comment = " ".join(_leading_comment(path.read_text()))
        rows.append({"preset": path.stem, "block": m.block, "stem": m.stem_channels,
                     "channels": "/".join(map(str, m.channels)), "blocks": "/".join(map(str, m.blocks)),
                     "kernels": "/".join(map(str, m.kernels)), "skip_kernels": "/".join(map(str, m.skip_kernels)),
                     "pool": m.pool, "params": count_params(m), "epochs": cfg.train.epochs,
                     "description": comment.split(". ")[0].rstrip(".") + "."})
    return pd.DataFrame(rows)


def _leading_comment(text: str) -> list[str]:
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    return lines


# ==== one run's test predictions =====================================================================
# From the probabilities the run recorded (predictions.safetensors, half precision), never recomputed:
# the figures are then the same on every CPU. Every sum below is exact: a highest probability is at
# least 1/10, so as an fp16 value it is a multiple of 2^-14, and up to 2^39 of them add up exactly in
# float64 in any order; the one division per value is then correctly rounded everywhere.


@dataclass
class Predictions:
    """Class probabilities (N, classes) of a split's images, the labels, the test-time augmentation
    they were averaged over ("none" for the network alone), and the images (uint8 NHWC) if at hand."""

    probs: np.ndarray
    labels: np.ndarray
    tta: str = "none"
    images: np.ndarray | None = None

    @property
    def predicted(self) -> np.ndarray:
        return self.probs.argmax(1)

    @property
    def confidence(self) -> np.ndarray:
        return self.probs.max(1)

    @property
    def correct(self) -> np.ndarray:
        return self.predicted == self.labels

    @property
    def accuracy(self) -> float:
        return float(self.correct.sum() / len(self.labels))

    @property
    def views(self) -> str:
        """In words: what the probabilities are averaged over."""
        return "the network alone" if self.tta == "none" else f"with {self.tta} test-time augmentation"


def load_predictions(run_dir: str | Path, *, tta: bool = True, split: CIFAR10Split | None = None) -> Predictions:
    """The probabilities recorded in `run_dir/predictions.safetensors`, in float64 (the recorded fp16
    values exactly): with the run's test-time augmentation if recorded and `tta`, else without. Given the
    evaluation split, the images the run evaluated on are attached (its first N, for a run on a subset)."""
    path = Path(run_dir) / run_folder.PREDICTIONS
    tensors, meta = run_folder.load_predictions(path)
    use_tta = tta and "probs_tta" in tensors
    probs = tensors["probs_tta" if use_tta else "probs"].double().numpy()
    labels = tensors["labels"].long().numpy()
    images = None
    if split is not None:
        n = len(labels)
        if n > len(split) or not np.array_equal(split.labels[:n].numpy(), labels):
            raise ValueError(f"{path} holds predictions for {n:,} images whose labels differ from the first "
                             f"{min(n, len(split)):,} of the split given: pass the split the run evaluated on "
                             f"({meta.get('split', 'test')})")
        images = to_nhwc(split.images[:n])
    return Predictions(probs, labels, meta.get("tta", "none") if use_tta else "none", images)


def to_nhwc(images: torch.Tensor) -> np.ndarray:
    """Images (N, C, H, W) or (N, H, W, C) as a numpy array (N, H, W, C), for drawing."""
    return (images if images.shape[-1] == 3 else images.permute(0, 2, 3, 1)).numpy()


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int = len(CLASSES)) -> np.ndarray:
    """Counts (num_classes, num_classes): row = true class, column = predicted class."""
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    if labels.shape != predicted.shape:
        raise ValueError(f"labels {labels.shape} and predictions {predicted.shape} differ in shape")
    return np.bincount(labels * num_classes + predicted, minlength=num_classes**2).reshape(num_classes, num_classes)


def per_class_accuracy(matrix: np.ndarray, classes: Sequence[str] = CLASSES) -> pd.DataFrame:
    """Correct, total and accuracy (recall) per true class, from a confusion matrix."""
    correct, total = np.diag(matrix), matrix.sum(1)
    return pd.DataFrame({"class": list(classes), "correct": correct, "total": total,
                         "accuracy": np.round(correct / np.maximum(total, 1), 4)})


def _bin_sums(confidence: np.ndarray, correct: np.ndarray, n_bins: int) -> tuple[np.ndarray, ...]:
    confidence, correct = np.asarray(confidence, np.float64), np.asarray(correct, np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.searchsorted(edges[1:-1], confidence, side="left")  # a value on an edge goes to the lower bin
    count = np.bincount(index, minlength=n_bins)
    return edges, count, np.bincount(index, confidence, n_bins), np.bincount(index, correct, n_bins)


def reliability_bins(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> pd.DataFrame:
    """Equal-width confidence bins (lower, upper]: count, mean confidence and accuracy of each."""
    edges, count, confidence_sum, correct_sum = _bin_sums(confidence, correct, n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf, accuracy = confidence_sum / count, correct_sum / count
    return pd.DataFrame({"lower": edges[:-1], "upper": edges[1:], "count": count,
                         "confidence": mean_conf, "accuracy": accuracy})


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> float:
    """ECE (Guo et al. 2017): the count-weighted mean of |accuracy - confidence| over the bins, computed
    as sum |correct - confidence sums| / N (one division, so exact sums give the same value everywhere)."""
    _, count, confidence_sum, correct_sum = _bin_sums(confidence, correct, n_bins)
    return float(np.abs(correct_sum - confidence_sum).sum() / count.sum())


def confident_mistakes(pred: Predictions, k: int = 12, classes: Sequence[str] = CLASSES) -> pd.DataFrame:
    """The `k` wrong predictions made with the highest confidence (ties by index): test index, true,
    predicted, confidence."""
    wrong = np.flatnonzero(~pred.correct)
    order = wrong[np.argsort(-pred.confidence[wrong], kind="stable")][:k]
    return pd.DataFrame({"index": order, "true": [classes[i] for i in pred.labels[order]],
                         "predicted": [classes[i] for i in pred.predicted[order]],
                         "confidence": pred.confidence[order].round(4)})


# ==== the architecture search ========================================================================

SEARCH_COLUMNS = ("number", "state", "params", "epochs", "val_acc", "seconds")
COMPLETE = "complete"  # the state of a trial that trained to the full fidelity


def load_search(results_dir: Path, study: str = "main") -> pd.DataFrame | None:
    """The trials `cifar-resnet search` recorded in results/search/<study>.csv, or None if there are none."""
    path = Path(results_dir) / "search" / f"{study}.csv"
    if not path.is_file():
        return None
    trials = _read_search_csv(path).rename(columns={"trainable_params": "params"})
    missing = [c for c in SEARCH_COLUMNS if c not in trials.columns]
    if missing:
        raise ConfigError(f"{path} lacks the column(s) {', '.join(missing)}: was it written by `cifar-resnet search`? "
                          "Export it again (cifar-resnet search ... with the same --study), or move it away")
    return trials


def _read_search_csv(path: Path) -> pd.DataFrame:
    """A CSV of results/search/, or a one-line `ConfigError` naming it where it is no CSV pandas can read."""
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path} is no CSV of `cifar-resnet search` ({str(err).splitlines()[0][:80]}): export it "
                          "again, or move it away") from None


def load_importance(results_dir: Path, study: str = "main") -> pd.DataFrame | None:
    """Parameter importances from results/search/<study>_importance.csv as columns parameter, importance."""
    path = Path(results_dir) / "search" / f"{study}_importance.csv"
    if not path.is_file():
        return None
    table = _read_search_csv(path)
    names = [c for c in table.columns if not pd.api.types.is_numeric_dtype(table[c])]
    values = [c for c in table.columns if pd.api.types.is_numeric_dtype(table[c])]
    if not names or not values or table[values[0]].isna().any() or not np.isfinite(table[values[0]]).all():
        raise ConfigError(f"{path} does not hold a column of parameter names and one of their importances (finite "
                          "numbers), as `cifar-resnet search` exports them: export it again, or move it away")
    return pd.DataFrame({"parameter": table[names[0]], "importance": table[values[0]]})


def pareto_front(trials: pd.DataFrame, x: str = "params", y: str = "val_acc") -> pd.DataFrame:
    """The trials no other beats on both counts (fewer `x`, higher `y`), by increasing `x`."""
    done = trials.dropna(subset=[x, y]).sort_values([x, y], ascending=[True, False], kind="stable")
    keep, best = [], -math.inf
    for i, value in zip(done.index, done[y]):
        if value > best:
            keep.append(i)
            best = value
    return done.loc[keep]
