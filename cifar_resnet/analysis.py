"""What the figures and tables show, computed apart from how they are drawn (`plots.py` draws).

Sections: the data set, the design space under the parameter budget, the recorded runs (one row per run,
and mean ± std over seeds), one run's recorded test predictions (confusion matrix, per-class accuracy,
calibration, confident mistakes), the architecture search, and table files. Everything here is
deterministic: the same inputs give the same bytes on disk, on any CPU.

Runs live in two places: training writes `runs/<name>` (ignored by git); the recorded runs that the
figures, tables and report are made of are `results/runs/<name>`, and `record_run` copies one there.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
import yaml

from . import runs
from .config import ModelConfig, load_config
from .data import CLASSES, MEAN, STD, CIFAR10Split
from .models import INPUT_SIZE, ResNet, count_parameters

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
    constants the library normalises with (`data.MEAN`, `data.STD`)."""
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
    with torch.device("meta"):  # shapes only: nothing is allocated
        return count_parameters(ResNet(ModelConfig(**json.loads(key))))


def count_params(cfg: ModelConfig) -> int:
    """Trainable parameters of the network `cfg` describes, over budget or not, without allocating it
    (what `create_model` counts before it checks the budget)."""
    return _count(json.dumps(dataclasses.asdict(cfg), sort_keys=True))


def three_stage(width: int, blocks: int, kernel: int = 3, skip_kernel: int = 1, pool: int = 0) -> ModelConfig:
    """The design-space family of the figures: stem of `width` channels, then stages of width, 2x and 4x,
    each of `blocks` basic blocks with F = `kernel`, K = `skip_kernel`, and pool P."""
    return ModelConfig(stem_channels=width, channels=[width, 2 * width, 4 * width], blocks=[blocks] * 3,
                       kernels=[kernel] * 3, skip_kernels=[skip_kernel] * 3, strides=[1, 2, 2], pool=pool)


def params_by_part(cfg: ModelConfig) -> pd.DataFrame:
    """Where the parameters of `cfg`'s network sit: stem, each stage, and the head (final norm + classifier)."""
    with torch.device("meta"):
        model = ResNet(cfg)
    parts, side = [("stem", model.stem)], INPUT_SIZE
    for i, (c, b, stage) in enumerate(zip(cfg.channels, cfg.blocks, model.stages)):
        side //= cfg.strides[i]
        parts.append((f"stage {i + 1}: {c} channels, {b} blocks, {side}x{side} maps", stage))
    parts.append(("classifier", torch.nn.ModuleList([model.final_norm, model.fc])))
    params = [count_parameters(module) for _, module in parts]
    total = sum(params)
    return pd.DataFrame({"part": [name for name, _ in parts], "params": params,
                         "share": [round(p / total, 4) for p in params]})


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


def kernel_sweep(width: int = 64, blocks: int = 2) -> pd.DataFrame:
    """Parameters as one of F (conv kernel), K (skip kernel), P (pool; 0 = global) changes, the rest at
    F=3, K=1, P=0: columns variable, value, params."""
    parts = [sweep("value", (1, 3, 5, 7), lambda f: three_stage(width, blocks, kernel=f)).assign(variable="F"),
             sweep("value", (1, 3, 5), lambda k: three_stage(width, blocks, skip_kernel=k)).assign(variable="K"),
             sweep("value", (0, 8, 4, 2, 1), lambda p: three_stage(width, blocks, pool=p)).assign(variable="P")]
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


# ==== the recorded runs ==============================================================================

RESULTS_RUNS = "results/runs"  # the recorded runs: committed, read by the figures, tables and the report
USER_RUNS = "runs"  # where `cifar-resnet train` and `make train` write (ignored by git)


@dataclass
class RunRecord:
    """A run folder and its metrics.json."""

    path: Path
    metrics: dict

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def on_gpu(self) -> bool:
        """CPU runs are smoke tests, never results."""
        device = str(self.metrics.get("device") or "").strip().lower()
        return device not in ("", "cpu")

    @property
    def finished(self) -> bool:
        """Trained to the end of its schedule (not stopped by a time limit)."""
        return self.metrics.get("status", "finished") == "finished"

    @property
    def test_acc(self) -> float | None:
        value = self.metrics.get("test_acc")
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    @property
    def label(self) -> str:
        """The folder name with seed and, for a run stopped early, the epochs it completed."""
        x = self.metrics
        stopped = "" if self.finished else f"; time limit: {x.get('epochs_completed')} of {x.get('epochs')} epochs"
        return f"{self.name} (seed {x.get('seed')}{stopped})"


