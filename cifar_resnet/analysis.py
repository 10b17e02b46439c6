"""What the figures and tables show, computed apart from how they are drawn (`plots.py` draws).

Sections: the data set, the design space under the parameter budget, the recorded runs, one run's test
predictions (confusion matrix, per-class accuracy, calibration, confident mistakes), the architecture
search, and table files. Everything here is deterministic: the same inputs give the same bytes on disk.
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


@dataclass
class RunRecord:
    """A run folder under results/runs and its metrics.json."""

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
    def test_acc(self) -> float | None:
        value = self.metrics.get("test_acc")
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def load_runs(results_dir: Path) -> list[RunRecord]:
    """The runs under `results_dir/runs/*/metrics.json`, by folder name."""
    return [RunRecord(p.parent, json.loads(p.read_text())) for p in sorted(Path(results_dir).glob("runs/*/metrics.json"))]


def runs_table(runs: Sequence[RunRecord]) -> pd.DataFrame:
    """The final results table: one row per recorded run."""
    rows = []
    for r in runs:
        x = r.metrics
        rows.append({"run": r.name, "model": x.get("name"), "params": x.get("params"),
                     "epochs": x.get("epochs_completed"), "train_seconds": x.get("train_seconds"),
                     "wall_seconds": x.get("wall_seconds"), "device": x.get("device"),
                     "test_acc": r.test_acc, "test_acc_tta": x.get("test_acc_tta"), "tta": x.get("tta"),
                     "seed": x.get("seed")})
    table = pd.DataFrame(rows, columns=["run", "model", "params", "epochs", "train_seconds", "wall_seconds", "device",
                                        "test_acc", "test_acc_tta", "tta", "seed"])
    # Integers stay integers where a run lacks a value; accuracies on <= 10,000 images need 4 decimals.
    table = table.astype({"params": "Int64", "epochs": "Int64", "seed": "Int64"})
    return table.astype({"test_acc": float, "test_acc_tta": float}).round({"test_acc": 4, "test_acc_tta": 4})


def pick_best_run(runs: Sequence[RunRecord]) -> tuple[RunRecord, str]:
    """The run to analyse and, in words, why: `best` if recorded on a GPU, else the most accurate GPU run,
    else a CPU smoke run (`smoke-cpu` if present), which is no result at all."""
    scored = [r for r in runs if r.test_acc is not None]
    gpu = [r for r in scored if r.on_gpu]
    named = [r for r in gpu if r.name == "best"]
    if named:
        return named[0], "results/runs/best: the run recorded as the project's final one."
    if gpu:
        best = max(gpu, key=lambda r: r.test_acc)
        return best, (f"{best.name}: the most accurate of {len(gpu)} GPU run(s). No run is recorded as "
                      "results/runs/best; picking by test accuracy makes this number optimistic.")
    if not scored:
        raise FileNotFoundError("no recorded run with a test accuracy under results/runs: train one first "
                                "(notebook 03 or `cifar-resnet train`)")
    smoke = next((r for r in scored if r.name == "smoke-cpu"), scored[0])
    subset = _train_subset(smoke.path)
    images = f"{subset:,} training images" if subset else "the training set"
    return smoke, (f"{smoke.name}: no GPU run is recorded yet, so this is a {smoke.metrics.get('epochs_completed')}-epoch "
                   f"CPU smoke run on {images} with a {smoke.metrics.get('params'):,}-parameter network. Its accuracy "
                   "means nothing; it only shows the analysis working. For the real result, train on a GPU: "
                   "`cifar-resnet train --config configs/best.yaml --out results/runs/best` "
                   "(`make train` does the same), then rerun this notebook.")


def _train_subset(run_dir: Path) -> int:
    try:
        return load_config(run_dir / "config.yaml").data.train_subset
    except Exception:  # an unreadable config only costs the detail in the message
        return 0


def load_history(run_dir: Path) -> pd.DataFrame:
    """A run's history.csv, with the evaluation columns renamed to eval_loss / eval_acc (test or val)."""
    history = pd.read_csv(Path(run_dir) / "history.csv")
    return history.rename(columns={c: "eval" + c[c.index("_"):] for c in history.columns
                                   if c.startswith(("test_", "val_"))})


# ==== one run's test predictions =====================================================================


