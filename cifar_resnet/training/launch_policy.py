"""Launch policy: how long a run will take here, and whether to start it. The `Trainer` only trains.

On a CPU, `check_duration` times a training step (`step_seconds`) and refuses a run estimated to train longer
than `SLOW_RUN_SECONDS` with `SlowRunError` (a one-line `ConfigError` giving the estimate and a CPU-sized
command) unless `allow_slow`, or a time limit up to that bounds it; it announces one over `LONG_RUN_SECONDS`.
A `--time-limit` shorter than one epoch's estimate is refused (`EpochOverTimeLimit`): epochs are never cut short.
`default_preset` is what `cifar-resnet train` (and `make train`) trains without `--config`: `best` on a GPU,
`cpu` on a CPU that computes bf16 natively, `cpu_fp32` on any other, announced in one line with its estimate here.
The command line's `train` (through `launch_policy.train`), its `search` (each trial), its `sweep` (each run) and
notebook 03 (`session.train_in_sessions`) call it before they build a `Trainer`. The sweep's own
estimates of a plan's run durations are `studies.sweep.PlanEstimator`'s.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .. import run_folder
from ..audience import advise, option
from ..config import Config, ConfigError
from ..data.cifar10 import CIFAR10Split, load_splits
from ..data.gpu_loader import train_steps
from ..runtime import autocast, channels_last_trains_safely, native_cpu_bf16, resolve_device, resolve_precision
from ..formats import duration
from ..models import create_model
from .time_budget import check_time_limit, fitted_epochs

SLOW_RUN_SECONDS = 3600.0  # on a CPU, a run estimated to train longer than this is refused unless allowed
LONG_RUN_SECONDS = 600.0  # ... and one longer than this is announced with its estimate before it starts
CPU_SIZED_PRESET = "smoke"  # the preset the refusal of a slow CPU run proposes instead
# what `train` runs without --config: with a GPU; without one, on a CPU with native bf16, and on any other
GPU_PRESET, CPU_PRESET, CPU_FP32_PRESET = "best", "cpu", "cpu_fp32"


def cpu_sized_run() -> str:
    """The CPU-sized run to propose, in the reader's terms (`audience.advise`)."""
    return advise(f'train(load_config("{CPU_SIZED_PRESET}"), out_dir)', f"make train CONFIG=configs/{CPU_SIZED_PRESET}.yaml",
                  f"cifar-resnet train --config {CPU_SIZED_PRESET}")

TIMED_STEPS = 3  # the estimate is the median of this many timed steps, after a warm-up one
# A step that would take at most this long is timed at the run's batch size; a longer one is extrapolated from
# small batches (on a CPU, the cost per image at 16 and 48 images overstated the cpu preset's 512-image bf16
# step 10-30 times: oneDNN's bf16 kernels are slow on small batches)
DIRECT_STEP_SECONDS = 10.0
Splits = tuple[CIFAR10Split, CIFAR10Split, str]


def estimate_note() -> str:
    """How an estimate was made, and that it is rough where the machine is busy (load above its cores)."""
    busy = hasattr(os, "getloadavg") and os.getloadavg()[0] > (os.cpu_count() or 1)
    return f"estimated from {TIMED_STEPS} timed steps" + ("; rough: this machine is busy" if busy else "")


class SlowRunError(ConfigError):
    """A run that would take hours on this device; the message gives the estimate and a CPU-sized command."""


@dataclass
class Estimate:
    """The training a run has left on this device: steps, and seconds per step from a timed one."""

    epochs: int
    steps: int
    step_seconds: float

    @property
    def seconds(self) -> float:
        return self.steps * self.step_seconds


