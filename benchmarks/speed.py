"""Time to 94% (or 95%): this library's residual fast94 / fast95 against airbench, on one GPU, in one process.

    python benchmarks/speed.py [--target 94 95] [--runs 5] [--data-root DIR] [--time-limit S]
    python benchmarks/speed.py --smoke        # tiny CPU dry run (also what happens without a GPU)

For each target both sides get the same tensors, loaded by `cifar_resnet.data.load_cifar10` and put on the
GPU before any timing: ours (`configs/fast{target}.yaml`, trained by the engine's `Trainer`, the one training
path, on one network compiled once) and
airbench94 / airbench95 from the PyPI package `airbench` 0.1.8 (Jordan 2024; not a dependency of this
project: install it, or put its wheel on PYTHONPATH). Each side first does one full untimed warm-up run
(compilation, cuDNN autotuning), then seeds 0..n-1 alternate between the sides, so that drift in clocks or
temperature touches both alike.

The record, one JSON file per target (`--out`, with {target} replaced), is rewritten after every run, so a
timeout keeps what was measured: device, torch version, commit, n_runs, for each side the accuracies (with
test-time augmentation, and without), seconds, their means and standard deviations, trainable parameters,
and ratio = ours / airbench mean seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

from cifar_resnet.config import Config, config_to_dict, load_config, override
from cifar_resnet.data.cifar10 import CIFAR10Split, load_cifar10
from cifar_resnet.evaluation.evaluate import evaluate
from cifar_resnet.models import count_parameters, create_model
from cifar_resnet.run_folder import atomic_write_text, environment
from cifar_resnet.training.engine import Trainer

ROOT = Path(__file__).resolve().parents[1]
TIMING = ("Seconds of one run, each part with the device synchronised. airbench: everything from the call "
          "that builds its network to the final test accuracy with 6-view test-time augmentation (whitening "
          "init, all training steps, TTA evaluation, and reloading its test set from a file in the page cache, "
          "tens of milliseconds). Ours: the Trainer's set-up (loader, re-initialising a network compiled once, "
          "whitening init, optimiser), its training steps (train_seconds, epoch by epoch) and the final TTA "
          "evaluation; between epochs the Trainer also writes its checkpoint, which airbench does not, and "
          "that is left out (ours.wall_seconds has it). Warm-up and compilation are excluded for both.")
WARMUP_SEED = 10_000  # no timed run uses it
SMOKE_IMAGES = (1024, 512)  # training and test images of the smoke run
SMOKE_RUNS = 2
SMOKE_CHANGES = {"model.channels": [16, 32, 32], "train.epochs": 1, "train.eval_every": 1, "train.batch_size": 128,
                 "train.whiten_bias_epochs": 0.5, "train.precision": "fp32", "train.compile": False}


def stopwatch(device: torch.device) -> Callable[[], float]:
    """Start timing now, the device idle (CUDA events on a GPU); call the result for the seconds since."""
    if device.type != "cuda":
        start = time.perf_counter()
        return lambda: time.perf_counter() - start
    torch.cuda.synchronize(device)
    begin = torch.cuda.Event(enable_timing=True)
    begin.record()

    def seconds() -> float:
        end = torch.cuda.Event(enable_timing=True)
        end.record()
        end.synchronize()
        return begin.elapsed_time(end) / 1000

    return seconds


@contextlib.contextmanager
def working_directory(folder: Path):
    previous = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


class Airbench:
    """airbench94 / airbench95 from the `airbench` package, fed this project's tensors.

    Its `train` loads the test set from ./cifar10/test.pt, so every call runs in a scratch folder holding
    train.pt and test.pt written from our splits in airbench's format. Its own settings otherwise: batch
    1024, alternating flip, translate 2, 6-view TTA (tta_level=2).
    """

    device = torch.device("cuda")  # where its code runs; benchmarks/cpu_race.py moves it to the CPU

    def __init__(self, target: int, train: CIFAR10Split, test: CIFAR10Split, folder: Path) -> None:
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("airbench runs on CUDA only")
        import airbench

        self.airbench, self.folder, self.name = airbench, folder, f"airbench{target}"
        self.train_fn, make_net = getattr(airbench, f"train{target}"), getattr(airbench, f"make_net{target}")
        data = folder / "cifar10"
        data.mkdir(parents=True, exist_ok=True)
        for split, file in ((train, "train.pt"), (test, "test.pt")):
            images = split.images if split.images.shape[-1] == 3 else split.images.permute(0, 2, 3, 1)
            torch.save({"images": images.contiguous(), "labels": split.labels, "classes": list(split.classes)},
                       data / file)
        with working_directory(folder), self.ported():
            self.train_loader = airbench.CifarLoader(str(data), train=True, batch_size=1024,
                                                     aug={"flip": True, "translate": 2}, altflip=True)
            self.test_loader = airbench.CifarLoader(str(data), train=False, batch_size=2000)
            self.params = count_parameters(make_net())
        try:
            from importlib.metadata import version
            self.version = version("airbench")
        except Exception:  # noqa: BLE001 - a wheel on PYTHONPATH may carry no metadata
            self.version = "unknown"

    def ported(self) -> contextlib.AbstractContextManager:
        """Where airbench's own code runs (its loaders, network, training and evaluation): as it is, on CUDA."""
        return contextlib.nullcontext()

    def warmup(self) -> None:
        self.run(WARMUP_SEED)

    def run(self, seed: int, **options) -> dict:
        """One run of its train function (`options` passed on, e.g. epochs), then its evaluation."""
        torch.manual_seed(seed)
        with working_directory(self.folder), self.ported():
            elapsed = stopwatch(self.device)
            model = self.train_fn(self.train_loader, verbose=False, **options)
            train_seconds = elapsed()
            acc_tta = self.airbench.evaluate(model, self.test_loader, tta_level=2)
            seconds = elapsed()
            acc = self.airbench.evaluate(model, self.test_loader, tta_level=0)  # untimed, for the record
        return {"acc": acc, "acc_tta": acc_tta, "seconds": seconds, "train_seconds": train_seconds}