@dataclass
class Predictions:
    """Class probabilities (N, classes) of a split's images, with the labels and images (uint8 NHWC)."""

    probs: np.ndarray
    labels: np.ndarray
    images: np.ndarray

    @property
    def predicted(self) -> np.ndarray:
        return self.probs.argmax(1)

    @property
    def confidence(self) -> np.ndarray:
        return self.probs.max(1)

    @property
    def accuracy(self) -> float:
        return float((self.predicted == self.labels).mean())


def predict_run(run_dir: Path, split: CIFAR10Split, *, tta: str = "none", device: str | None = None) -> Predictions:
    """Softmax probabilities (fp32, no TTA unless asked) of a recorded run's network on all of `split`,
    whatever subset the run evaluated on; on the GPU if there is one."""
    from .engine import default_device, load_run, predict
    from .loader import GpuLoader

    device = device or str(default_device())
    _, model = load_run(run_dir, device)
    loader = GpuLoader(split, batch_size=1000, device=device, train=False)
    probs = torch.softmax(predict(model, loader, tta), 1).cpu().numpy()
    images = split.images if split.images.shape[-1] == 3 else split.images.permute(0, 2, 3, 1)
    return Predictions(probs, split.labels.numpy(), images.numpy())


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


def reliability_bins(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> pd.DataFrame:
    """Equal-width confidence bins (lower, upper]: count, mean confidence and accuracy of each."""
    confidence, correct = np.asarray(confidence, np.float64), np.asarray(correct, np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.searchsorted(edges[1:-1], confidence, side="left")  # a value on an edge goes to the lower bin
    count = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(index, confidence, n_bins) / count
        accuracy = np.bincount(index, correct, n_bins) / count
    return pd.DataFrame({"lower": edges[:-1], "upper": edges[1:], "count": count,
                         "confidence": mean_conf, "accuracy": accuracy})


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> float:
    """ECE (Guo et al. 2017): the count-weighted mean of |accuracy - confidence| over the bins."""
    bins = reliability_bins(confidence, correct, n_bins)
    used = bins[bins["count"] > 0]
    return float((used["count"] * (used["accuracy"] - used["confidence"]).abs()).sum() / bins["count"].sum())


def confident_mistakes(pred: Predictions, k: int = 12, classes: Sequence[str] = CLASSES) -> pd.DataFrame:
    """The `k` wrong predictions made with the highest confidence: test index, true, predicted, confidence."""
    wrong = np.flatnonzero(pred.predicted != pred.labels)
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


def write_runs_readme(table: pd.DataFrame, path: Path) -> Path:
    """`results/README.md`: the recorded runs as a Markdown table, from `runs_table`'s rows."""
    lines = ["# Recorded runs", "",
             "Generated by `cifar-resnet figures` (and notebook 04) from `results/runs/*/metrics.json`; do not edit.",
             "Runs on a CPU are smoke tests of the pipeline, not results.", "",
             "| run | model | parameters | epochs | train time | wall time | device | test acc. | with TTA | seed |",
             "| --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |"]
    for row in table.itertuples():
        tta = f"{100 * row.test_acc_tta:.2f}% ({row.tta})" if pd.notna(row.test_acc_tta) else "-"
        lines.append(f"| {row.run} | {row.model} | {int(row.params):,} | {int(row.epochs)} | "
                     f"{float(row.train_seconds):.1f} s | {float(row.wall_seconds):.1f} s | {row.device} | "
                     f"{100 * row.test_acc:.2f}% | {tta} | {int(row.seed)} |")
    if table.empty:
        lines.append("| (none yet: `cifar-resnet train --config configs/best.yaml --out results/runs/best`) |||||||||| ")
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
                "epochs": Column("Epochs", "r"), "train_seconds": Column("Train", "r", duration),
                "wall_seconds": Column("Wall", "r", duration), "device": Column("Device", "l", device_name),
                "test_acc": Column("Acc.\\ (\\%)", "r", percent), "test_acc_tta": Column("TTA (\\%)", "r", percent),
                "seed": Column("Seed", "r")}
PRESETS_COLUMNS = {"preset": Column("Preset"), "block": Column("Block"), "channels": Column("$C_i$"),
                   "blocks": Column("$B_i$"), "kernels": Column("$F_i$"), "skip_kernels": Column("$K_i$"),
                   "pool": Column("$P$", "r"), "params": Column("Params", "r", thousands),
                   "epochs": Column("Epochs", "r")}
PER_CLASS_COLUMNS = {"class": Column("Class"), "correct": Column("Correct", "r"), "total": Column("Images", "r"),
                     "accuracy": Column("Acc.\\ (\\%)", "r", percent)}


