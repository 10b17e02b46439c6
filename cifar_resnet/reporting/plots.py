"""Figures for the notebooks and the report, in one style, saved as deterministic PDF and PNG.

Each figure function takes what `analysis` computed and returns a matplotlib figure (created with
pyplot, so a notebook shows it); `save` writes `<stem>.pdf` (vector, for the report) and `<stem>.png`
(for the README and the notebooks). Here: the style and the figures of the data set, the design space
and the search; the recorded runs' figures are in `run_plots`. Drawing only: `rebuild.rebuild_all`
redraws every figure and table from the recorded results with these functions, as the notebooks do.
Sizes are for the report's AAAI layout: 3.3 in for one column, 6.9 in for the full width. The report
includes each figure at the size it is drawn, so no text is smaller than `MIN_FONT` points on paper; a
notebook shows a figure at `figure.dpi` = 200, where 7 pt text is about 19 pixels high. PNGs are
drawn at `PNG_DPI` or more: a figure of images gets the resolution at which every image pixel is a whole
square of screen pixels (nearest-neighbour upscaling by an integer), so a 32x32 image stays sharp.
"""

from __future__ import annotations

import functools
import io
import math
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from cycler import cycler
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter

from . import analysis
from .. import run_folder
from ..data.cifar10 import CIFAR10Split, CLASSES, MEAN, STD
from ..config import ModelConfig
from ..models import INPUT_SIZE, PARAMETER_BUDGET, parameter_count

COLUMN, FULL = 3.3, 6.9  # figure widths in inches, as printed in the report
MIN_FONT = 7  # points: the smallest text in any figure, as printed (the report includes figures unscaled)
PNG_DPI = 300  # the least PNG resolution: 6 pt text and the confusion matrix's counts stay legible
PALETTE = sns.color_palette("colorblind").as_hex()
RGB = ("#c0392b", "#27ae60", "#2e6fba")
STYLE = {
    "figure.dpi": 200, "savefig.dpi": 100, "savefig.bbox": "tight", "savefig.pad_inches": 0.03,
    "font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "legend.fontsize": 7,
    "xtick.labelsize": 7, "ytick.labelsize": 7, "legend.frameon": False,
    "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3,
    "grid.linewidth": 0.5, "axes.linewidth": 0.6, "lines.linewidth": 1.2, "lines.markersize": 4,
    "axes.prop_cycle": cycler(color=PALETTE), "image.cmap": "viridis",
    "pdf.fonttype": 42, "ps.fonttype": 42,  # TrueType, not Type 3: AAAI's PDF check rejects Type 3 fonts
}


def use_style() -> None:
    """Make the project's style the default for every later figure (the figure functions apply it anyway)."""
    matplotlib.rcParams.update(STYLE)


@contextmanager
def style() -> Iterator[None]:
    """The project's style for the duration of a `with` block.

    Unlike `plt.rc_context`, it restores only the settings it changed: the notebook backend switches on
    interactive mode when the first figure is made, and restoring that too would hide every later figure.
    """
    saved = {key: matplotlib.rcParams[key] for key in STYLE}
    matplotlib.rcParams.update(STYLE)
    try:
        yield
    finally:
        matplotlib.rcParams.update(saved)


def styled(draw):
    """`draw`, a figure function, drawing in the project's style."""
    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        with style():
            return draw(*args, **kwargs)
    return wrapper


def png_dpi(fig: Figure) -> float:
    """`PNG_DPI`, raised for a figure with images to the resolution at which its first image's pixels
    become whole squares of k x k screen pixels (k an integer: nearest-neighbour upscaling, no blur)."""
    images = [image for ax in fig.axes for image in ax.get_images()]
    if not images:
        return PNG_DPI
    fig.canvas.draw()  # lays out the axes (equal aspect) so that the image's extent is final
    image = images[0]
    inches = image.get_window_extent().width / fig.dpi
    columns = image.get_array().shape[1]
    return math.ceil(PNG_DPI * inches / columns) * columns / inches


