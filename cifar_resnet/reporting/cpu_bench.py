"""The `cpu` preset's records: its recorded CPU runs, its benchmark (`results/bench/cpu.json`, written by
`benchmarks/cpu.py`) and the held-out comparison of candidates around it (`results/bench/cpu_holdout.json`,
written by `benchmarks/cpu_holdout.py`). Notebook 04 shows them beside the GPU runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .records import RunRecord

CPU_PRESET = "cpu"
BENCH = Path("bench") / "cpu.json"  # under results/
HOLDOUT = Path("bench") / "cpu_holdout.json"
HOLDOUT_COLUMNS = ["name", "params", "time_budget", "epochs", "val_acc", "val_acc_tta", "train_seconds",
                   "cpu_seconds"]


def cpu_preset_runs(records: list[RunRecord]) -> list[RunRecord]:
    """The finished runs of the `cpu` preset trained on a CPU: results, unlike the CPU smoke runs."""
    return [r for r in records if r.metrics.get("name") == CPU_PRESET and not r.on_gpu and r.finished]


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def cpu_bench_summary(results: str | Path) -> str:
    """One line from the benchmark's record: accuracy, training time, speed, the CPU and its threads."""
    bench = _read(Path(results) / BENCH)
    if bench is None:
        return f"no {Path(results) / BENCH} yet: python benchmarks/cpu.py writes it"
    shortened = f" (shortened: {bench['overrides']})" if bench.get("overrides") else ""
    return (f"benchmark{shortened}: {bench['test_acc_tta']:.2%} with {bench['tta']} TTA after {bench['train_seconds']:.0f} s "
            f"of training, {bench['images_per_second']:.0f} images/s in {bench['precision']} on {bench['cpu']} with "
            f"{bench['threads']} threads (torch {bench['torch_version']}, commit {str(bench['git_commit'])[:7]})")


def cpu_holdout_table(results: str | Path) -> pd.DataFrame:
    """The candidates the held-out comparison trained, and its accuracies on the held-out images (empty without it)."""
    record = _read(Path(results) / HOLDOUT)
    if record is None:
        return pd.DataFrame(columns=HOLDOUT_COLUMNS)
    return pd.DataFrame(record["candidates"])[HOLDOUT_COLUMNS]