def step_seconds(cfg: Config, device: torch.device, small: int = 16, large: int = 48) -> float:
    """Seconds per training step of `cfg` on `device`, from forward and backward passes of its network at
    the batch size where that is cheap (`DIRECT_STEP_SECONDS`), else on `small` and `large` images,
    extrapolated linearly to the batch size (a CPU's cost per image falls as
    batches grow; optimizer and augmentation excluded). Cheap on a CPU; the random state is untouched."""
    t = cfg.train
    precision = resolve_precision(t.precision, device)
    criterion = nn.CrossEntropyLoss(label_smoothing=t.label_smoothing)
    with torch.random.fork_rng(devices=[]):
        model = create_model(cfg.model).to(device).train()
        channels_last = t.channels_last and channels_last_trains_safely(model, device)  # as the engine trains it
        if channels_last:
            model = model.to(memory_format=torch.channels_last)

        def timed(n: int) -> float:
            x = torch.randn(n, 3, 32, 32, device=device)  # zeros run slow paths (denormal gradients) on a CPU
            if channels_last:
                x = x.to(memory_format=torch.channels_last)
            sync = torch.cuda.synchronize if device.type == "cuda" else (lambda device: None)
            sync(device)
            began = time.perf_counter()
            with autocast(device, precision):
                logits = model(x)
            criterion(logits.float(), torch.zeros(n, dtype=torch.long, device=device)).backward()
            sync(device)
            return time.perf_counter() - began

        def median(n: int) -> float:  # one timed pass misses by several times on a busy machine
            return statistics.median(timed(n) for _ in range(TIMED_STEPS))

        timed(min(8, t.batch_size))  # warm-up
        if t.batch_size <= large:
            return median(t.batch_size)
        t_large = median(large)
        if t_large * t.batch_size / large <= DIRECT_STEP_SECONDS:  # cheap enough: time the real batch
            timed(t.batch_size)  # its own warm-up: a CPU builds its kernels for each new shape
            once = timed(t.batch_size)
            return once if once > DIRECT_STEP_SECONDS else median(t.batch_size)  # a long step: once is enough
        t_small = median(small)
    per_image = (t_large - t_small) / (large - small)
    return t_large + per_image * (t.batch_size - large) if per_image > 0 else t_large * t.batch_size / large


def epochs_done(out_dir: str | Path, resume: bool) -> int:
    """Epochs the run in `out_dir` has trained, as its checkpoint says (0 unless `resume`)."""
    path = Path(out_dir) / run_folder.CHECKPOINT
    return int(run_folder.load_checkpoint(path).get("epoch", 0)) if resume and path.is_file() else 0


def estimate_training(cfg: Config, splits: Splits, device: torch.device, *, out_dir: str | Path | None = None,
                      resume: bool = False) -> Estimate:
    """The training `cfg` has left on `device` (from `out_dir`'s checkpoint with `resume`), a step timed; a
    fresh run with a `train.time_budget` plans the epochs that fit it (never more than an hour's)."""
    done = epochs_done(out_dir, resume) if out_dir is not None else 0
    epochs, per_epoch = max(cfg.train.epochs - done, 0), train_steps(len(splits[0]), cfg.train.batch_size)
    seconds = step_seconds(cfg, device)
    if cfg.train.time_budget and not done:
        epochs = min(epochs, fitted_epochs(cfg.train.time_budget, seconds * per_epoch, cfg.train.epochs))
    return Estimate(epochs, epochs * per_epoch, seconds)


def default_preset(device: torch.device) -> tuple[str, str | None]:
    """The preset `train` runs without --config on `device`, and the start of the line announcing it (None on a GPU)."""
    if device.type == "cuda":
        return GPU_PRESET, None
    no_gpu = f"no GPU here and `{GPU_PRESET}` needs one (hours on a CPU)"
    if native_cpu_bf16():
        return CPU_PRESET, f"{no_gpu}, so training `{CPU_PRESET}`"
    return CPU_FP32_PRESET, (f"{no_gpu}, and this CPU computes no bf16 natively for `{CPU_PRESET}`'s wide network, "
                             f"so training `{CPU_FP32_PRESET}`")