def load_runs(folder: str | Path) -> list[RunRecord]:
    """The run folders `folder/*/metrics.json` (`RESULTS_RUNS`, or `USER_RUNS` for your own), by name."""
    folder = Path(folder)
    return [RunRecord(p.parent, json.loads(p.read_text())) for p in sorted(folder.glob("*/metrics.json"))]


def newest_run(folder: str | Path) -> RunRecord | None:
    """The most recently finished run with recorded predictions under `folder` (by the time of its
    metrics.json), or None."""
    found = [r for r in load_runs(folder) if r.finished and (r.path / runs.PREDICTIONS).is_file()]
    return max(found, key=lambda r: ((r.path / runs.METRICS).stat().st_mtime, r.name), default=None)


def record_run(run_dir: str | Path, results_dir: str | Path = "results", *, name: str | None = None,
               weights: bool = False) -> Path:
    """Copy a finished run (config, history, metrics, predictions, log; the weights only if asked) into
    `results_dir/runs/<name>`, where the figures, tables and the report read it; returns the new folder."""
    src = Path(run_dir)
    metrics = runs.read_metrics(src)
    if metrics.get("status", "finished") != "finished" or not (src / runs.PREDICTIONS).is_file():
        raise FileNotFoundError(f"{src} is no finished run with {runs.PREDICTIONS}: finish it first "
                                f"(cifar-resnet train --resume --out {src})")
    dst = Path(results_dir) / "runs" / (name or src.name)
    if dst.exists():
        raise FileExistsError(f"{dst} exists: choose another name, or remove it first")
    dst.mkdir(parents=True)
    names = [runs.CONFIG, runs.HISTORY, runs.METRICS, runs.PREDICTIONS, "train.log"] + ([runs.WEIGHTS] if weights else [])
    for file in names:
        if (src / file).is_file():
            shutil.copyfile(src / file, dst / file)
    return dst


def runs_table(records: Sequence[RunRecord]) -> pd.DataFrame:
    """The final results table: one row per recorded run. A run stopped by its time limit has status
    `time_limit` and no test accuracy (it never reached the end of its schedule)."""
    rows = []
    for r in records:
        x = r.metrics
        rows.append({"run": r.name, "model": x.get("name"), "params": x.get("params"), "status": x.get("status"),
                     "epochs": x.get("epochs_completed"), "epochs_planned": x.get("epochs"),
                     "train_seconds": x.get("train_seconds"), "wall_seconds": x.get("wall_seconds"),
                     "device": x.get("device"), "test_acc": r.test_acc, "test_acc_tta": x.get("test_acc_tta"),
                     "tta": x.get("tta"), "seed": x.get("seed")})
    table = pd.DataFrame(rows, columns=["run", "model", "params", "status", "epochs", "epochs_planned", "train_seconds",
                                        "wall_seconds", "device", "test_acc", "test_acc_tta", "tta", "seed"])
    # Integers stay integers where a run lacks a value; accuracies on <= 10,000 images need 4 decimals.
    table = table.astype({"params": "Int64", "epochs": "Int64", "epochs_planned": "Int64", "seed": "Int64"})
    return table.astype({"test_acc": float, "test_acc_tta": float}).round({"test_acc": 4, "test_acc_tta": 4})


def _recipe(record: RunRecord) -> str:
    """The run's configuration without its seed: runs that differ only in the seed share it."""
    try:
        cfg = dataclasses.asdict(load_config(record.path / runs.CONFIG))
    except Exception:  # a run without a readable config is its own recipe
        return record.name
    cfg["train"].pop("seed")
    return json.dumps(cfg, sort_keys=True)


def seeds_table(records: Sequence[RunRecord]) -> pd.DataFrame:
    """Finished runs of the same configuration and schedule that differ only in the seed, as one row:
    the number of seeds, and mean and sample standard deviation (n - 1; empty for one seed) of the test
    accuracy with and without TTA and of the training time."""
    done = [r for r in records if r.finished and r.test_acc is not None]
    groups: dict[str, list[RunRecord]] = {}
    for r in done:
        groups.setdefault(_recipe(r), []).append(r)
    rows = []
    for group in groups.values():
        group = sorted(group, key=lambda r: (r.metrics.get("seed", 0), r.name))
        row = {"model": group[0].metrics.get("name"), "epochs": group[0].metrics.get("epochs"),
               "params": group[0].metrics.get("params"), "device": group[0].metrics.get("device"),
               "seeds": len(group), "runs": " ".join(r.name for r in group)}
        for key in ("test_acc", "test_acc_tta", "train_seconds"):
            values = pd.Series([r.metrics.get(key) for r in group], dtype=float)
            row[f"{key}_mean"], row[f"{key}_std"] = values.mean(), values.std(ddof=1)
        rows.append(row)
    table = pd.DataFrame(rows, columns=["model", "epochs", "params", "device", "seeds", "runs", "test_acc_mean",
                                        "test_acc_std", "test_acc_tta_mean", "test_acc_tta_std", "train_seconds_mean",
                                        "train_seconds_std"])
    table = table.astype({"epochs": "Int64", "params": "Int64", "seeds": "Int64"})
    return table.round({c: 6 for c in table.columns if c.startswith("test_acc")} | {"train_seconds_mean": 2,
                                                                                    "train_seconds_std": 2})


