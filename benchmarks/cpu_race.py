"""A race on the CPU: airbench94's own code against a CPU preset, for the same training time, in one process.

    python benchmarks/cpu_race.py [--preset NAME] [--budget S] [--threads N] [--data-root DIR]
                                  [--json results/bench/cpu_race.json] [--airbench FOLDER]
    python benchmarks/cpu_race.py --smoke [--json FILE]   # a dry run in about a minute (a temporary JSON by default)

Both sides get the same tensors (`cifar_resnet.data.load_cifar10`) and the same torch threads. The preset is the
one `cifar-resnet train` picks on this CPU (`cpu` where it computes bf16 natively, else `cpu_fp32`) unless
--preset names another. First the preset trains through the one training path (`benchmarks/speed.py`'s `Ours`: a
`Trainer`), fitting its epochs to `train.time_budget` (--budget replaces it) as always. Then airbench94 from the
PyPI sdist (`airbench` 0.1.8, Jordan 2024; not a dependency: install it, put its folder on PYTHONPATH or give it
with --airbench) trains for the seconds the preset trained: a short calibration of its own steps (two short runs
of its `train94` after a warm-up one, the difference giving seconds per step, the rest its set-up) fits a
fractional `epochs` to them. Only the device is moved: airbench's `.cuda()` and `.half()` become no-ops (fp32
weights), its CUDA events become a clock, its images are fp32, and both sides compute in the precision the preset
resolves to on this CPU (bf16 under autocast where the CPU has it natively, else fp32).

Timed: the preset's training steps (the Trainer's train_seconds: its epochs' steps and batch augmentation, with
torch.compile's compilation from an empty cache where the preset compiles; not its whitening init, per-epoch
evaluation or checkpoints), and airbench94's whole `train94` call (whitening
init, its per-epoch preprocessing and all steps). Both are then evaluated, with 6-view test-time augmentation
and without, outside that time.

The record (--json, rewritten atomically after each side, so a killed race keeps the first) holds the CPU's
model, threads, torch version, commit, load averages at start and end, the precision, the preset's config,
airbench's version and calibration, for each side its accuracies, training seconds and epochs, and ours /
airbench: the difference of accuracy (with TTA) and the ratio of training seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
from cpu import cold_compile_cache
from speed import Airbench, Ours, working_directory

from cifar_resnet.config import config_to_dict, load_config, override
from cifar_resnet.data.cifar10 import CIFAR10Split, load_cifar10
from cifar_resnet.models import count_parameters
from cifar_resnet.run_folder import atomic_write_text, environment
from cifar_resnet.runtime import resolve_precision
from cifar_resnet.training.launch_policy import default_preset

ROOT = Path(__file__).resolve().parents[1]
SEED = 0
CPU = torch.device("cpu")
CALIBRATION_STEPS = (5, 20)  # airbench94 is timed for these many steps: the difference gives seconds per step
MISSING = ("airbench is not importable ({err}): pip download --no-deps --no-binary :all: airbench==0.1.8, "
           "unpack it and give its folder with --airbench (or put it on PYTHONPATH)")
# --smoke: a few hundred images, a narrow network on both sides, batches of 64 (ours with its lr scaled to
# them, as airbench's is), a budget of a few seconds
SMOKE_IMAGES, SMOKE_BUDGET, SMOKE_BATCH = (500, 250), 3.0, 64
SMOKE_CHANGES = {"model.channels": [16, 32, 32], "train.batch_size": SMOKE_BATCH, "train.epochs": 10,
                 "train.compile": False}  # compiling alone would take ten times the budget
SMOKE_WIDTHS = {"block1": 16, "block2": 32, "block3": 32}


class CpuEvent:
    """`torch.cuda.Event(enable_timing=True)` on the CPU: `record` reads the clock, `elapsed_time` gives ms."""

    def __init__(self, *args, **kwargs) -> None:
        self.at = time.perf_counter()

    def record(self, *args, **kwargs) -> None:
        self.at = time.perf_counter()

    def synchronize(self) -> None:
        pass

    def elapsed_time(self, end: "CpuEvent") -> float:
        return 1000 * (end.at - self.at)


@contextlib.contextmanager
def airbench_on_cpu(airbench, precision: str):
    """Run airbench's own code on the CPU, only the device moved: CUDA events timed by the clock, no-op
    `torch.cuda.synchronize`, `nn.Module.cuda` and `.half` (fp32 weights), its `CifarLoader` loading onto the CPU
    in fp32, all under bf16 autocast where `precision` is bf16. Everything is restored afterwards."""
    utils = sys.modules[f"{airbench.__name__}.utils"]
    original = utils.CifarLoader

    class CpuLoader(original):
        def __init__(self, *args, gpu="cpu", **kwargs) -> None:
            super().__init__(*args, gpu=gpu, **kwargs)
            self.images = self.images.float()  # its fp16 images, before any epoch (the loader allows it then)

    patches = [(torch.cuda, "Event", CpuEvent), (torch.cuda, "synchronize", lambda *args, **kwargs: None),
               (torch.nn.Module, "cuda", lambda self, *args, **kwargs: self),
               (torch.nn.Module, "half", lambda self: self),
               (utils, "CifarLoader", CpuLoader), (airbench, "CifarLoader", CpuLoader)]
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
    try:
        for owner, name, value in patches:
            setattr(owner, name, value)
        with torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
            yield
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)


class CpuAirbench(Airbench):
    """airbench94 (`speed.Airbench`) moved to the CPU, trained for a fractional number of epochs."""

    device = CPU

    def __init__(self, train: CIFAR10Split, test: CIFAR10Split, folder: Path, precision: str, smoke: bool) -> None:
        self.precision = precision
        super().__init__(94, train, test, folder)
        if smoke:
            make_net = functools.partial(self.airbench.make_net94, widths=SMOKE_WIDTHS)
            self.train_fn = functools.partial(self.airbench.train94, make_net=make_net)
            with self.ported():
                self.params = count_parameters(make_net())
            self.train_loader.batch_size = SMOKE_BATCH

    def ported(self) -> contextlib.AbstractContextManager:
        return airbench_on_cpu(self.airbench, self.precision)

    def seconds_for(self, steps: int) -> float:
        """Seconds of one `train94` call that trains `steps` steps."""
        torch.manual_seed(SEED)
        with working_directory(self.folder), self.ported():
            began = time.perf_counter()
            self.train_fn(self.train_loader, epochs=steps / len(self.train_loader), verbose=False)
            return time.perf_counter() - began

    def fit_epochs(self, budget: float) -> dict:
        """The fractional epochs whose `train94` call takes `budget` seconds here, and the calibration behind it."""
        few, more = CALIBRATION_STEPS
        self.seconds_for(few)  # untimed warm-up: kernels built for the shapes, as the race's run finds them
        seconds = [self.seconds_for(steps) for steps in (few, more)]
        step = max((seconds[1] - seconds[0]) / (more - few), 1e-9)
        setup = max(0.0, seconds[0] - few * step)
        steps = max(1, math.floor((budget - setup) / step))
        return {"epochs": steps / len(self.train_loader), "steps": steps, "steps_per_epoch": len(self.train_loader),
                "calibration": {"steps": [few, more], "seconds": seconds, "step_seconds": step, "setup_seconds": setup}}


def import_airbench(folder: str | None) -> str | None:
    """Import airbench (from `folder` first, where given); the reason it cannot be, else None."""
    if folder:
        sys.path.insert(0, str(Path(folder).resolve()))
    try:
        import airbench  # noqa: F401
    except ImportError as err:
        return f"{type(err).__name__}: {err}"
    return None


def describe(side: dict) -> str:
    if "acc_tta" not in side:
        return f"{side['name']}: {side.get('skipped', 'not run')}"
    return (f"{side['name']}: {100 * side['acc_tta']:.2f}% with TTA ({100 * side['acc']:.2f}% without) after "
            f"{side['train_seconds']:.1f} s of training, {side['epochs']:.2f} epochs")


def race(args: argparse.Namespace, missing: str | None) -> dict:
    """Train the preset, then airbench94 for as long; rewrite the record at `args.json` after each."""
    preset = args.preset or default_preset(CPU)[0]
    base = load_config(preset)
    budget = args.budget or (SMOKE_BUDGET if args.smoke else base.train.time_budget)
    smoke = {**SMOKE_CHANGES, "train.lr": base.train.lr * SMOKE_BATCH / base.train.batch_size}  # as airbench scales it
    cfg = override(base, **(smoke if args.smoke else {}), **{"train.time_budget": budget})
    precision = resolve_precision(cfg.train.precision, CPU, warn=print)
    train = load_cifar10(args.data_root, "train", download=not args.smoke)
    test = load_cifar10(args.data_root, "test", download=not args.smoke)
    if args.smoke:
        train, test = train.subset(slice(0, SMOKE_IMAGES[0])), test.subset(slice(0, SMOKE_IMAGES[1]))
    record = {"race": f"airbench94 vs the {preset} preset, the same training time, on one CPU", "status": "running",
              "smoke": args.smoke, **environment(CPU),
              "python": platform.python_version(), "precision": precision, "budget": cfg.train.time_budget,
              "train_images": len(train), "test_images": len(test), "seed": SEED,
              "load_average_at_start": [round(x, 2) for x in os.getloadavg()], "timing": __doc__.split("\n\n")[3],
              "ours": {"name": preset, "config": config_to_dict(cfg)}, "airbench": {"name": "airbench94"},
              "acc_difference": None, "ratio_seconds": None, "ours_at_least_airbench": None}
    out = Path(args.json)
    save = lambda: atomic_write_text(out, json.dumps(record, indent=2) + "\n")
    out.parent.mkdir(parents=True, exist_ok=True)
    save()
    cold_compile_cache()  # the preset's compilation is paid inside its training time, as a first run pays it
    with tempfile.TemporaryDirectory() as scratch:
        ours = Ours(cfg, train, test, CPU, Path(scratch) / preset)
        record["ours"].update(params=ours.params, **ours.run(SEED))
        print(describe(record["ours"]), flush=True)
        save()
        if missing:
            record["airbench"]["skipped"] = missing
        else:
            side = CpuAirbench(train, test, Path(scratch) / "airbench94", precision, args.smoke)
            theirs = record["airbench"]
            theirs.update(version=side.version, params=side.params, **side.fit_epochs(record["ours"]["train_seconds"]))
            theirs.update(side.run(SEED, epochs=theirs["epochs"]))
            record.update(acc_difference=record["ours"]["acc_tta"] - theirs["acc_tta"],
                          ratio_seconds=record["ours"]["train_seconds"] / theirs["train_seconds"],
                          ours_at_least_airbench=record["ours"]["acc_tta"] >= theirs["acc_tta"])
        print(describe(record["airbench"]), flush=True)
    record.update(status="finished", load_average_at_end=[round(x, 2) for x in os.getloadavg()])
    save()
    if record["acc_difference"] is not None:
        print(f"ours - airbench94: {100 * record['acc_difference']:+.2f} points of accuracy with TTA; ours / airbench94: "
              f"training seconds {record['ratio_seconds']:.3f}")
    print(f"{record['cpu']}, {record['threads']} threads, {precision}, torch {record['torch_version']}; wrote {out}",
          flush=True)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog=__doc__.split("\n\n", 2)[2],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", help="the preset to race (default: the one `train` picks on this CPU)")
    parser.add_argument("--budget", type=float, help="training seconds (default: the preset's train.time_budget)")
    parser.add_argument("--threads", type=int, help="CPU threads for torch, both sides (default: torch's choice)")
    parser.add_argument("--data-root", help="folder holding cifar-10-batches-py (default: $CIFAR10_ROOT, else ./data)")
    parser.add_argument("--json", help="the record (default: results/bench/cpu_race.json; "
                        "with --smoke a temporary file)")
    parser.add_argument("--airbench", help="folder to import airbench from (an unpacked sdist; default: as installed)")
    parser.add_argument("--smoke", action="store_true", help=f"a dry run: {SMOKE_IMAGES[0]} training images, a narrow "
                        f"network, {SMOKE_BUDGET:g} s; without airbench its side is skipped")
    args = parser.parse_args(argv)
    args.json = args.json or (Path(tempfile.gettempdir()) / "cpu_race_smoke.json" if args.smoke
                              else ROOT / "results" / "bench" / "cpu_race.json")
    missing = import_airbench(args.airbench)
    if missing and not args.smoke:
        print(MISSING.format(err=missing), file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    race(args, missing)
    return 0


if __name__ == "__main__":
    sys.exit(main())