class Ours:
    """`configs/fast{target}.yaml` through the one training path: each run a `Trainer` on the same network,
    compiled once and re-initialised in place. Should compilation fail, the record says so and it runs eagerly."""

    def __init__(self, cfg: Config, train: CIFAR10Split, test: CIFAR10Split, device: torch.device,
                 folder: Path) -> None:
        self.cfg, self.splits, self.device, self.folder = cfg, (train, test, "test"), device, folder
        self.name, self.compile_error = cfg.name, None
        self.net = create_model(cfg.model).to(device)
        if cfg.train.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.params = count_parameters(self.net)
        self.compiled = cfg.train.compile
        # Static shapes: training batches and test batches each keep one shape, so each compiles once.
        self.forward = torch.compile(self.net, dynamic=False) if self.compiled else self.net

    def warmup(self) -> None:
        try:
            self.run(WARMUP_SEED)
        except Exception as err:  # noqa: BLE001 - any compiler failure; it is recorded, not hidden
            if not self.compiled:
                raise
            self.compile_error = f"{type(err).__name__}: {(str(err).splitlines() or [''])[0]}"
            print(f"torch.compile failed ({self.compile_error}); continuing without it", flush=True)
            self.compiled, self.forward = False, self.net
            self.run(WARMUP_SEED)

    def run(self, seed: int) -> dict:
        cfg = override(self.cfg, **{"train.seed": seed})
        folder = self.folder / f"seed{seed}"
        shutil.rmtree(folder, ignore_errors=True)
        began = time.perf_counter()
        elapsed = stopwatch(self.device)
        trainer = Trainer(cfg, folder, splits=self.splits, device=self.device, progress=False, log=None,
                          tensorboard=False, network=(self.net, self.forward))
        try:
            setup = elapsed()
            for _ in trainer.epochs():
                pass
            elapsed = stopwatch(self.device)
            _, acc_tta = evaluate(self.forward, trainer.eval_loader, cfg.train.tta, trainer.precision)
            evaluation = elapsed()
            _, acc = evaluate(self.forward, trainer.eval_loader, "none", trainer.precision)  # untimed
        finally:
            trainer.close()
            shutil.rmtree(folder, ignore_errors=True)
        return {"acc": acc, "acc_tta": acc_tta, "seconds": setup + trainer.train_seconds + evaluation,
                "wall_seconds": time.perf_counter() - began, "train_seconds": trainer.train_seconds,
                "epochs": trainer.epoch}


