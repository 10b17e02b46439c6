"""A CPU preset's benchmark: train it on the full training set on this machine's CPU and record the result.

    python benchmarks/cpu.py [--preset cpu|cpu_fp32] [--out runs/<preset>] [--json results/bench/<preset>.json]
                             [--threads N] [--data-root DIR]
    python benchmarks/cpu.py --epochs 1 --train-subset 2000 --test-subset 1000 --json /tmp/cpu_dry.json   # a dry run, a minute

Trains the preset (`cpu` by default) through the same launch policy and `Trainer` as `cifar-resnet train` into
an ordinary run folder (`--out`, default $CIFAR_RESNET_RUNS/<preset>, else runs/<preset>), which
`cifar-resnet record` then copies into results/runs/. Prints and writes the test accuracy with and without the preset's test-time augmentation,
the training seconds (the epochs' training steps, torch.compile's compilation among them, with an empty
compile cache as a first run has it: not data loading, per-epoch evaluation or the final TTA pass, which the
wall time includes), training images per second, the CPU model and the threads, the
process's CPU seconds (on a shared machine wall time is inflated; CPU seconds / threads estimate an idle
one), and the record's fields (torch version, seed, wall time, git commit). A result meant for the README
comes from a machine where nothing else runs. Any override is written into the JSON ("overrides").
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

import torch

from cifar_resnet.config import config_to_dict, load_config, override
from cifar_resnet.run_folder import user_runs_dir
from cifar_resnet.machine import cpu_model
from cifar_resnet.training.launch_policy import train

PRESETS = ("cpu", "cpu_fp32")


def cpu_seconds() -> float:
    """User and system CPU seconds of this process so far, all threads together."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cold_compile_cache() -> str:
    """Point torch.compile at an empty cache folder, so a compiled run pays the compilation a first run pays."""
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-")
    return os.environ["TORCHINDUCTOR_CACHE_DIR"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu", choices=PRESETS, help="the preset (default: cpu)")
    parser.add_argument("--out", help="run folder (default $CIFAR_RESNET_RUNS/<preset>, else runs/<preset>); replaced if it exists")
    parser.add_argument("--json", help="where the result goes (default: results/bench/<preset>.json)")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice, the cores)")
    parser.add_argument("--data-root", help="folder holding cifar-10-batches-py (default $CIFAR10_ROOT, else ./data)")
    parser.add_argument("--epochs", type=int, help="override train.epochs (dry runs)")
    parser.add_argument("--train-subset", type=int, help="override data.train_subset (dry runs)")
    parser.add_argument("--test-subset", type=int, help="override data.test_subset (dry runs)")
    args = parser.parse_args()
    args.json = args.json or f"results/bench/{args.preset}.json"
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = {k: v for k, v in {"train.epochs": args.epochs, "data.train_subset": args.train_subset,
                                   "data.test_subset": args.test_subset}.items()
                 if v is not None}
    cfg = override(load_config(args.preset), **overrides)
    out = Path(args.out or user_runs_dir() / args.preset)
    cold_compile_cache()
    began, cpu, load = time.perf_counter(), cpu_seconds(), round(os.getloadavg()[0], 2)
    metrics = train(cfg, out, data_root=args.data_root, device="cpu", resume=False, allow_slow=True, progress=False)
    wall, cpu = time.perf_counter() - began, cpu_seconds() - cpu
    threads = torch.get_num_threads()
    result = {"preset": args.preset, "config": config_to_dict(cfg), "run": str(out), "overrides": overrides, "cpu": cpu_model(),
              "threads": threads, "cores_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
              "load_average_at_start": load, "load_average_at_end": round(os.getloadavg()[0], 2),
              "params": metrics["params"], "epochs": metrics["epochs"], "time_budget": cfg.train.time_budget,
              "test_acc": metrics["test_acc"], "tta": metrics["tta"], "test_acc_tta": metrics["test_acc_tta"],
              "train_seconds": metrics["train_seconds"], "images_per_second": metrics["images_per_second"],
              "wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1), "precision": metrics["precision"],
              "seed": metrics["seed"], "torch_version": metrics["torch_version"], "git_commit": metrics["git_commit"]}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{args.preset}: test accuracy {result['test_acc_tta']:.4f} with {result['tta']} TTA ({result['test_acc']:.4f} "
          f"without) after {result['train_seconds']:.0f} s of training ({result['images_per_second']:.0f} images/s, "
          f"{result['precision']}) on {result['cpu']} with {threads} threads; wall {wall:.0f} s, CPU {cpu:.0f} s; "
          f"wrote {args.json}")


if __name__ == "__main__":
    main()
