"""The exponential moving average of the weights, with timm ModelEmaV3's warm-up.

A fixed decay d averages over ~1/(1-d) steps, so early in training the average is mostly the first
weights (at d = 0.9995 and 98 steps an epoch, a quarter of it is still epoch 1's after 28 epochs). With
`train.ema_warmup_power` p > 0 the decay of the n-th update is min(d, 1 - (1 + n)^-p): 0 at the first (the
average starts as the weights), then rising, so the average lags ~n^p steps behind (timm's advice: p = 3/4
for runs of ~10k steps, 2/3 for a million).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from ..config import TrainConfig


def ema_decay_at(n: int, decay: float, warmup_power: float) -> float:
    """The decay of the average's update after `n` earlier ones: `decay`, or with a warm-up
    min(decay, 1 - (1 + n)^-warmup_power)."""
    return min(decay, 1 - (1 + n) ** -warmup_power) if warmup_power else decay


def ema_update(decay: float, warmup_power: float = 0.0) -> Callable:
    """`multi_avg_fn` for `AveragedModel`: an exponential moving average whose decay follows `ema_decay_at`
    (AveragedModel counts the updates in its state, and copies the weights at the first)."""

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged: torch.Tensor) -> None:
        d = ema_decay_at(int(n_averaged), decay, warmup_power)
        if averaged[0].is_floating_point():
            torch._foreach_lerp_(averaged, current, 1 - d)
        else:  # integer buffers (BatchNorm's batch count)
            for a, c in zip(averaged, current):
                a.copy_(a * d + c * (1 - d))

    return update


def make_ema(model: nn.Module, cfg: TrainConfig) -> AveragedModel | None:
    """The average of `model`'s weights and buffers that `cfg.ema_decay` asks for, or None when it is 0."""
    if not cfg.ema_decay:
        return None
    return AveragedModel(model, multi_avg_fn=ema_update(cfg.ema_decay, cfg.ema_warmup_power), use_buffers=True)
