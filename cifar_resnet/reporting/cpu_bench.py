"""The CPU presets' records: their recorded CPU runs, their benchmarks (`results/bench/<preset>.json`, written
by `benchmarks/cpu.py --preset`) and the held-out comparisons of candidates around them
(`results/bench/<preset>_holdout*.json`, written by `benchmarks/cpu_holdout.py --preset ... --out`). Notebook 04
shows them beside the GPU runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..training.launch_policy import CPU_FP32_PRESET, CPU_PRESET
from .records import RunRecord

CPU_PRESETS = (CPU_PRESET, CPU_FP32_PRESET)  # bf16 where the CPU computes it natively; fp32 elsewhere
HOLDOUT_COLUMNS = ["name", "params", "time_budget", "epochs", "val_acc", "val_acc_tta", "train_seconds",
                   "cpu_seconds", "images_per_second"]


def bench_path(preset: str) -> Path:
    """Where `benchmarks/cpu.py --preset PRESET` writes its record, under results/."""
    return Path("bench") / f"{preset}.json"


def holdout_path(preset: str) -> Path:
    """Where `benchmarks/cpu_holdout.py --preset PRESET` writes its record, under results/."""
    return Path("bench") / f"{preset}_holdout.json"


def cpu_preset_runs(records: list[RunRecord]) -> list[RunRecord]:
    """The finished runs of a CPU preset trained on a CPU: results, unlike the CPU smoke runs."""
    return [r for r in records if r.metrics.get("name") in CPU_PRESETS and not r.on_gpu and r.finished]


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def cpu_bench_summary(results: str | Path, preset: str = CPU_PRESET) -> str:
    """One line from the preset's benchmark record: accuracy, training time, speed, the CPU and its threads."""
    path = Path(results) / bench_path(preset)
    bench = _read(path)
    if bench is None:
        return f"{preset}: no {path} yet: python benchmarks/cpu.py --preset {preset} writes it"
    shortened = f" (shortened: {bench['overrides']})" if bench.get("overrides") else ""
    return (f"{preset} benchmark{shortened}: {bench['test_acc_tta']:.2%} with {bench['tta']} TTA after "
            f"{bench['train_seconds']:.0f} s of training, {bench['images_per_second']:.0f} images/s in "
            f"{bench['precision']} on {bench['cpu']} with {bench['threads']} threads (torch {bench['torch_version']}, "
            f"commit {str(bench['git_commit'])[:7]})")


def holdout_records(results: str | Path, preset: str = CPU_PRESET) -> list[Path]:
    """Every held-out comparison recorded around the preset: results/bench/<preset>_holdout*.json, by name."""
    return sorted((Path(results) / "bench").glob(f"{preset}_holdout*.json"))


def cpu_holdout_caption(path: Path) -> str:
    """One line on what a held-out comparison trained: its split, its length, where it ran and its commit."""
    record = _read(Path(path))
    length = (f"{record['epochs']} epochs each" if record.get("epochs") else
              f"{record.get('scale', 1.0):g} of the preset's time budget each")
    return (f"{Path(path).name}: {len(record['candidates'])} candidates around {record['preset']}, {length}, "
            f"scored on the {record['split']}; {record['cpu']} with {record['threads']} threads, commit "
            f"{str(record['git_commit'])[:7]}; most accurate with TTA: {record['chosen']}")


def cpu_holdout_table(path: str | Path) -> pd.DataFrame:
    """The candidates a held-out comparison trained and their accuracies on the held-out images; images per
    second show where the machine's speed, not the candidate, bought an epoch (empty without the file)."""
    record = _read(Path(path))
    if record is None:
        return pd.DataFrame(columns=HOLDOUT_COLUMNS)
    table = pd.DataFrame(record["candidates"]).reindex(columns=HOLDOUT_COLUMNS)
    return table.assign(images_per_second=table["images_per_second"].round())
