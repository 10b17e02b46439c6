"""Figures of the recorded runs: learning curves, accuracy against parameters over seeds, and one run's
test predictions (confusion matrix, per-class accuracy, reliability, confident mistakes, accuracy under
corruptions). Drawn in `plots`' style and saved with `plots.save`, like every figure; notebooks 03 and 04
and `rebuild` call them.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from . import analysis
from ..data.cifar10 import CLASSES
from ..models import PARAMETER_BUDGET
from .plots import COLUMN, FULL, MIN_FONT, PALETTE, budget_line, styled


# ==== the recorded runs ==============================================================================


def weights_label(ema_decay: float | None) -> str:
    """Which weights an evaluation measured, in words: the run's exponential moving average of its weights
    (`train.ema_decay` of its config) where it keeps one, else the trained weights themselves."""
    return f"weight average (EMA {ema_decay:g})" if ema_decay else "trained weights"


# Runs told apart at a glance (the seeds blue and orange, not blue and teal), colour-blind safe.
RUN_COLOURS = [PALETTE[i] for i in (0, 4, 1, 2, 3, 5, 6, 7, 8, 9)]


@styled
def learning_curves(histories: Mapping[str, pd.DataFrame], *, lr: bool = False,
                    ema_decay: float | None = None) -> Figure:
    """Loss and accuracy per epoch of each run: on the training batches dashed, on the test set solid, for
    the weights the runs evaluate (`ema_decay`: their weight average's decay, None for the trained weights);
    dotted, the trained (raw) weights where the history records them too (`eval_acc_raw`). With `lr`, the
    learning rate. The first run is drawn widest, so that later ones on top of it leave it visible."""
    panels = ["loss", "acc"] + (["lr"] if lr else [])
    raw = any(f"eval_{p}_raw" in h.columns for h in histories.values() for p in ("loss", "acc"))
    key = 0.12 * len(histories) + 0.04  # inches below the panels for the runs' legend, one line each
    height = 1.75 + key
    fig, axes = plt.subplots(1, len(panels), figsize=(COLUMN - 0.1 if not lr else FULL, height))  # tight bbox adds a little
    for i, ((name, history), colour) in enumerate(zip(histories.items(), RUN_COLOURS)):
        width = 1.8 if i == 0 and len(histories) > 1 else 1.0
        for ax, panel in zip(axes, panels):
            if panel == "lr":
                ax.plot(history["epoch"], history["lr"], color=colour, linewidth=width)
                continue
            scale = 100 if panel == "acc" else 1
            # Thin and light: a per-epoch curve of augmented batches is noisy, and dashes would break it up.
            ax.plot(history["epoch"], scale * history[f"train_{panel}"], color=colour, linewidth=0.6, alpha=0.55)
            for column, line in ((f"eval_{panel}", "-"), (f"eval_{panel}_raw", ":")):
                if column in history.columns:
                    evaluated = history.dropna(subset=[column])
                    ax.plot(evaluated["epoch"], scale * evaluated[column], color=colour, linestyle=line,
                            linewidth=width)
    for ax, panel in zip(axes, panels):
        ax.set(xlabel="epoch", ylabel={"loss": "cross-entropy", "acc": "accuracy (%)", "lr": "learning rate"}[panel])
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
    style = [Line2D([], [], color="grey", linewidth=0.6, alpha=0.55, label="train batches"),
             Line2D([], [], color="grey", label=f"test, {weights_label(ema_decay)}")]
    if raw:
        style.append(Line2D([], [], color="grey", linestyle=":", label="test, trained weights"))
    names = [Line2D([], [], color=c, label=n) for n, c in zip(histories, RUN_COLOURS)]
    fig.legend(handles=names, loc="lower left", bbox_to_anchor=(0, 0.12 / (height + 0.12)), ncol=1,
               borderaxespad=0.1, handlelength=1.6, labelspacing=0.2)
    fig.legend(handles=style, loc="lower left", bbox_to_anchor=(0, 0), ncol=len(style), borderaxespad=0.1,
               columnspacing=0.8, handlelength=1.6)
    key, height = key + 0.12, height + 0.12  # and one line for the line styles
    fig.set_figheight(height)
    fig.tight_layout(pad=0.2, rect=(0, key / height, 1, 1))
    return fig


def _recipes_on_gpu(seeds: pd.DataFrame) -> int:
    return int((~seeds["device"].astype(str).str.lower().isin(("cpu", "", "none", "nan"))).sum())


@styled
def params_vs_accuracy(seeds: pd.DataFrame) -> Figure | None:
    """Test accuracy against trainable parameters, one point per recipe (mean over its seeds, with the
    standard deviation as an error bar; CPU smoke runs hollow and grey), with the axes zoomed to the points.
    None where fewer than two recipes were recorded on a GPU: one point compares nothing."""
    seeds = seeds.dropna(subset=["test_acc_mean"])
    if _recipes_on_gpu(seeds) < 2:
        return None
    fig, ax = plt.subplots(figsize=(COLUMN, 2.1))
    cpu = seeds["device"].astype(str).str.lower().eq("cpu")
    for mask, kwargs in ((~cpu, {"color": PALETTE[0], "label": "GPU runs (mean ± std over seeds)"}),
                         (cpu, {"mfc": "none", "color": "grey", "label": "CPU smoke run (no result)"})):
        part = seeds[mask]
        if len(part):
            ax.errorbar(part["params"], 100 * part["test_acc_mean"], yerr=100 * part["test_acc_std"].fillna(0),
                        fmt="o", markersize=4, capsize=2, zorder=3, **kwargs)
    tta = seeds.dropna(subset=["test_acc_tta_mean"])
    if len(tta):
        ax.scatter(tta["params"], 100 * tta["test_acc_tta_mean"], marker="_", color="black", s=30, zorder=3,
                   label="with TTA (mean)")
    for _, row in seeds.iterrows():
        ax.annotate(f"{row['model']} ({row['seeds']} seed{'s' if row['seeds'] > 1 else ''})",
                    (row["params"], 100 * row["test_acc_mean"]), fontsize=MIN_FONT, xytext=(-4, -3),
                    textcoords="offset points", ha="right", va="top")
    ax.set_xscale("log")
    ax.set_xlim(seeds["params"].min() / 2, max(seeds["params"].max(), PARAMETER_BUDGET) * 1.5)
    budget_line(ax, vertical=True, unit=1)
    ax.set(xlabel="trainable parameters", ylabel="test accuracy (%)")
    ax.legend(loc="lower right")
    return fig


# ==== one run's test predictions =====================================================================


@styled
def confusion_matrix(matrix: np.ndarray, classes: Sequence[str] = CLASSES, title: str | None = None) -> Figure:
    """Counts per (true, predicted) class, coloured by the share of the true class; `title` names the
    run (the figure adds how many images were counted)."""
    fig, ax = plt.subplots(figsize=(COLUMN, COLUMN * 0.85))
    share = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    sns.heatmap(share, annot=matrix, fmt="d", cmap="Blues", vmin=0, vmax=1, square=True, cbar=False, ax=ax,
                xticklabels=classes, yticklabels=classes, annot_kws={"fontsize": MIN_FONT}, linewidths=0.3,
                linecolor="white")
    counted = f"{int(matrix.sum()):,} test images"
    ax.set(xlabel="predicted class", ylabel="true class", title=f"{title}\n{counted}" if title else counted)
    ax.tick_params(length=0, labelsize=MIN_FONT)
    plt.setp(ax.get_xticklabels(), rotation=45, ha="right", rotation_mode="anchor")
    return fig


@styled
def per_class_accuracy(table: pd.DataFrame, title: str | None = None) -> Figure:
    """Accuracy of each true class, with the overall accuracy as a dashed line, and on how many test
    images each was measured."""
    fig, ax = plt.subplots(figsize=(COLUMN, 2.4))
    acc = 100 * table["accuracy"]
    low = max(0.0, 5 * math.floor((acc.min() - 4) / 5))  # zoomed to the data, room for a label in each bar
    ax.barh(table["class"], acc - low, left=low, color=PALETTE[0], height=0.65)
    total = int(table["total"].sum())
    overall = 100 * table["correct"].sum() / total
    ax.axvline(overall, color="black", linestyle="--", linewidth=0.8, label=f"all classes: {overall:.2f}%")
    for y, value in enumerate(acc):
        ax.annotate(f"{value:.1f}", (value, y), xytext=(-2, 0), textcoords="offset points", va="center",
                    ha="right", fontsize=MIN_FONT, color="white")
    sizes = sorted(set(table["total"]))
    each = f"{sizes[0]:,} per class" if len(sizes) == 1 else "per class as in the table"
    counted = f"{total:,} test images ({each})"
    ax.set(xlabel=f"test accuracy (%), axis from {low:g}", xlim=(low, 100),
           title=f"{title}\n{counted}" if title else counted)
    ax.invert_yaxis()
    ax.grid(axis="y", visible=False)
    ax.legend(loc="upper left", bbox_to_anchor=(0, -0.2))  # below the axis: the bars fill the axes
    return fig


@styled
def reliability_diagram(bins: pd.DataFrame, ece: float, title: str | None = None) -> Figure:
    """Accuracy against confidence per bin (a calibrated network follows the diagonal); below, how many
    test images fall in each bin."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(COLUMN, 3.1), sharex=True, height_ratios=(3, 1))
    width = bins["upper"] - bins["lower"]
    used = bins["count"] > 0
    top.bar(bins["lower"][used], bins["accuracy"][used], width=width[used], align="edge", color=PALETTE[0],
            edgecolor="white", linewidth=0.5, label="accuracy")
    top.bar(bins["lower"][used], (bins["confidence"] - bins["accuracy"])[used], bottom=bins["accuracy"][used],
            width=width[used], align="edge", fill=False, hatch="////", edgecolor=PALETTE[3], linewidth=0.5,
            label="gap to mean confidence")
    top.plot([0, 1], [0, 1], color="black", linestyle="--", linewidth=0.8, label="perfect calibration")
    counted = f"{int(bins['count'].sum()):,} test images, expected calibration error {100 * ece:.2f}%"
    top.set(ylabel="accuracy", xlim=(0, 1), ylim=(0, 1), title=f"{title}\n{counted}" if title else counted)
    top.legend(loc="upper left")
    bottom.bar(bins["lower"], bins["count"] / bins["count"].sum() * 100, width=width, align="edge",
               color="grey", edgecolor="white", linewidth=0.5, label="share of the images")
    bottom.set(xlabel="confidence (highest softmax probability)", ylabel="images (%)")
    bottom.legend(loc="upper left")
    fig.align_ylabels()
    fig.tight_layout(pad=0.2, h_pad=0.3)
    return fig


@styled
def confident_mistakes(pred: analysis.Predictions, mistakes: pd.DataFrame, cols: int = 6) -> Figure:
    """The test images the network got wrong with the highest confidence (`pred` with its images)."""
    if pred.images is None:
        raise ValueError("these predictions carry no images: load them with the test split "
                         "(analysis.load_predictions(run_dir, split=test))")
    n = len(mistakes)
    rows = max(1, -(-n // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(FULL, rows * 1.55), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (_, m) in zip(axes.flat, mistakes.iterrows()):
        ax.imshow(pred.images[m["index"]], interpolation="none")
        ax.set_title(f"{m['predicted']} {100 * m['confidence']:.0f}%\n(is {m['true']}, #{m['index']})", fontsize=MIN_FONT)
    fig.tight_layout(pad=0.2, h_pad=0.4)
    return fig


@styled
def corruption_accuracy(record: dict, title: str | None = None) -> Figure:
    """Test accuracy under each generated corruption (rows, CIFAR-10-C types) at each severity (columns),
    with its mean over the severities; the title gives the clean and the mean corrupted accuracy.
    `record` is a run's robustness.json as `robustness_record.load_robustness` returns it."""
    from ..evaluation import robustness_record as rr

    table = pd.DataFrame(rr.rows(record)).set_index("corruption")
    values = 100 * table.drop(columns="family")
    fig, ax = plt.subplots(figsize=(COLUMN, 0.75 + 0.17 * len(values)))
    sns.heatmap(values, annot=True, fmt=".1f", cmap="Blues_r", vmin=values.min().min(),  # darker: worse
                vmax=100 * record["clean_acc"], cbar=False, ax=ax, annot_kws={"fontsize": MIN_FONT},
                linewidths=0.3, linecolor="white")
    ax.set_xticks(np.arange(len(values.columns)) + 0.5, [c.removeprefix("severity ") for c in values.columns],
                  rotation=0)
    counted = (f"{record['images']:,} test images: clean {100 * record['clean_acc']:.2f}%, "
               f"corrupted {100 * record['mean_corruption_acc']:.2f}% on average")
    ax.set(xlabel="severity (generated CIFAR-10-C corruptions)", ylabel="",
           title=f"{title}\n{counted}" if title else counted)
    ax.tick_params(length=0)
    ax.grid(False)  # the style's grid would cross the cells
    return fig
