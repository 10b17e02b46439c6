"""The CPU design study (`configs/plans/design_cpu.yaml`, run by `cifar-resnet sweep` into
`results/sweeps/design-cpu/`): one row per choice over its seeds, its effect against the base with the seeds'
spread, the table (CSV and LaTeX), the figure, and the numbers the report quotes of it.

A run is named `<variable>-<value>-s<seed>` (`width-1.5x-s0`), the base `base-s<seed>`. Accuracies are on
the held-out training images (`val_acc_tta`, with the plan's TTA; the row "no TTA" is the base's `val_acc`).
An effect is resolved only where it exceeds the spread, the sum of the two choices' sample standard
deviations over seeds; a smaller one is reported as not resolved at this scale, never as a finding.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from ..config import ConfigError, config_to_dict, load_config
from ..formats import Column, percent, tex_escape, thousands, to_latex
from ..run_folder import CONFIG, atomic_write_text
from .plots import FULL, MIN_FONT, PALETTE, styled
from .recipe_text import flatten
from .records import write_table

DESIGN_CPU = Path("sweeps") / "design-cpu"  # under results/
BASE = "base"
TRAIN_IMAGES = 50_000  # CIFAR-10's training set, of which a run holds out `data.holdout`
NO_TTA = "recipe-no-tta"  # the base's own accuracy without test-time augmentation
# The run-name prefixes of the plan, in its order, as the table names the design variable.
VARIABLES = {"base": "base", "depth": "depth", "width": "width $C_i$", "kernel": "kernel $F_i$", "skip": "skip $K_i$",
             "pool": "pool $P$", "block": "block", "stem": "stem", "recipe": "recipe"}
# How a changed setting is written in the table: its symbol, else its own name.
SYMBOLS = {"model.channels": "C", "model.blocks": "B", "model.kernels": "F", "model.skip_kernels": "K",
           "model.pool": "P", "model.block": "block", "model.stem": "stem", "train.label_smoothing": "smoothing",
           "train.ema_decay": "EMA", "data.cutout": "cutout"}
UNSAID = {"name", "train.seed", "model.stem_channels", "model.stem_kernel", "train.ema_warmup_power"}  # follow the others
COLUMNS = {"variable": Column("Variable"), "change": Column("Choice"), "params": Column("Params", "r", thousands),
           "seeds": Column("$n$", "r"), "acc": Column("Acc.\\ (\\%)", "r", str),
           "effect": Column("Effect", "r", lambda v: f"{100 * float(v):+.2f}"),
           "resolved": Column("Resolved", "c", lambda v: "yes" if v else "no")}


def describe_change(base: dict, cfg: dict) -> str:
    """What a run's configuration changes from the base's, in the table's words: 'C = 24/48/96, B = 1/1/1'."""
    base, cfg = flatten(base), flatten(cfg)
    said = []
    for key in sorted(set(cfg) - UNSAID, key=lambda k: (k not in SYMBOLS, list(SYMBOLS).index(k) if k in SYMBOLS else 0, k)):
        if cfg[key] != base.get(key):
            value = "/".join(map(str, cfg[key])) if isinstance(cfg[key], list) else f"{cfg[key]:g}" \
                if isinstance(cfg[key], float) else str(cfg[key])
            said.append(f"{SYMBOLS.get(key, key.split('.')[-1])} = {value}")
    return ", ".join(said) or "the base"


def load_study(folder: str | Path) -> pd.DataFrame:
    """The finished runs of the study's `summary.csv`, with `choice` (the run name without its seed); empty
    where there is none."""
    path = Path(folder) / "summary.csv"
    if not path.is_file():
        return pd.DataFrame()
    runs = pd.read_csv(path)
    runs = runs[runs["status"] == "finished"].copy()
    runs["choice"] = runs["run"].str.replace(r"-s\d+$", "", regex=True)
    return runs