def refuse_slow_run(cfg: Config, estimate: Estimate, device: torch.device, *, time_limit: float | None = None,
                    allow_slow: bool = False, log: Callable[[str], None] | None = print,
                    announce: str | None = None) -> None:
    """On a CPU, `SlowRunError` for a run of hours unless allowed or bounded; one line for a long one, or
    always where `announce` begins that line."""
    if device.type != "cpu":
        return
    seconds = estimate.seconds
    bounded = time_limit is not None and time_limit <= SLOW_RUN_SECONDS
    if seconds > SLOW_RUN_SECONDS and not (allow_slow or bounded):
        raise SlowRunError(
            f"{cfg.name} would train for about {duration(seconds, rough=True)} on this CPU ({estimate.steps:,} steps "
            f"of ~{estimate.step_seconds:.2f} s); for a CPU-sized run use `{cpu_sized_run()}`, train it on a GPU, or "
            f"pass {option('allow_slow=True', '--allow-slow')} to start it anyway")
    if announce is not None and log is not None:
        log(f"{announce}: about {duration(seconds, rough=True)} of training here ({estimate.steps:,} steps of "
            f"~{estimate.step_seconds:.2f} s, {torch.get_num_threads()} threads; {estimate_note()})")
    elif seconds > LONG_RUN_SECONDS and log is not None:
        log(f"{cfg.name}: {estimate.steps:,} steps to go on the CPU, about {duration(seconds, rough=True)} of "
            f"training ({estimate_note()})")


class EpochOverTimeLimit(ConfigError):
    """A time limit shorter than one epoch of the run here: the engine trains the first epoch whole, so the run
    would overrun it; the message gives the estimate and a limit that fits."""


def refuse_epoch_over_limit(cfg: Config, estimate: Estimate, time_limit: float | None) -> None:
    """`EpochOverTimeLimit` where the estimate of one epoch is over `time_limit` (decided before training: the
    engine checks its limit only between epochs, so a first epoch that cannot fit would run anyway)."""
    check_time_limit(time_limit)
    if time_limit is None or estimate.epochs == 0:
        return
    epoch = estimate.seconds / estimate.epochs
    if epoch > time_limit:
        raise EpochOverTimeLimit(
            f"{option('time_limit', '--time-limit')} {time_limit:g} s is shorter than one epoch of {cfg.name} here "
            f"(about {epoch:.0f} s: {estimate.steps // estimate.epochs:,} steps of ~{estimate.step_seconds:.2f} s, "
            f"{estimate_note()}), and an epoch is never cut short: give at least {1.5 * epoch:.0f} s, or a smaller "
            f"run (`{cpu_sized_run()}`)")


def check_duration(cfg: Config, splits: Splits, device: torch.device, *, out_dir: str | Path | None = None,
                   resume: bool = False, time_limit: float | None = None, allow_slow: bool = False,
                   log: Callable[[str], None] | None = print, announce: str | None = None) -> None:
    """The policy before a `Trainer` is built: on a CPU, estimate the run (timed steps) and refuse or announce
    it (`refuse_slow_run`), and refuse a time limit shorter than one epoch (`refuse_epoch_over_limit`);
    elsewhere nothing is timed."""
    if device.type == "cpu":
        estimate = estimate_training(cfg, splits, device, out_dir=out_dir, resume=resume)
        refuse_epoch_over_limit(cfg, estimate, time_limit)
        refuse_slow_run(cfg, estimate, device, time_limit=time_limit, allow_slow=allow_slow, log=log,
                        announce=announce)


def train(cfg: Config, out_dir: str | Path, *, allow_slow: bool = False, announce: str | None = None,
          **options) -> dict:
    """`engine.train` behind the launch policy (what `cifar-resnet train` and the sweep call); options as
    for `engine.Trainer`; `announce` begins a line giving the CPU estimate (`default_preset`). On a CPU the
    data is loaded here, once, and handed to the trainer."""
    from .engine import train as train_run

    device = resolve_device(options.get("device"))
    if device.type == "cpu":
        options["splits"] = options.get("splits") or load_splits(cfg, options.get("data_root"))
        check_duration(cfg, options["splits"], device, out_dir=out_dir, resume=options.get("resume", False),
                       time_limit=options.get("time_limit"), allow_slow=allow_slow, log=options.get("log", print),
                       announce=announce)
    return train_run(cfg, out_dir, **options)