def save(fig: Figure, stem: str | Path) -> list[Path]:
    """Write `stem`.pdf and `stem`.png; both are byte-for-byte reproducible (no dates, no software tag)."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    pdf, png = stem.parent / f"{stem.name}.pdf", stem.parent / f"{stem.name}.png"
    with style():
        for path, options in ((pdf, {"metadata": {"CreationDate": None, "ModDate": None}}),
                              (png, {"metadata": {"Software": None}, "dpi": png_dpi(fig)})):
            buffer = io.BytesIO()  # drawn whole, then written atomically: never half a figure, never through a link
            fig.savefig(buffer, format=path.suffix[1:], **options)
            run_folder.atomic_write_bytes(path, buffer.getvalue())
    return [pdf, png]


def budget_line(ax, *, vertical: bool = False, unit: float = 1e6) -> None:
    """The 5M-parameter budget on an axis counting parameters in `unit`s."""
    draw = ax.axvline if vertical else ax.axhline
    draw(PARAMETER_BUDGET / unit, color="black", linestyle="--", linewidth=0.8, label="5M budget")


# ==== the data set ===================================================================================


def _mosaic(images: np.ndarray, rows: int, cols: int, gap: int = 2) -> np.ndarray:
    """uint8 (rows * cols, H, W, 3) images tiled into one image, white between them."""
    h, w = images.shape[1:3]
    out = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap, 3), 255, np.uint8)
    for i, image in enumerate(images[: rows * cols]):
        r, c = divmod(i, cols)
        out[r * (h + gap): r * (h + gap) + h, c * (w + gap): c * (w + gap) + w] = image
    return out


def _image(ax, image: np.ndarray) -> None:
    """An image without ticks, grid or frame (an axis label can still go beside it)."""
    ax.imshow(image, interpolation="none")  # raw pixels in the PDF, nearest-neighbour in the PNG
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    for side in ax.spines.values():
        side.set_visible(False)


@styled
def class_samples(split: CIFAR10Split, per_class: int = 10) -> Figure:
    """The first `per_class` images of each class, one row per class."""
    index = analysis.first_of_each_class(split, per_class)
    per_class = index.shape[1]
    fig, ax = plt.subplots(figsize=(COLUMN, COLUMN * 1.02))
    _image(ax, _mosaic(analysis.to_nhwc(split.images[index.flatten()]), len(split.classes), per_class))
    ax.set_yticks([(i + 0.5) * 34 - 1 for i in range(len(split.classes))], split.classes)
    ax.tick_params(length=0)
    return fig


@styled
def pixel_histograms(histograms: np.ndarray, stats: pd.DataFrame | None = None) -> Figure:
    """Share of pixels at each intensity, per channel, with the channel means as dashed lines."""
    fig, ax = plt.subplots(figsize=(COLUMN, 2.0))
    share = histograms / histograms.sum(1, keepdims=True)
    for c, (name, colour) in enumerate(zip(("red", "green", "blue"), RGB)):
        ax.plot(np.arange(256), 100 * share[c], color=colour, label=name, linewidth=0.9)
        if stats is not None:
            ax.axvline(stats["mean"][c], color=colour, linestyle="--", linewidth=0.7)
    ax.set(xlabel="pixel intensity", ylabel="pixels (%)", xlim=(0, 255), ylim=(0, None))
    handles = ax.get_legend_handles_labels()[0]
    if stats is not None:
        handles.append(Line2D([], [], color="grey", linestyle="--", linewidth=0.7, label="channel mean"))
    ax.legend(handles=handles, loc="upper left")
    return fig


@styled
def augmentations(split: CIFAR10Split, classes: Sequence[int] = (0, 3, 7, 8), seed: int = 7) -> Figure:
    """What each training augmentation makes of the first image of some classes: the loader's crop and
    cutout, a TrivialAugment policy from `data.gpu_loader.make_policy`, and torchvision's MixUp and CutMix (which
    mix each image with the next one of the batch). The seed is fixed, so the figure is too."""
    from torchvision.transforms import v2

    from ..data.gpu_loader import crop_flip, cutout, make_policy

    generator = torch.Generator().manual_seed(seed)
    index = analysis.first_of_each_class(split, 1)[list(classes), 0]
    images = split.images[index]
    images = images.permute(0, 3, 1, 2).contiguous() if images.shape[-1] == 3 else images  # uint8 NCHW
    labels = split.labels[index]
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    columns = {"original": images,
               "crop (pad 4)": crop_flip(images, 4, False, generator),
               "horizontal flip": images.flip(-1),
               "cutout 16": (cutout((images.float() - mean) / std, 16, generator) * std + mean).round().to(torch.uint8)}
    policy = make_policy("trivialaugment")
    notes: dict[str, list[str]] = {}
    with torch.random.fork_rng(devices=[]):  # v2 transforms draw from torch's global generator
        torch.manual_seed(seed)
        columns["TrivialAugment"] = torch.stack([policy(image) for image in images])
        for name, mix in (("MixUp", v2.MixUp(alpha=1.0, num_classes=10)), ("CutMix", v2.CutMix(alpha=1.0, num_classes=10))):
            mixed, soft = mix(images.float() / 255, labels)
            columns[name] = (mixed * 255).round().to(torch.uint8)
            notes[name] = [" + ".join(f"{w:.2f} {CLASSES[c]}" for w, c in zip(*row.topk(2)) if w > 0.005)
                           for row in soft]
    rows, cols = len(images), len(columns)
    fig, axes = plt.subplots(rows, cols, figsize=(FULL, rows * 1.25 + 0.2), squeeze=False)
    for c, (name, batch) in enumerate(columns.items()):
        for r in range(rows):
            ax = axes[r, c]
            _image(ax, batch[r].permute(1, 2, 0).numpy())
            if r == 0:
                ax.set_title(name)
            if c == 0:
                ax.set_ylabel(CLASSES[labels[r]])
            if name in notes:
                ax.set_xlabel(notes[name][r].replace(" + ", "\n"), fontsize=MIN_FONT, labelpad=1)
    fig.tight_layout(pad=0.2, h_pad=0.3, w_pad=0.2)
    return fig


# ==== the design space ===============================================================================


def _millions(ax) -> None:
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}M"))


@styled
def params_vs_width(sweep: pd.DataFrame) -> Figure:
    """Parameters against the first stage's width, one line per blocks-per-stage B (stages C, 2C, 4C)."""
    fig, ax = plt.subplots(figsize=(COLUMN, 1.8))
    ax.set_ylim(0, 2.2 * PARAMETER_BUDGET / 1e6)
    groups = list(sweep.groupby("blocks"))
    for b, part in groups:
        ax.plot(part["width"], part["params"] / 1e6, marker="o", markersize=2, label=f"B = {b}")
    budget_line(ax)
    trained = analysis.trained_network()
    ax.plot(trained.channels[0], parameter_count(trained) / 1e6, marker="*", markersize=8, color="black",
            linestyle="none", label="trained network")
    ax.set(xlabel="channels C of the first stage (then 2C, 4C)", ylabel="trainable parameters",
           xlim=(0, sweep["width"].max() * 1.05))
    _millions(ax)
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1), ncol=3)  # above the axes, clear of every line
    return fig


