"""torch.compile on the CPU: a preset's training epochs eager and compiled, and what compiling costs.

    python benchmarks/cpu_compile.py [--config cpu_fp32] [--images 20000] [--threads N] [--data-root DIR]
                                     [--json results/bench/cpu_compile.json]

Each mode trains the preset (`train.compile` off, then on; `train.time_budget` off) for three epochs of the first
`--images` training images through the one training path (`Trainer`), in this process, with an empty compile
cache (a fresh TORCHINDUCTOR_CACHE_DIR, so the compilation is what a first run pays). The later epochs give the
steady speed (their mean); the first epoch's extra time over them is the compilation (less the kernels' first
build, which eager pays too). Eager runs first: after compiled kernels are loaded, an eager run in the same
process was seen to run faster. Printed and written: images per second of each, the compile seconds, the
speed-up, and the training budget above which compiling pays (compile seconds / (1 - compiled / eager seconds per
image)), with the CPU's model, threads, load averages, torch version and commit. A result meant for the README
comes from a machine where nothing else runs.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import torch
from cpu import cold_compile_cache

from cifar_resnet.config import config_to_dict, load_config, override
from cifar_resnet.run_folder import atomic_write_text, environment
from cifar_resnet.training.engine import Trainer

EPOCHS = 3


def timed_epochs(cfg, data_root: str | None) -> list[float]:
    """Seconds of each training epoch of `cfg` (its steps only, as the Trainer times them)."""
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(cfg, Path(out) / "run", data_root=data_root, device="cpu", progress=False, log=None,
                          tensorboard=False)
        try:
            return [stats.seconds for stats in trainer.epochs()]
        finally:
            trainer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="cpu_fp32", help="preset or YAML file (default: cpu_fp32)")
    parser.add_argument("--images", type=int, default=20_000, help="training images per epoch (default 20000)")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice, the cores)")
    parser.add_argument("--data-root", help="folder holding cifar-10-batches-py (default $CIFAR10_ROOT, else ./data)")
    parser.add_argument("--json", default="results/bench/cpu_compile.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    base = override(load_config(args.config), **{"train.epochs": EPOCHS, "train.time_budget": 0.0,
                                                 "train.eval_every": EPOCHS, "data.train_subset": args.images})
    cold_compile_cache()
    record = {"config": base.name, "model": config_to_dict(base)["model"], "images_per_epoch": args.images,
              "batch_size": base.train.batch_size, "load_average_at_start": [round(x, 2) for x in os.getloadavg()], **environment(torch.device("cpu"))}
    for mode, compiled in (("eager", False), ("compiled", True)):
        seconds = timed_epochs(override(base, **{"train.compile": compiled}), args.data_root)
        steady = sum(seconds[1:]) / len(seconds[1:])
        record[mode] = {"epoch_seconds": [round(s, 2) for s in seconds], "steady_epoch_seconds": round(steady, 2),
                        "images_per_second": round(args.images / steady, 1)}
        print(mode, json.dumps(record[mode]), flush=True)
    eager, compiled = (record[mode] for mode in ("eager", "compiled"))
    extra = lambda side: side["epoch_seconds"][0] - side["steady_epoch_seconds"]
    compile_seconds = max(0.0, extra(compiled) - extra(eager))
    ratio = compiled["steady_epoch_seconds"] / eager["steady_epoch_seconds"]
    record.update(compile_seconds=round(compile_seconds, 1), speedup=round(1 / ratio, 3),
                  pays_above_seconds=round(compile_seconds / (1 - ratio), 1) if ratio < 1 else None,
                  load_average_at_end=[round(x, 2) for x in os.getloadavg()])
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(args.json), json.dumps(record, indent=2) + "\n")
    pays = (f"it pays in a budget above {record['pays_above_seconds']:.0f} s of training" if ratio < 1
            else "it never pays here")
    print(f"{base.name}: compiled {record['speedup']:.2f}x the eager speed ({record['compiled']['images_per_second']:.0f} "
          f"against {record['eager']['images_per_second']:.0f} images/s) after {compile_seconds:.0f} s of compiling; "
          f"{pays}; {record['cpu']}, {record['threads']} threads, torch {record['torch_version']}; wrote {args.json}")


if __name__ == "__main__":
    main()