def _stats(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else float("nan")


def design_table(folder: str | Path) -> pd.DataFrame:
    """One row per choice of the study in `folder`: variable, choice, what it changes, parameters, seeds,
    held-out accuracy (mean and sample std, with TTA), effect against the base, spread and whether the effect
    exceeds it. Empty without finished base runs."""
    folder, runs = Path(folder), load_study(folder)
    if runs.empty or BASE not in set(runs["choice"]):
        return pd.DataFrame()
    configs = {c: config_to_dict(load_config(folder / f"{c}-s{int(runs[runs['choice'] == c]['seed'].iloc[0])}" / CONFIG))
               for c in runs["choice"].unique()}
    base_runs = runs[runs["choice"] == BASE]
    groups = [(c, runs[runs["choice"] == c], "val_acc_tta") for c in runs["choice"].unique()]
    groups.insert(1, (NO_TTA, base_runs, "val_acc"))
    base_mean, base_std = _stats(list(base_runs["val_acc_tta"]))
    rows = []
    for choice, part, column in groups:
        mean, std = _stats(list(part[column]))
        spread = (0 if choice == BASE else base_std) + std
        prefix = choice.split("-")[0]
        rows.append({"variable": VARIABLES.get(prefix, prefix), "choice": choice,
                     "change": "no TTA" if choice == NO_TTA else describe_change(configs[BASE], configs[choice]),
                     "params": int(part["params"].iloc[0]), "seeds": len(part), "acc_mean": mean, "acc_std": std,
                     "effect": mean - base_mean, "spread": spread,
                     "resolved": choice != BASE and bool(abs(mean - base_mean) > spread),
                     "train_seconds_mean": statistics.fmean(part["train_seconds"])})
    order = list(VARIABLES)
    table = pd.DataFrame(rows)
    table["_order"] = [order.index(c.split("-")[0]) if c.split("-")[0] in order else len(order) for c in table["choice"]]
    return table.sort_values("_order", kind="stable").drop(columns="_order").reset_index(drop=True)


def mean_std_text(mean: float, std: float, pm: str = " ± ") -> str:
    """'79.12 ± 0.21' (percent), or the mean alone where one seed gives no spread."""
    return percent(mean) if pd.isna(std) else f"{percent(mean)}{pm}{100 * std:.2f}"


def design_table_tex(table: pd.DataFrame) -> str:
    """The report's table of the study: accuracy as mean $\\pm$ std, each variable named once."""
    shown = table.assign(acc=[mean_std_text(m, s, " $\\pm$ ") for m, s in zip(table["acc_mean"], table["acc_std"])],
                         variable=table["variable"].where(table["variable"] != table["variable"].shift(), ""),
                         change=table["change"].map(tex_escape))
    base = shown["choice"] == BASE  # its effect and verdict would compare it with itself
    shown["effect"], shown["resolved"] = shown["effect"].mask(base), shown["resolved"].astype(object).mask(base)
    return to_latex(shown, {**COLUMNS, "change": Column("Choice", "l", str), "variable": Column("Variable", "l", str)})


def write_design_table(table: pd.DataFrame, stem: str | Path) -> list[Path]:
    """`stem`.csv (numbers) and `stem`.tex (as the report prints it)."""
    tex = Path(stem).parent / f"{Path(stem).name}.tex"
    paths = write_table(table, Path(stem))
    atomic_write_text(tex, design_table_tex(table))
    return paths + [tex]


@styled
def design_study_plot(table: pd.DataFrame) -> Figure | None:
    """Left: held-out accuracy against parameters, one point per choice with its seeds' standard deviation,
    labelled where its count differs from the base's by more than 5%. Right: every choice's effect against the
    base with its spread, filled where the effect exceeds the spread. None without a table."""
    if table.empty:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(FULL, 2.0), gridspec_kw={"width_ratios": [1, 1.15]})
    base = table[table["choice"] == BASE].iloc[0]
    colours = {v: PALETTE[i % len(PALETTE)] for i, v in enumerate(dict.fromkeys(table["variable"]))}
    left.axhspan(100 * (base["acc_mean"] - base["acc_std"]), 100 * (base["acc_mean"] + base["acc_std"]),
                 color="grey", alpha=0.2, linewidth=0)
    shown = table[table["choice"] != NO_TTA]
    for _, row in shown.iterrows():
        colour = colours[row["variable"]]
        left.errorbar(row["params"], 100 * row["acc_mean"], yerr=_err(row["acc_std"]), fmt="o", color=colour,
                      mfc=colour if row["resolved"] or row["choice"] == BASE else "white", markersize=3.5,
                      capsize=1.5, elinewidth=0.8, zorder=3)
        if row["choice"] == BASE or abs(row["params"] / base["params"] - 1) > 0.05:
            left.annotate(row["choice"], (row["params"], 100 * row["acc_mean"]), fontsize=MIN_FONT, xytext=(4, -1),
                          textcoords="offset points", va="top", color=colour)
    left.set_xscale("log")
    low, high = table["params"].min(), table["params"].max()
    left.set_xticks([t for t in (25e3, 50e3, 100e3, 200e3, 400e3, 800e3, 1.6e6) if low / 1.5 <= t <= high * 1.5])
    left.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1e3:.0f}k"))
    left.xaxis.set_minor_formatter(NullFormatter())
    left.set(xlabel="trainable parameters", ylabel="held-out accuracy (%)")
    rows = table[table["choice"] != BASE].iloc[::-1]
    for y, (_, row) in enumerate(rows.iterrows()):
        colour = colours[row["variable"]]
        right.errorbar(100 * row["effect"], y, xerr=100 * row["spread"] if pd.notna(row["spread"]) else 0, fmt="o",
                       color=colour, mfc=colour if row["resolved"] else "white", markersize=3.5, capsize=1.5,
                       elinewidth=0.8)
    right.axvline(0, color="grey", linewidth=0.8)
    right.set_yticks(range(len(rows)), rows["choice"], fontsize=MIN_FONT)
    right.set(xlabel="effect against the base (points; bar: spread)")
    right.grid(axis="y", visible=False)
    fig.tight_layout(w_pad=1.0)
    return fig


def _err(std: float) -> float:
    return 0.0 if pd.isna(std) else 100 * float(std)


def read_record(folder: str | Path) -> dict:
    """Where the study ran, from its base run's record: device (and a CPU's model where recorded), torch version,
    commit, epochs, the base's channels, training and held-out images; empty where it cannot be read."""
    folder = Path(folder)
    try:
        metrics = json.loads((folder / f"{BASE}-s0" / "metrics.json").read_text())
        cfg = load_config(folder / f"{BASE}-s0" / CONFIG)
    except (OSError, ValueError, ConfigError):
        return {}
    return {**metrics, "epochs": cfg.train.epochs, "holdout": cfg.data.holdout, "channels": cfg.model.channels,
            "train_images": cfg.data.train_subset or TRAIN_IMAGES - cfg.data.holdout}
