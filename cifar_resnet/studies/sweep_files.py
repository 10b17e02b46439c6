"""A sweep's files: the run configurations `--write-configs` writes, and `summary.csv`, which keeps the rows
of runs that an earlier call of the same `--out` finished (a second seed added later, a sweep continued with
`--resume`). Nothing existing is replaced without `--overwrite`."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from .. import run_folder
from ..audience import option
from ..config import Config, ConfigError, override, save_config
from ..training.history import column

SUMMARY = "summary.csv"
COLUMNS = ("run", "seed", "status", "params", "epochs", "epochs_done", "estimate_s", "seconds", "train_seconds",
           "val_acc", "val_acc_tta", "test_acc", "test_acc_tta")


def write_configs(plan, folder: str | Path, *, overwrite: bool = False) -> list[Path]:
    """Write each run's resolved configuration (of a `sweep.Plan`) to `folder`/<run name without seed>.yaml, with downloads off:
    what scripts/gpu_calibrate.sh hands to benchmarks/throughput.py. An existing file of those names is
    refused (`FolderError`, nothing written) unless `overwrite`."""
    folder = Path(folder)
    run_folder.writable_folder(folder)
    planned = {}
    for run in plan.runs:
        stem = run.name.rsplit("-s", 1)[0]
        if stem not in planned:  # a measurement copy: it never downloads (benchmarks use random images instead)
            planned[stem] = (folder / f"{stem}.yaml", override(run.cfg, **{"data.download": False}))
    taken = [path for path, _ in planned.values() if run_folder.present(path)]
    if taken and not overwrite:
        more = f" (and {len(taken) - 1} more)" if len(taken) > 1 else ""
        raise run_folder.FolderError(f"{taken[0]} exists{more}: nothing written; add "
                                     f"{option('overwrite=True', '--overwrite')} to replace them, or choose another folder")
    run_folder.make_folder(folder)
    for path, cfg in planned.values():
        save_config(cfg, path, new=not overwrite)
    return [path for path, _ in planned.values()]


def history_rows(run_dir: Path) -> list[dict]:
    """The rows of a run's history.csv (empty where it has none)."""
    path = run_dir / run_folder.HISTORY
    return list(csv.DictReader(io.StringIO(path.read_text()))) if path.is_file() else []


def summary_row(run, cfg: Config, status: str, estimate: float, seconds: float | None = None,
                metrics: dict | None = None, history: list[dict] | None = None) -> dict:
    """A run's row of summary.csv: its plan, status and timing, and its accuracies (for a run stopped early, its
    last evaluation)."""
    metrics, history = metrics or {}, history or []
    row = {"run": run.name, "seed": run.seed, "status": status, "params": run.params, "epochs": cfg.train.epochs,
           "epochs_done": len(history), "estimate_s": round(estimate, 1),
           "seconds": None if seconds is None else round(seconds, 1), "train_seconds": metrics.get("train_seconds")}
    for split in ("val", "test"):
        row[f"{split}_acc"], row[f"{split}_acc_tta"] = metrics.get(f"{split}_acc"), metrics.get(f"{split}_acc_tta")
        evaluated = [r[column("eval_acc", split)] for r in history if r.get(column("eval_acc", split))]
        if row[f"{split}_acc"] is None and evaluated:  # stopped early: its last evaluation (status says so)
            row[f"{split}_acc"] = float(evaluated[-1])
    return row


def read_summary(out_dir: Path) -> list[dict]:
    """The rows of `out_dir`/summary.csv (empty where there is none), numbers as numbers and blanks as None, as
    `summary_row` makes them; a file that is not a sweep's summary is a one-line `ConfigError`."""
    path = Path(out_dir) / SUMMARY
    if not run_folder.present(path):
        return []
    try:
        rows = list(csv.DictReader(io.StringIO(run_folder.read_run_file(path).decode("utf-8"))))
    except (UnicodeDecodeError, csv.Error) as err:
        raise ConfigError(f"{path} is not a sweep's summary ({err}): move it away, or choose another --out") from None
    if rows and set(rows[0]) != set(COLUMNS):
        raise ConfigError(f"{path} is not a sweep's summary (its columns are not {', '.join(COLUMNS)}): move it away, "
                          "or choose another --out")
    return [{k: v if k in ("run", "status") else _value(v) for k, v in row.items()} for row in rows]


def _value(text: str | None) -> int | float | str | None:
    if not text:
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def write_summary(rows: list[dict], out_dir: Path, kept: list[dict] = ()) -> Path:
    """summary.csv: the rows `kept` from an earlier call (runs this one does not train), then `rows`, one per
    run, written atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows([*kept, *rows])
    run_folder.atomic_write_text(Path(out_dir) / SUMMARY, buffer.getvalue())
    return Path(out_dir) / SUMMARY