@styled
def params_vs_depth(sweep: pd.DataFrame) -> Figure:
    """Parameters against blocks per stage, one line per first-stage width C."""
    fig, ax = plt.subplots(figsize=(COLUMN, 1.8))
    ax.set_ylim(0, 2.2 * PARAMETER_BUDGET / 1e6)
    groups = list(sweep.groupby("width"))
    for c, part in groups:
        ax.plot(part["blocks"], part["params"] / 1e6, marker="o", markersize=2, label=f"C = {c}")
    budget_line(ax)
    top = sweep["blocks"].max()
    ax.set(xlabel="residual blocks per stage B (depth 6B + 2 layers)", ylabel="trainable parameters",
           xticks=range(1, top + 1), xlim=(0.5, top + 0.5))
    _millions(ax)
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1), ncol=3)
    return fig


def _pooled_side(pool: int, side: int) -> int:
    """The side s_P of the map an average pool of kernel P leaves for the classifier (P = 0: global, 1)."""
    return 1 if pool == 0 else side // pool


@styled
def params_vs_kernels(sweep: pd.DataFrame, base: ModelConfig | None = None) -> Figure:
    """Parameters of `base` (default: the trained network) as the conv kernel F, the projection kernel K
    or the pooled side s_P changes in every stage, the others as in `base`; its own values in orange. Each
    count is written upright inside its bar (above a short one); bars above the axis (kernels far over the
    budget) are cut at its top. The budget line runs behind the bars."""
    base = base or analysis.trained_network()
    side = INPUT_SIZE // math.prod(base.strides)
    chosen = {"F": base.kernels[0], "K": base.skip_kernels[0], "P": base.pool}
    titles = {"F": "conv kernel $F$", "K": "projection $K$", "P": "pooled map side"}  # no subscript: under 7 pt
    fig, axes = plt.subplots(1, 3, figsize=(COLUMN, 1.6), sharey=True, width_ratios=(4, 3, 4))
    top = 3 * PARAMETER_BUDGET / 1e6
    for ax, (variable, title) in zip(axes, titles.items()):
        part = sweep[sweep["variable"] == variable]
        labels = [str(_pooled_side(v, side) if variable == "P" else v) for v in part["value"]]
        colours = [PALETTE[1] if v == chosen[variable] else PALETTE[0] for v in part["value"]]
        bars = ax.bar(labels, part["params"] / 1e6, color=colours, width=0.7, zorder=3)  # over the budget line
        for bar, params in zip(bars, part["params"] / 1e6):
            inside = params > top / 8  # upright inside the bar from its top (cut at the axis top), else above it
            ax.annotate(f"{params:.1f}", (bar.get_x() + bar.get_width() / 2, min(params, top)), ha="center",
                        va="top" if inside else "bottom", xytext=(0, -2 if inside else 1.5), rotation=90,
                        textcoords="offset points", fontsize=MIN_FONT, color="white" if inside else "black", zorder=4)
        budget_line(ax)
        ax.set_title(title)
        ax.grid(axis="x", visible=False)
    axes[0].set_ylabel("trainable parameters")
    _millions(axes[0])
    axes[0].set_ylim(0, top)
    handles = [Patch(color=PALETTE[1], label="trained"), *axes[-1].get_lines()[:1]]
    axes[-1].legend(handles=handles, loc="upper right", handlelength=1.0, handletextpad=0.4, borderaxespad=0.1)
    fig.tight_layout(pad=0.2, w_pad=0.4)
    return fig


