"""The recorded runs (one row per run, and mean ± std over seeds) and the table files they are written to:
CSV, LaTeX for the report, and `results/README.md`. The same inputs give the same bytes on disk.

Runs live in two places: training writes `runs/<name>` (ignored by git); the recorded runs that the
figures, tables and report are made of are `results/runs/<name>`, and `record_run` copies one there.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from .. import run_folder
from ..audience import advise, resume_advice, shown_path
from ..config import ConfigError, load_config
from ..formats import Column, duration, markdown_escape, mean_std, percent, tex_escape, thousands, to_latex
from ..training.history import field_name
from .record_checks import CIFAR10_TEST, check_record as _check_record, data_name, results_folder


# ==== the recorded runs ==============================================================================

RESULTS_RUNS = "results/runs"  # the recorded runs: committed, read by the figures, tables and the report
USER_RUNS = "runs"  # where `cifar-resnet train` and `make train` write (ignored by git)


def require_clone(root: str | Path, command: str) -> None:
    """`ConfigError` (one line) where `root` holds no `results/runs/`: `command` reads and rewrites a clone's
    recorded results, and run elsewhere (say after `pip install`) it would write empty tables."""
    if not (Path(root) / RESULTS_RUNS).is_dir():
        from .address import clone_command

        how = advise(f"give root= a clone's folder (`{clone_command()}`)", "run it from the clone's root or give --root CLONE",
                     f"get one with `{clone_command()}` and run it from its root (or give --root CLONE)")
        raise ConfigError(f"{command} needs a clone of the repository: {Path(root).resolve()} holds no {RESULTS_RUNS}/; "
                          + how)


def number(value: Any) -> float | None:
    """`value` as a finite float, or None for null, strings, booleans and NaN."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def accuracy(value: Any) -> float | None:
    """A recorded accuracy rounded to 4 decimals, or None. CIFAR-10 has 10,000 test images, so 4 decimals
    are exact, and rounding removes the float32 noise of metrics.json (0.9490999579 -> 0.9491)."""
    value = number(value)
    return None if value is None else round(value, 4)


def read_json(path: Path) -> Any:
    """The JSON in `path`, or None (with a warning if it exists but cannot be read)."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        warnings.warn(f"ignoring {path}: {err}", stacklevel=3)
        return None


@dataclass
class RunRecord:
    """A run folder and its metrics.json: what the figures, the tables and the report know of a run."""

    path: Path
    metrics: dict

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def on_gpu(self) -> bool:
        """False for CPU smoke runs (and runs that do not say where they ran): those are never results."""
        device = self.metrics.get("device")
        return isinstance(device, str) and device.strip().lower() not in ("", "cpu")

    @property
    def finished(self) -> bool:
        """Trained to the end of its schedule (not stopped by a time limit)."""
        return self.metrics.get("status", "finished") == "finished"

    @property
    def on_cifar10(self) -> bool:
        """Measured on CIFAR-10's test set, as `record` named its data (records made before it did pass)."""
        return self.metrics.get("data", CIFAR10_TEST) == CIFAR10_TEST

    @property
    def test_acc(self) -> float | None:
        return accuracy(self.metrics.get("test_acc")) if self.on_cifar10 else None

    @property
    def test_acc_tta(self) -> float | None:
        return accuracy(self.metrics.get("test_acc_tta")) if self.on_cifar10 else None

    @property
    def label(self) -> str:
        """The folder name with seed and, for a run stopped early, the epochs it completed."""
        x = self.metrics
        stopped = "" if self.finished else f"; time limit: {x.get('epochs_completed')} of {x.get('epochs')} epochs"
        return f"{self.name} (seed {x.get('seed')}{stopped})"


def load_runs(folder: str | Path) -> list[RunRecord]:
    """The run folders `folder/*/metrics.json` (`RESULTS_RUNS`, or `USER_RUNS` for your own), by name. Names
    that begin with a dot are passed over: a record being written, or one a killed `record` left. Values are
    taken as they are (`RunRecord` reads odd ones as missing); `cifar-resnet figures` checks them first."""
    return [RunRecord(p.parent, json.loads(p.read_text())) for p in recorded_metrics(folder)]


def recorded_metrics(folder: str | Path) -> list[Path]:
    """The metrics.json files of the run folders in `folder`, by name, those whose names begin with a dot
    passed over."""
    return [p for p in sorted(Path(folder).glob("*/metrics.json")) if not p.parent.name.startswith(".")]


def newest_run(folder: str | Path, *, gpu_only: bool = False) -> RunRecord | None:
    """The most recently finished run with recorded predictions under `folder` (by the time of its
    metrics.json), or None; with `gpu_only`, CPU smoke runs are passed over."""
    found = [r for r in load_runs(folder) if r.finished and (r.path / run_folder.PREDICTIONS).is_file()
             and (r.on_gpu or not gpu_only)]
    return max(found, key=lambda r: ((r.path / run_folder.METRICS).stat().st_mtime, r.name), default=None)