def pick_best_run(records: Sequence[RunRecord]) -> tuple[RunRecord, str]:
    """The run to analyse and, in words, why: `best` if recorded on a GPU, else the most accurate GPU run,
    else a CPU smoke run, which is no result at all."""
    scored = [r for r in records if r.test_acc is not None and r.finished]
    gpu = [r for r in scored if r.on_gpu]
    named = [r for r in gpu if r.name == "best"]
    if named:
        return named[0], (f"{named[0].label}: the run recorded as the project's final one, on "
                          f"{named[0].metrics.get('device')}.")
    if gpu:
        best = max(gpu, key=lambda r: r.test_acc)
        return best, (f"{best.label}: the most accurate of {len(gpu)} GPU run(s). No run is recorded as "
                      "`best`; picking by test accuracy makes this number optimistic.")
    if not scored:
        raise FileNotFoundError("no finished run with a test accuracy here: train one first "
                                "(notebook 03 or `cifar-resnet train`)")
    smoke = scored[0]
    return smoke, (f"{smoke.label}: a {smoke.metrics.get('epochs_completed')}-epoch CPU run of a "
                   f"{smoke.metrics.get('params'):,}-parameter network. On a CPU it shows the analysis working; "
                   "its accuracy means little. For a real result, train on a GPU.")


def same_model(records: Sequence[RunRecord], run: RunRecord) -> list[RunRecord]:
    """`run` first, then the other runs of the same configuration name on the same kind of device (other
    seeds and schedules), by name."""
    others = [r for r in records if r.metrics.get("name") == run.metrics.get("name") and r.on_gpu == run.on_gpu
              and r.path != run.path]
    return [run] + others


def load_history(run_dir: Path) -> pd.DataFrame:
    """A run's history.csv, with the evaluation columns renamed to eval_loss / eval_acc (test or val)."""
    history = pd.read_csv(Path(run_dir) / runs.HISTORY)
    return history.rename(columns={c: "eval" + c[c.index("_"):] for c in history.columns
                                   if c.startswith(("test_", "val_"))})


def last_evaluation(run_dir: Path) -> tuple[int, float] | None:
    """(epoch, accuracy) of a run's last evaluation in history.csv: for a run stopped by its time limit,
    the only accuracy it has, measured before the end of its schedule."""
    history = load_history(run_dir).dropna(subset=["eval_acc"])
    return (int(history["epoch"].iloc[-1]), float(history["eval_acc"].iloc[-1])) if len(history) else None


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
    path = Path(run_dir) / runs.PREDICTIONS
    tensors, meta = runs.load_predictions(path)
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
        images = _nhwc(split.images[:n])
    return Predictions(probs, labels, meta.get("tta", "none") if use_tta else "none", images)


def _nhwc(images: torch.Tensor) -> np.ndarray:
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
    trials = pd.read_csv(path).rename(columns={"trainable_params": "params"})
    missing = [c for c in SEARCH_COLUMNS if c not in trials.columns]
    if missing:
        raise ValueError(f"{path} lacks the column(s) {', '.join(missing)}: was it written by `cifar-resnet search`?")
    return trials


def load_importance(results_dir: Path, study: str = "main") -> pd.DataFrame | None:
    """Parameter importances from results/search/<study>_importance.csv as columns parameter, importance."""
    path = Path(results_dir) / "search" / f"{study}_importance.csv"
    if not path.is_file():
        return None
    table = pd.read_csv(path)
    names = next(c for c in table.columns if not pd.api.types.is_numeric_dtype(table[c]))
    values = next(c for c in table.columns if pd.api.types.is_numeric_dtype(table[c]))
    return pd.DataFrame({"parameter": table[names], "importance": table[values]})