# ==== the architecture search ========================================================================


def _completed(trials: pd.DataFrame) -> pd.Series:
    return trials["state"].astype(str).str.lower().eq(analysis.COMPLETE)


@styled
def search_pareto(trials: pd.DataFrame) -> Figure:
    """Held-out accuracy against parameters of each trial, with the Pareto front of the completed ones."""
    fig, ax = plt.subplots(figsize=(COLUMN, 2.1))
    done = _completed(trials)
    ax.scatter(trials.loc[~done, "params"] / 1e6, 100 * trials.loc[~done, "val_acc"], s=8, color="grey",
               alpha=0.5, label="pruned (fewer epochs)")
    ax.scatter(trials.loc[done, "params"] / 1e6, 100 * trials.loc[done, "val_acc"], s=10, color=PALETTE[0],
               label="completed")
    front = analysis.pareto_front(trials[done])
    ax.step(front["params"] / 1e6, 100 * front["val_acc"], where="post", color=PALETTE[3], linewidth=1,
            label="Pareto front")
    ax.scatter(front["params"] / 1e6, 100 * front["val_acc"], s=14, color=PALETTE[3], zorder=3)
    budget_line(ax, vertical=True)
    ax.set(xlabel="trainable parameters (millions)", ylabel="held-out accuracy (%)")
    ax.legend(loc="lower right")
    return fig


@styled
def search_importance(importance: pd.DataFrame) -> Figure:
    """How much of the variation in held-out accuracy each searched parameter explains (fANOVA)."""
    importance = importance.sort_values("importance", ascending=True, kind="stable")
    fig, ax = plt.subplots(figsize=(COLUMN, 0.35 + 0.2 * len(importance)))
    ax.barh(importance["parameter"], importance["importance"], color=PALETTE[0], height=0.65)
    ax.set(xlabel="importance (share of variance)")
    ax.grid(axis="y", visible=False)
    return fig


@styled
def search_history(trials: pd.DataFrame) -> Figure:
    """Held-out accuracy of each trial in order, and the best so far."""
    fig, ax = plt.subplots(figsize=(COLUMN, 2.0))
    done = _completed(trials)
    ax.scatter(trials.loc[~done, "number"], 100 * trials.loc[~done, "val_acc"], s=8, color="grey", alpha=0.5,
               label="pruned")
    ax.scatter(trials.loc[done, "number"], 100 * trials.loc[done, "val_acc"], s=10, color=PALETTE[0],
               label="completed")
    ordered = trials[done].sort_values("number")
    ax.step(ordered["number"], 100 * ordered["val_acc"].cummax(), where="post", color=PALETTE[3], label="best so far")
    ax.set(xlabel="trial", ylabel="held-out accuracy (%)")
    ax.legend(loc="lower right")
    return fig