def add_result(side: dict, result: dict) -> None:
    """Append one run to a side's record and refresh its means and standard deviations (sample std)."""
    side["accs"].append(result["acc_tta"])
    side["accs_no_tta"].append(result["acc"])
    side["seconds"].append(result["seconds"])
    if "wall_seconds" in result:
        side.setdefault("wall_seconds", []).append(result["wall_seconds"])
    for key, values in (("acc", side["accs"]), ("seconds", side["seconds"])):
        side[f"{key}_mean"] = statistics.fmean(values)
        side[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0


def describe(side: dict) -> str:
    if not side.get("accs"):
        return f"{side['name']}: {side.get('skipped', 'no completed runs')}"
    return (f"{side['name']}: {100 * side['acc_mean']:.2f} +- {100 * side['acc_std']:.2f} % in "
            f"{side['seconds_mean']:.3f} +- {side['seconds_std']:.3f} s ({len(side['accs'])} runs)")


def compare(target: int, cfg: Config, splits: tuple[CIFAR10Split, CIFAR10Split], device: torch.device,
            runs: int, out: Path, deadline: float, scratch: Path, smoke: bool) -> dict:
    """Warm both sides up, time `runs` seeds of each, alternating, rewriting `out` after every run."""
    record = {"comparison": f"time to {target}%: {cfg.name} (residual) vs airbench{target}", "target": target,
              "status": "running", "smoke": smoke, **environment(device), "python": platform.python_version(),
              "n_runs": runs, "runs_completed": 0, "train_images": len(splits[0]), "test_images": len(splits[1]),
              "timing": TIMING, "warmup_seconds": {}, "ratio": None, "reached_target": None}
    save = lambda: atomic_write_text(out, json.dumps(record, indent=2) + "\n")
    sides: dict = {}
    try:
        sides["airbench"] = Airbench(target, *splits, scratch / f"airbench{target}")
        record["airbench"] = {"name": f"airbench{target}", "version": sides["airbench"].version,
                              "params": sides["airbench"].params}
    except (ImportError, RuntimeError) as err:
        record["airbench"] = {"name": f"airbench{target}", "skipped": f"{type(err).__name__}: {err}"}
        print(f"airbench side skipped: {record['airbench']['skipped']}", flush=True)
    sides["ours"] = Ours(cfg, *splits, device, scratch / cfg.name)
    record["ours"] = {"name": cfg.name, "params": sides["ours"].params}
    save()

    for key, side in sides.items():
        began = time.perf_counter()
        side.warmup()
        record["warmup_seconds"][key] = round(time.perf_counter() - began, 2)
        record[key].update({"accs": [], "accs_no_tta": [], "seconds": []})
        save()
    ours = sides["ours"]
    record["ours"].update({"compiled": ours.compiled, "compile_error": ours.compile_error,
                           "config": config_to_dict(ours.cfg)})

    seed_seconds = sum(record["warmup_seconds"].values())  # a generous first guess at one seed's cost
    record["status"] = "finished"
    for seed in range(runs):
        if time.perf_counter() + seed_seconds > deadline:
            record["status"] = "time_limit"
            print(f"time limit: stopping before seed {seed}", flush=True)
            break
        began = time.perf_counter()
        for key, side in sides.items():
            result = side.run(seed)
            add_result(record[key], result)
            print(f"seed {seed} {side.name}: {100 * result['acc_tta']:.2f}% in {result['seconds']:.3f} s", flush=True)
            record["runs_completed"] = seed + 1
            save()
        if "airbench" in sides:
            record["ratio"] = record["ours"]["seconds_mean"] / record["airbench"]["seconds_mean"]
        seed_seconds = time.perf_counter() - began
    if record["ours"]["accs"]:
        record["reached_target"] = record["ours"]["acc_mean"] >= target / 100
    save()
    print(describe(record["airbench"]), describe(record["ours"]), sep="\n")
    if record["ratio"] is not None:
        print(f"ratio, ours / airbench mean seconds: {record['ratio']:.3f}")
    print(f"wrote {out}", flush=True)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog=__doc__.split("\n\n", 2)[2] + "\nTiming: " + TIMING,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", type=int, nargs="+", choices=(94, 95), default=[94],
                        help="the comparisons to make, in order (default: 94)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per side, seeds 0..n-1 (default: 5)")
    parser.add_argument("--config", help="our recipe, instead of configs/fast{target}.yaml (one target only)")
    parser.add_argument("--eager", action="store_true",
                        help="run ours without torch.compile (airbench's package does not compile either)")
    parser.add_argument("--data-root", help="folder holding cifar-10-batches-py (default: $CIFAR10_ROOT, else ./data)")
    parser.add_argument("--out", default=str(ROOT / "results" / "bench" / "speed{target}.json"),
                        help="JSON record, {target} replaced (default: results/bench/speed{target}.json)")
    parser.add_argument("--time-limit", type=float, default=0.0,
                        help="seconds from the start: begin no seed whose runs would end later (0: no limit)")
    parser.add_argument("--smoke", action="store_true", help="tiny CPU dry run: 1,024 images, 1 epoch, 2 runs, "
                        "a tiny network, airbench skipped (automatic without CUDA)")
    args = parser.parse_args(argv)
    if args.config and len(args.target) > 1:
        parser.error("--config replaces one recipe: give a single --target with it")
    if not args.smoke and not torch.cuda.is_available():
        print("no CUDA device: running the CPU smoke version (--smoke)", flush=True)
        args.smoke = True
    device = torch.device("cpu" if args.smoke else "cuda")
    runs = min(args.runs, SMOKE_RUNS) if args.smoke else args.runs
    deadline = time.perf_counter() + (args.time_limit or float("inf"))

    train = load_cifar10(args.data_root, "train", download=not args.smoke)
    test = load_cifar10(args.data_root, "test", download=not args.smoke)
    if args.smoke:
        train, test = train.subset(slice(0, SMOKE_IMAGES[0])), test.subset(slice(0, SMOKE_IMAGES[1]))
    with tempfile.TemporaryDirectory() as scratch:
        for target in args.target:
            if time.perf_counter() > deadline:
                print(f"time limit: target {target} not started", flush=True)
                break
            cfg = load_config(args.config or ROOT / "configs" / f"fast{target}.yaml")
            if args.smoke or args.eager:
                cfg = override(cfg, **(SMOKE_CHANGES if args.smoke else {"train.compile": False}))
            out = Path(args.out.replace("{target}", str(target))).resolve()
            out.parent.mkdir(parents=True, exist_ok=True)
            compare(target, cfg, (train, test), device, runs, out, deadline, Path(scratch), args.smoke)
    return 0


if __name__ == "__main__":
    sys.exit(main())