def pareto_front(trials: pd.DataFrame, x: str = "params", y: str = "val_acc") -> pd.DataFrame:
    """The trials no other beats on both counts (fewer `x`, higher `y`), by increasing `x`."""
    done = trials.dropna(subset=[x, y]).sort_values([x, y], ascending=[True, False], kind="stable")
    keep, best = [], -math.inf
    for i, value in zip(done.index, done[y]):
        if value > best:
            keep.append(i)
            best = value
    return done.loc[keep]


# ==== table files ====================================================================================

_TEX_SPECIALS = {"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "$": r"\$", "&": r"\&", "#": r"\#",
                 "^": r"\^{}", "_": r"\_", "%": r"\%", "~": r"\~{}"}


def tex_escape(text: str) -> str:
    return "".join(_TEX_SPECIALS.get(c, c) for c in str(text))


@dataclass
class Column:
    """How a table column appears in LaTeX: its header, alignment, and formatter of a cell (None = escaped str)."""

    header: str
    align: str = "l"
    format: Callable[[object], str] | None = None


def to_latex(table: pd.DataFrame, columns: dict[str, Column]) -> str:
    """A booktabs tabular of the given columns (no float environment: the report wraps it)."""
    lines = [f"\\begin{{tabular}}{{{''.join(c.align for c in columns.values())}}}", "\\toprule",
             " & ".join(c.header for c in columns.values()) + " \\\\", "\\midrule"]
    for _, row in table.iterrows():
        cells = []
        for key, col in columns.items():
            value = row[key]
            missing = value is None or (not isinstance(value, str) and pd.isna(value))
            cells.append("--" if missing else col.format(value) if col.format else tex_escape(value))
        lines.append(" & ".join(cells) + " \\\\")
    return "\n".join(lines + ["\\bottomrule", "\\end{tabular}"]) + "\n"


def write_table(table: pd.DataFrame, stem: Path, columns: dict[str, Column] | None = None) -> list[Path]:
    """Write `stem`.csv and, given LaTeX columns, `stem`.tex; returns the paths written."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    csv = stem.parent / f"{stem.name}.csv"
    table.to_csv(csv, index=False, lineterminator="\n")
    if columns is None:
        return [csv]
    tex = stem.parent / f"{stem.name}.tex"
    tex.write_text(to_latex(table, columns))
    return [csv, tex]


def mean_std(mean: object, std: object, scale: float = 100, digits: int = 2, pm: str = " ± ") -> str:
    """"94.86 ± 0.08" from a mean and a standard deviation (the mean alone where there is no std)."""
    if pd.isna(mean):
        return "-"
    return f"{scale * float(mean):.{digits}f}" + ("" if pd.isna(std) else f"{pm}{scale * float(std):.{digits}f}")


def write_seeds_table(table: pd.DataFrame, stem: Path) -> list[Path]:
    """`stem`.csv (numbers) and `stem`.tex (mean $\\pm$ std in percent) of `seeds_table`'s rows."""
    def cells(key: str) -> list[str | None]:
        return [None if pd.isna(m) else mean_std(m, s, pm=" $\\pm$ ")
                for m, s in zip(table[f"{key}_mean"], table[f"{key}_std"])]

    shown = table.assign(acc=cells("test_acc"), acc_tta=cells("test_acc_tta"))
    csv = write_table(table, stem)
    tex = Path(stem).parent / f"{Path(stem).name}.tex"
    tex.write_text(to_latex(shown, SEEDS_COLUMNS))
    return csv + [tex]