def record_run(run_dir: str | Path, results_dir: str | Path | None = None, *, name: str | None = None,
               weights: bool = False) -> Path:
    """Copy a finished run (config, history, metrics, predictions, log; the weights only if asked) into
    `results_dir/runs/<name>` (default: the results/ of the clone the current folder is in), where the
    figures, tables and the report read it; returns the new folder. Every file is checked first, and the
    folder appears whole or not at all."""
    src, results_dir = Path(run_dir), results_folder(results_dir)
    name = run_folder.folder_name(name or src.resolve().name, "--name" if name else "the run folder's name (give --name)",
                                  Path(results_dir) / "runs")
    metrics = run_folder.read_metrics(src)
    if metrics.get("status", "finished") != "finished" or not run_folder.present(src / run_folder.PREDICTIONS):
        raise FileNotFoundError(f"{src} is no finished run with {run_folder.PREDICTIONS}: finish it first "
                                f"({resume_advice(shown_path(src))})")
    dst = Path(results_dir) / "runs" / name
    if run_folder.present(dst):
        raise FileExistsError(f"{dst} exists: choose another name, or remove it first")
    names = [run_folder.CONFIG, run_folder.HISTORY, run_folder.METRICS, run_folder.PREDICTIONS, "train.log"]
    names += [run_folder.WEIGHTS] if weights else []
    run_folder.check_own_files(src, names)  # before anything reads them: a link is refused, never followed
    _check_record(src, weights)
    # data_root is a folder of this machine (a record is read on others, and is committed): the data's name stays.
    kept = {**{k: v for k, v in metrics.items() if k != "data_root"}, "data": data_name(src, metrics)}
    run_folder.copy_run_folder(src, dst, names, {run_folder.METRICS: (json.dumps(kept, indent=2) + "\n").encode()})
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
                     "device": x.get("device"), "test_acc": r.test_acc, "test_acc_tta": r.test_acc_tta,
                     "tta": x.get("tta"), "seed": x.get("seed")})
    table = pd.DataFrame(rows, columns=["run", "model", "params", "status", "epochs", "epochs_planned", "train_seconds",
                                        "wall_seconds", "device", "test_acc", "test_acc_tta", "tta", "seed"])
    # Integers stay integers where a run lacks a value; accuracies on <= 10,000 images need 4 decimals.
    table = table.astype({"params": "Int64", "epochs": "Int64", "epochs_planned": "Int64", "seed": "Int64"})
    return table.astype({"test_acc": float, "test_acc_tta": float}).round({"test_acc": 4, "test_acc_tta": 4})


def _recipe(record: RunRecord) -> str:
    """The run's configuration without its seed: runs that differ only in the seed share it."""
    try:
        cfg = dataclasses.asdict(load_config(record.path / run_folder.CONFIG))
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


def best_run(records: Sequence[RunRecord]) -> RunRecord | None:
    """The finished GPU run named `best`, else the finished GPU run with the highest test accuracy, or None."""
    gpu = [r for r in records if r.test_acc is not None and r.finished and r.on_gpu]
    named = [r for r in gpu if r.name == "best"]
    return named[0] if named else max(gpu, key=lambda r: r.test_acc, default=None)


def pick_best_run(records: Sequence[RunRecord]) -> tuple[RunRecord, str]:
    """The run to analyse and, in words, why: `best_run` where there is a GPU result, else a CPU smoke run,
    which is no result at all."""
    scored = [r for r in records if r.test_acc is not None and r.finished]
    best = best_run(scored)
    if best is not None and best.name == "best":
        return best, f"{best.label}: the run recorded as the project's final one, on {best.metrics.get('device')}."
    if best is not None:
        return best, (f"{best.label}: the most accurate of {sum(r.on_gpu for r in scored)} GPU run(s). No run is "
                      "recorded as `best`; picking by test accuracy makes this number optimistic.")
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
    """A run's history.csv, its columns named as `history.EpochStats`'s fields (eval_acc: test or val)."""
    return pd.read_csv(Path(run_dir) / run_folder.HISTORY).rename(columns=field_name)


def last_evaluation(run_dir: Path) -> tuple[int, float] | None:
    """(epoch, accuracy) of a run's last evaluation in history.csv: for a run stopped by its time limit,
    the only accuracy it has, measured before the end of its schedule."""
    history = load_history(run_dir).dropna(subset=["eval_acc"])
    return (int(history["epoch"].iloc[-1]), float(history["eval_acc"].iloc[-1])) if len(history) else None


# ==== table files ====================================================================================

