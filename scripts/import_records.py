"""Import a folder of GPU records (e.g. /work/shared/records/h200-2026-11-26) into results/.

    python scripts/import_records.py SOURCE [--data-root /tmp/cifar] [--root .]

Each run keeps config.yaml, history.csv, train.log and metrics.json as recorded (GPU numbers are never
recomputed); metrics.json gains a "provenance" entry (source folder, command, device, commit, and how the
predictions were made). Only the run named `best` keeps its weights (8.6 MB in half precision; their
SHA-256 is checked against the records' README and written to metrics.json as "weights_sha256"). Every
run with weights in SOURCE gets predictions.safetensors, computed here once on the CPU in fp32 from those
GPU-trained weights (test-set probabilities with and without the run's TTA), so that the figures never
depend on the CPU that draws them. The benchmark records go to results/bench/ with a provenance note.
A run stopped by its time limit has no weights, hence no predictions.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from cifar_resnet import run_folder
from cifar_resnet.config import load_config
from cifar_resnet.data.cifar10 import load_splits
from cifar_resnet.data.gpu_loader import GpuLoader
from cifar_resnet.evaluation.evaluate import model_from_weights, record_predictions


@dataclass(frozen=True)
class Imported:
    source: str  # folder in SOURCE
    target: str  # folder in results/runs
    command: str  # how it was trained, from the records' README
    keep_weights: bool


RUNS = (
    Imported("best-s0", "best", "cifar-resnet train --config configs/best.yaml --epochs 120 --seed 0", True),
    Imported("best-s1", "best-seed1", "cifar-resnet train --config configs/best.yaml --epochs 120 --seed 1", False),
    Imported("best-e170", "best-e170",
             "cifar-resnet train --config configs/best.yaml --epochs 170 --seed 0 --time-limit 265", False),
)
BENCH = {  # file: (command, note)
    "speed94.json": ("python benchmarks/speed.py --target 94 --runs 3 --time-limit 90",
                     "airbench 0.1.8 from its sdist on PYTHONPATH"),
    "speed94.log": ("", "the console output of the same command"),
    "throughput_best.json": ("python benchmarks/throughput.py --config configs/best.yaml --steps 60 --warmup 15",
                             "on random images"),
}
RUN_FILES = (run_folder.CONFIG, run_folder.HISTORY, "train.log")


def readme_hashes(source: Path) -> dict[str, str]:
    """The SHA-256 the records' README lists per weights file: {"best-s0/model.safetensors": hex}."""
    text = (source / "README.md").read_text()
    return dict(re.findall(r"`([\w.-]+/model\.safetensors)`\s+([0-9a-f]{64})", text))


def compute_predictions(run_dir: Path, weights: Path, data_root: str | None) -> dict:
    """Write run_dir/predictions.safetensors from `weights` on the CPU in fp32; returns the accuracies."""
    cfg = load_config(run_dir / run_folder.CONFIG)
    model = model_from_weights(cfg, weights, "cpu")
    _, evaluation, split = load_splits(cfg, data_root)
    loader = GpuLoader(evaluation, batch_size=500, device="cpu", train=False)
    metrics = record_predictions(model, loader, run_dir, split, cfg.train.tta, "fp32")
    return {key: round(metrics[key], 4) for key in (f"{split}_acc", f"{split}_acc_tta") if metrics[key] is not None}


def import_run(source: Path, results: Path, run: Imported, hashes: dict[str, str], data_root: str | None) -> None:
    src, dst = source / run.source, results / "runs" / run.target
    dst.mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES:
        if (src / name).is_file():
            shutil.copyfile(src / name, dst / name)
    metrics = json.loads((src / run_folder.METRICS).read_text())
    weights = src / run_folder.WEIGHTS
    provenance = {"source": f"{source.name}/{run.source}", "command": run.command,
                  "device": metrics.get("device"), "torch_version": metrics.get("torch_version"),
                  "git_commit": metrics.get("git_commit"), "seed": metrics.get("seed"),
                  "status": metrics.get("status")}
    if weights.is_file():
        sha = run_folder.file_sha256(weights)
        listed = hashes.get(f"{run.source}/{run_folder.WEIGHTS}")
        if sha != listed:
            raise SystemExit(f"{weights}: SHA-256 {sha} differs from the README's {listed}; the copy is damaged")
        start = time.perf_counter()
        cpu = compute_predictions(dst, weights, data_root)
        provenance["predictions"] = (f"{run_folder.PREDICTIONS} computed after training, on a CPU in fp32 from the "
                                     "GPU-trained half-precision weights, by scripts/import_records.py")
        provenance["cpu_check"] = cpu
        print(f"{run.target}: predictions in {time.perf_counter() - start:.0f} s, CPU accuracies {cpu}")
        if run.keep_weights:
            shutil.copyfile(weights, dst / run_folder.WEIGHTS)
            metrics["weights_sha256"] = sha
            provenance["weights"] = f"{run_folder.WEIGHTS} committed (SHA-256 in weights_sha256)"
        else:
            provenance["weights"] = f"not committed (size); SHA-256 {sha} in {source.name}/{run.source}"
    else:
        provenance["weights"] = "none: a run stopped by its time limit keeps only its checkpoint, not imported"
        provenance["predictions"] = "none (no weights)"
    metrics["provenance"] = provenance
    run_folder.write_metrics(metrics, dst / run_folder.METRICS)


def import_bench(source: Path, results: Path) -> None:
    bench = results / "bench"
    bench.mkdir(parents=True, exist_ok=True)
    env = json.loads((source / "speed94.json").read_text())
    lines = ["# Benchmark records", "",
             f"Copied unchanged by `scripts/import_records.py` from the GPU records `{source.name}`",
             f"({env['device']}, the project at commit {env['git_commit'][:7]}, torch {env['torch_version']}).", "",
             "| file | how it was made |", "| --- | --- |"]
    for name, (command, note) in BENCH.items():
        shutil.copyfile(source / name, bench / name)
        lines.append(f"| `{name}` | " + (f"`{command}` ({note})" if command else note) + " |")
    (bench / "README.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="folder of GPU records, with README.md listing the weights' SHA-256")
    parser.add_argument("--root", type=Path, default=Path("."), help="repository root (default .)")
    parser.add_argument("--data-root", help="folder holding cifar-10-batches-py (default $CIFAR10_ROOT)")
    parser.add_argument("--runs", nargs="*", help="import only these target runs (default all)")
    args = parser.parse_args()
    hashes = readme_hashes(args.source)
    results = args.root / "results"
    for run in RUNS:
        if args.runs is None or run.target in args.runs:
            import_run(args.source, results, run, hashes, args.data_root)
    import_bench(args.source, results)


if __name__ == "__main__":
    main()