def write_runs_readme(records: Sequence[RunRecord], path: Path) -> Path:
    """`results/README.md`: the recorded runs as Markdown tables (one row per run, then one per recipe
    over its seeds), and where each run came from."""
    table, seeds = runs_table(records), seeds_table(records)
    lines = ["# Recorded runs", "",
             "Generated by `cifar-resnet figures` (and notebook 04) from `results/runs/*/metrics.json`; do not edit.",
             "Runs on a CPU are smoke tests of the pipeline, not results; a run stopped by its time limit has no",
             "test accuracy of its own (see the notes).", "",
             "| run | model | parameters | epochs | status | train time | wall time | device | test acc. | with TTA | seed |",
             "| --- | --- | ---: | ---: | --- | ---: | ---: | --- | ---: | ---: | ---: |"]
    for row in table.itertuples():
        acc = f"{100 * row.test_acc:.2f}%" if pd.notna(row.test_acc) else "-"
        tta = f"{100 * row.test_acc_tta:.2f}% ({row.tta})" if pd.notna(row.test_acc_tta) else "-"
        lines.append(f"| {row.run} | {row.model} | {int(row.params):,} | {row.epochs}/{row.epochs_planned} | "
                     f"{row.status} | {float(row.train_seconds):.1f} s | {float(row.wall_seconds):.1f} s | "
                     f"{row.device} | {acc} | {tta} | {row.seed} |")
    if table.empty:
        lines.append("| (none yet: train with `cifar-resnet train`, then `analysis.record_run`) |||||||||||")
    lines += ["", "## Over seeds", "",
              "Finished runs of the same configuration and schedule that differ only in the seed: mean ± sample",
              "standard deviation over the seeds.", "",
              "| model | epochs | seeds | runs | test acc. (%) | with TTA (%) | train time |",
              "| --- | ---: | ---: | --- | ---: | ---: | ---: |"]
    for row in seeds.itertuples():
        lines.append(f"| {row.model} | {row.epochs} | {row.seeds} | {row.runs} | "
                     f"{mean_std(row.test_acc_mean, row.test_acc_std)} | "
                     f"{mean_std(row.test_acc_tta_mean, row.test_acc_tta_std)} | "
                     f"{mean_std(row.train_seconds_mean, row.train_seconds_std, scale=1, digits=1)} s |")
    lines += ["", "## Notes", ""]
    for r in records:
        x, note = r.metrics, []
        if not r.finished:
            last = last_evaluation(r.path)
            seen = f"; its last evaluation (epoch {last[0]}) gave {100 * last[1]:.2f}%" if last else ""
            note.append(f"stopped by its time limit after epoch {x.get('epochs_completed')} of {x.get('epochs')}, "
                        f"before the end of its schedule{seen}: no final result")
        source = x.get("provenance", {})
        if source:
            note.append(f"trained with `{source.get('command')}` on {source.get('device')}, torch "
                        f"{source.get('torch_version')}, commit {str(source.get('git_commit'))[:7]} "
                        f"(records {source.get('source')})")
        note.append("predictions: " + (source.get("predictions") if source.get("predictions") else
                                       "recorded at the end of training" if (r.path / runs.PREDICTIONS).is_file()
                                       else "none"))
        note.append("weights: " + (source.get("weights") if source.get("weights") else
                                   "committed" if (r.path / runs.WEIGHTS).is_file() else "not committed"))
        lines.append(f"- **{r.name}**: " + "; ".join(note) + ".")
    path = Path(path)
    path.write_text("\n".join(lines) + "\n")
    return path


def thousands(n: object) -> str:
    return f"{int(n):,}".replace(",", "{,}")


def percent(x: object) -> str:
    return f"{100 * float(x):.2f}"


def duration(seconds: object) -> str:
    s = float(seconds)
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.2f} h"


def device_name(device: object) -> str:
    """A short device name for tables: 'CPU', 'H100 80GB HBM3' (vendor prefix dropped)."""
    name = str(device)
    return "CPU" if name.lower() == "cpu" else tex_escape(name.removeprefix("NVIDIA ").removeprefix("Tesla "))


RUNS_COLUMNS = {"run": Column("Run"), "model": Column("Config"), "params": Column("Params", "r", thousands),
                "epochs": Column("Epochs", "r"), "status": Column("Status", "l", lambda s: tex_escape(str(s).replace("_", " "))),
                "train_seconds": Column("Train", "r", duration),
                "wall_seconds": Column("Wall", "r", duration), "device": Column("Device", "l", device_name),
                "test_acc": Column("Acc.\\ (\\%)", "r", percent), "test_acc_tta": Column("TTA (\\%)", "r", percent),
                "seed": Column("Seed", "r")}
PRESETS_COLUMNS = {"preset": Column("Preset"), "block": Column("Block"), "channels": Column("$C_i$"),
                   "blocks": Column("$B_i$"), "kernels": Column("$F_i$"), "skip_kernels": Column("$K_i$"),
                   "pool": Column("$P$", "r"), "params": Column("Params", "r", thousands),
                   "epochs": Column("Epochs", "r")}
PER_CLASS_COLUMNS = {"class": Column("Class"), "correct": Column("Correct", "r"), "total": Column("Images", "r"),
                     "accuracy": Column("Acc.\\ (\\%)", "r", percent)}
SEEDS_COLUMNS = {"model": Column("Config"), "epochs": Column("Epochs", "r"), "params": Column("Params", "r", thousands),
                 "seeds": Column("Seeds", "r"), "acc": Column("Acc.\\ (\\%)", "r", str),
                 "acc_tta": Column("TTA (\\%)", "r", str), "train_seconds_mean": Column("Train", "r", duration)}