def write_table(table: pd.DataFrame, stem: Path, columns: dict[str, Column] | None = None) -> list[Path]:
    """Write `stem`.csv and, given LaTeX columns, `stem`.tex; returns the paths written."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    csv = stem.parent / f"{stem.name}.csv"
    run_folder.atomic_write_text(csv, table.to_csv(index=False, lineterminator="\n"))
    if columns is None:
        return [csv]
    tex = stem.parent / f"{stem.name}.tex"
    run_folder.atomic_write_text(tex, to_latex(table, columns))
    return [csv, tex]


MISSING = "-"  # a value a run does not have (a time-limited run's accuracy), as the tables write it


def for_display(table: pd.DataFrame) -> pd.DataFrame:
    """A copy of a table for reading in a notebook: accuracies (columns named `*acc*`, `accuracy`, `mean`,
    `severity *`), confidences, shares and accuracy differences (`effect`, `spread`) as percentages with two
    decimals, seconds with one, parameters with thousands separators; a missing value is '-' in every column
    (never NaN or a blank)."""
    def shown(column: str, formatter=str) -> pd.Series:
        return table[column].map(lambda v: MISSING if pd.isna(v) else formatter(v))

    out = table.copy()
    for column in table.columns:
        if "acc" in column or column in ("confidence", "mean", "share", "effect", "spread") or column.startswith("severity "):
            out[column] = shown(column, lambda v: f"{100 * float(v):.2f}%")
        elif "seconds" in column:
            out[column] = shown(column, lambda v: f"{float(v):.1f}")
        elif column == "params":
            out[column] = shown(column, lambda v: f"{int(v):,}")
        elif table[column].isna().any():
            out[column] = shown(column)
    return out


def write_seeds_table(table: pd.DataFrame, stem: Path) -> list[Path]:
    """`stem`.csv (numbers) and `stem`.tex (mean $\\pm$ std in percent) of `seeds_table`'s rows."""
    def cells(key: str) -> list[str | None]:
        return [None if pd.isna(m) else mean_std(m, s, pm=" $\\pm$ ")
                for m, s in zip(table[f"{key}_mean"], table[f"{key}_std"])]

    shown = table.assign(acc=cells("test_acc"), acc_tta=cells("test_acc_tta"))
    csv = write_table(table, stem)
    tex = Path(stem).parent / f"{Path(stem).name}.tex"
    run_folder.atomic_write_text(tex, to_latex(shown, SEEDS_COLUMNS))
    return csv + [tex]


def write_runs_readme(records: Sequence[RunRecord], path: Path) -> Path:
    """`results/README.md`: the recorded runs as Markdown tables (one row per run, then one per recipe
    over its seeds), and where each run came from."""
    table, seeds = runs_table(records), seeds_table(records)
    lines = ["# Recorded runs", "",
             "Generated by `cifar-resnet figures` (and notebook 04) from `results/runs/*/metrics.json`; do not edit.",
             "Runs of the CPU presets (`cpu`, `cpu_fp32`) on a CPU are results (their benchmarks: `results/bench/cpu.json`,",
             "`cpu_fp32.json`); other CPU runs are smoke tests of the pipeline. A run stopped by its time limit has no test accuracy of its own",
             "(see the notes). Each run's recipe is the `config.yaml` in its folder.", "",
             "| run | model | parameters | epochs | status | train time | wall time | device | test acc. | with TTA | seed |",
             "| --- | --- | ---: | ---: | --- | ---: | ---: | --- | ---: | ---: | ---: |"]
    for row in table.itertuples():
        acc = f"{100 * row.test_acc:.2f}%" if pd.notna(row.test_acc) else "-"
        tta = f"{100 * row.test_acc_tta:.2f}% ({row.tta})" if pd.notna(row.test_acc_tta) else "-"
        md = markdown_escape  # names and devices are the user's text: a `|` or a newline would break the table
        lines.append(f"| {md(row.run)} | {md(row.model)} | {int(row.params):,} | {row.epochs}/{row.epochs_planned} | "
                     f"{md(row.status)} | {float(row.train_seconds):.1f} s | {float(row.wall_seconds):.1f} s | "
                     f"{md(row.device)} | {acc} | {tta} | {row.seed} |")
    if table.empty:
        lines.append("| (none yet: train with `cifar-resnet train`, then `cifar-resnet record RUN_DIR`) |||||||||||")
    lines += ["", "## Over seeds", "",
              "Finished runs of the same configuration and schedule that differ only in the seed: mean ± sample",
              "standard deviation over the seeds.", "",
              "| model | epochs | seeds | runs | test acc. (%) | with TTA (%) | train time |",
              "| --- | ---: | ---: | --- | ---: | ---: | ---: |"]
    for row in seeds.itertuples():
        lines.append(f"| {markdown_escape(row.model)} | {row.epochs} | {row.seeds} | {markdown_escape(row.runs)} | "
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
        if not r.on_cifar10:
            note.append(f"measured on {x.get('data')}: no CIFAR-10 test accuracy")
        source = x.get("provenance", {})
        if source:
            note.append(f"trained with `{source.get('command')}` on {source.get('device')}, torch "
                        f"{source.get('torch_version')}, commit {str(source.get('git_commit'))[:7]} "
                        f"(records {source.get('source')})")
        note.append("predictions: " + (source.get("predictions") if source.get("predictions") else
                                       "recorded at the end of training" if (r.path / run_folder.PREDICTIONS).is_file()
                                       else "none"))
        note.append("weights: " + (source.get("weights") if source.get("weights") else
                                   "committed" if (r.path / run_folder.WEIGHTS).is_file() else "not committed"))
        lines.append(f"- **{markdown_escape(r.name)}**: " + markdown_escape("; ".join(note)) + ".")
    path = Path(path)
    run_folder.atomic_write_text(path, "\n".join(lines) + "\n")
    return path


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
