"""A schedule fitted to a time budget: as many epochs as this machine trains in `train.time_budget` seconds.

Machines differ twofold in speed (and a busy moment more), so a preset made for minutes on a CPU states its
budget rather than its epochs. The `Trainer` plans `train.epochs` (the most), times the first epoch's steps
after a warm-up and fits the epochs to the budget from them, early enough that the schedule has barely begun;
after the whole first epoch it fits them again from that epoch's real time, so one slow or fast moment
cannot wreck the run. What the warm-up steps took beyond ordinary steps (torch.compile's compilation, tens of
seconds on a CPU) is paid once: it comes out of the budget, not out of every epoch. A resumed run keeps the
epochs its checkpoint planned.
"""

from __future__ import annotations

import math
import time

import torch

from ..config import ConfigError

WARMUP_STEPS, TIMED_STEPS = 2, 6  # untimed steps first (kernels built for the shapes), then timed ones


def check_time_limit(time_limit: float | None) -> None:
    """`ConfigError` for a time limit that is no positive number of seconds (None: no limit)."""
    if time_limit is not None and not time_limit > 0:
        raise ConfigError(f"--time-limit must be above 0 seconds, got {time_limit:g}")


def fitted_epochs(budget: float, epoch_seconds: float, most: int) -> int:
    """Whole epochs of `epoch_seconds` that fit in `budget` seconds: at least 1, at most `most`."""
    return max(1, min(most, math.floor(budget / max(epoch_seconds, 1e-9))))


class StepTimer:
    """Times steps WARMUP_STEPS .. WARMUP_STEPS + TIMED_STEPS of the first epoch (the device synchronised at
    both ends, and only there) and gives the epoch's seconds they imply; `overhead` is what the warm-up steps
    took beyond as many timed ones (compilation), once it is known."""

    def __init__(self, steps_per_epoch: int, device: torch.device) -> None:
        self.steps_per_epoch, self.device = steps_per_epoch, device
        self.timed = min(TIMED_STEPS, steps_per_epoch - WARMUP_STEPS - 1)  # leave the epoch's own fit its say
        self.started = self.began = 0.0
        self.overhead = 0.0

    def start(self) -> None:
        """Call as the first epoch's first step begins."""
        self.started = self._now()

    def epochs(self, budget: float, epoch_seconds: float, most: int) -> int:
        """The epochs that fit `budget` once the overhead is paid, each taking `epoch_seconds` besides it."""
        return fitted_epochs(budget - self.overhead, epoch_seconds, most)

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def after_step(self, step: int) -> float | None:
        """Call after step `step` (from 0) of the first epoch: the epoch's seconds once the timed steps are done."""
        if self.timed < 1:
            return None
        if step == WARMUP_STEPS - 1:
            self.began = self._now()
        elif step == WARMUP_STEPS - 1 + self.timed:
            step_seconds = (self._now() - self.began) / self.timed
            self.overhead = max(0.0, self.began - self.started - WARMUP_STEPS * step_seconds)
            return step_seconds * self.steps_per_epoch
        return None
