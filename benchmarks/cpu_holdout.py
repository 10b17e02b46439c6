"""Candidates around a CPU preset at equal training time, compared on held-out images.

    python benchmarks/cpu_holdout.py [--preset cpu|cpu_fp32] [--scale 0.2 | --epochs N] [--only NAME ...]
                                     [--threads N] [--data-root DIR]
                                     [--out results/bench/<preset>_holdout.json]

Each candidate is the preset (`cpu` by default) with some values replaced; each fits its epochs to the preset's
`train.time_budget` on this machine, so all train for the same time. All train on the first 45,000 training images
and are scored, with the preset's test-time augmentation, on the last 5,000 (`data.holdout`), never on the test
set. `--scale` shortens every candidate's budget by the same factor so that the comparison fits in a few minutes
each. Where candidates cost the same per step (lookahead against none), `--epochs N` trains each for N epochs
instead: machines here drift in speed between runs, and a budget fitted in whole epochs turns a slower moment into
a lost epoch. The JSON records either, with each run's training seconds and the process's CPU seconds (a shared
machine inflates wall time; CPU seconds divided by the threads estimate an idle one).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from cpu import cold_compile_cache, cpu_seconds

from cifar_resnet.config import load_config, override
from cifar_resnet.machine import cpu_model
from cifar_resnet.run_folder import environment
from cifar_resnet.training.engine import train

HOLDOUT = 5000
# preset -> name -> changes to it
CANDIDATES = {
    # airbench94's hyperparameters: the peak learning rate, lookahead, label smoothing, and a wider last stage
    # (more parameters, so fewer epochs in the same time)
    "cpu": {
        "preset": {},
        "lr 1.0": {"train.lr": 1.0},
        "lr 2.25": {"train.lr": 2.25},
        "no lookahead": {"train.lookahead_every": 0},
        "label smoothing 0.1": {"train.label_smoothing": 0.1},
        "64-256-384": {"model.channels": [64, 256, 384]},
    },
    # Around cpu_fp32 as it was at commit 4d223d2 (C = 32/64/128, batch 512 at lr 0.4; "batch 256" is today's
    # preset): airbench's lookahead, a wider network (fewer epochs in the same time), and half the batch (twice
    # the steps, the lr halved with it), recorded with --out
    # results/bench/cpu_fp32_holdout_levers.json (and the same-cost ones at equal epochs, _epochs.json). The
    # comparison that chose the width, results/bench/cpu_fp32_holdout.json, ran at commit 84b3da7 with the
    # candidates "preset" (then the design study's C = 24/48/96), "eager" and "C = 32/64/128". Its eager run
    # came after a compiled one in the same process and ran faster (460 images/s) than eager in a fresh process
    # (286-350, results/bench/cpu_compile.json): perhaps the compiled kernels' fast-math flushing denormals
    # process-wide (not verified).
    "cpu_fp32": {
        "preset": {},
        "lookahead": {"train.lookahead_every": 5},
        "C = 48/96/192": {"model.channels": [48, 96, 192]},
        "batch 256": {"train.batch_size": 256, "train.lr": 0.2},
        "batch 256, lookahead": {"train.batch_size": 256, "train.lr": 0.2, "train.lookahead_every": 5},
    },
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu", choices=sorted(CANDIDATES), help="the preset (default: cpu)")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--scale", type=float, default=1.0, help="share of the preset's time budget to train for")
    length.add_argument("--epochs", type=int, help="train each candidate this many epochs, not for a time budget "
                        "(for candidates that cost the same per step)")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice, the cores)")
    parser.add_argument("--data-root", help="folder holding cifar-10-batches-py (default $CIFAR10_ROOT, else ./data)")
    parser.add_argument("--only", nargs="*", help="train only these candidates")
    parser.add_argument("--out", help="the record (default: results/bench/<preset>_holdout.json)")
    args = parser.parse_args()
    args.out = args.out or f"results/bench/{args.preset}_holdout.json"
    args.load_at_start = [round(x, 2) for x in os.getloadavg()]
    if args.threads:
        torch.set_num_threads(args.threads)
    base = load_config(args.preset)
    cold_compile_cache()  # a compiled candidate pays its compilation, as a first run does
    rows = []
    for name, changes in CANDIDATES[args.preset].items():
        if args.only and name not in args.only:
            continue
        budget = 0.0 if args.epochs else base.train.time_budget * args.scale
        schedule = {"train.time_budget": budget} | ({"train.epochs": args.epochs} if args.epochs else {})
        cfg = override(base, **changes, **schedule, **{"data.holdout": HOLDOUT})
        began, cpu = time.perf_counter(), cpu_seconds()
        with tempfile.TemporaryDirectory() as out:
            metrics = train(cfg, out, data_root=args.data_root, device="cpu", progress=False, log=None)
        row = {"name": name, "changes": changes, "time_budget": budget, "epochs": metrics["epochs"], "params": metrics["params"],
               "val_acc": round(metrics["val_acc"], 4), "val_acc_tta": round(metrics["val_acc_tta"], 4),
               "train_seconds": metrics["train_seconds"], "wall_seconds": round(time.perf_counter() - began, 1),
               "cpu_seconds": round(cpu_seconds() - cpu, 1), "images_per_second": metrics["images_per_second"]}
        print(json.dumps(row), flush=True)
        rows.append(row)
        write_record(rows, args)  # after every candidate: a sweep stopped early keeps what it compared
    best = max(rows, key=lambda row: row["val_acc_tta"])
    print(f"chosen on the held-out images: {best['name']} ({best['val_acc_tta']:.4f} with TTA); wrote {args.out}")


def write_record(rows: list[dict], args: argparse.Namespace) -> None:
    best = max(rows, key=lambda row: row["val_acc_tta"])
    candidates = CANDIDATES[args.preset]
    record = {"preset": args.preset, "split": f"last {HOLDOUT} training images (data.holdout)", "scale": args.scale,
              "epochs": args.epochs,
              "threads": torch.get_num_threads(), "cpu": cpu_model(), "chosen": best["name"],
              "complete": len(rows) == len([n for n in candidates if not args.only or n in args.only]),
              "load_average_at_start": args.load_at_start, "load_average_now": [round(x, 2) for x in os.getloadavg()],
              "candidates": rows, **environment(torch.device("cpu"))}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
