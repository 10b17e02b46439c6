"""The optimiser, its parameter groups and its learning-rate schedule.

Parameters fall into up to four groups, each with its own learning rate and weight decay:
- the weights (convs, the classifier's matrix): `train.lr` and `train.weight_decay`;
- BatchNorm biases: `train.bias_lr_scale` times the lr, the decay divided by it (airbench: 64x, so that the
  biases keep up with weights whose scale BatchNorm removes, while shrinking per step as the weights do);
- a whitening stem's bias: the weights' lr until `train.whiten_bias_epochs`, then 0 (airbench: 3 epochs);
- the rest (BatchNorm weights, the classifier's bias).
All but the weights are decayed only with `train.decay_norm_and_bias`.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from ..config import TrainConfig
from ..models import WhiteningStem


def parameter_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """The trainable parameters in the groups above, each a dict for `torch.optim` with a "name"; empty
    groups left out."""
    stem = getattr(model, "stem", None)
    whiten_bias = stem.conv.bias if isinstance(stem, WhiteningStem) else None
    norm_biases = {id(m.bias) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    decay_rest = cfg.weight_decay if cfg.decay_norm_and_bias else 0.0
    groups = {"weights": ([], cfg.lr, cfg.weight_decay),
              "norm_biases": ([], cfg.lr * cfg.bias_lr_scale, decay_rest / cfg.bias_lr_scale),
              "whiten_bias": ([], cfg.lr, decay_rest),
              "other": ([], cfg.lr, decay_rest)}
    for p in model.parameters():
        if not p.requires_grad:
            continue
        name = ("whiten_bias" if p is whiten_bias else "norm_biases" if id(p) in norm_biases
                else "weights" if p.ndim > 1 else "other")
        groups[name][0].append(p)
    return [{"name": name, "params": params, "lr": lr, "weight_decay": decay}
            for name, (params, lr, decay) in groups.items() if params]


def make_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """SGD (Nesterov; fused on CUDA), AdamW, or any `torch.optim` class by name, over `parameter_groups`."""
    groups = parameter_groups(model, cfg)
    name = cfg.optimizer.lower()
    if name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               fused=device.type == "cuda" or None)  # fused: one kernel per group
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.momentum, 0.999))
    return getattr(torch.optim, cfg.optimizer)(groups, lr=cfg.lr)  # the configuration reader checked the name


def lr_factor(cfg: TrainConfig, total_steps: int, *, epochs: int | None = None) -> Callable[[int], float]:
    """Multiplier of the peak learning rate at each of `total_steps` steps over `epochs` (`train.epochs`)."""
    epochs = max(epochs or cfg.epochs, 1)
    warmup = cfg.warmup_epochs / epochs * total_steps
    milestones = [m / epochs * total_steps for m in cfg.milestones]

    def factor(step: int) -> float:
        t = step / total_steps
        if cfg.schedule == "onecycle":  # triangular: from lr_start up to the peak, then linearly to lr_end
            peak, start, end = cfg.pct_start, cfg.lr_start, cfg.lr_end
            return start + (1 - start) * t / peak if t < peak else max(0.0, end + (1 - end) * (1 - t) / (1 - peak))
        if step < warmup:
            return (step + 1) / warmup
        after = (step - warmup) / max(total_steps - warmup, 1)
        if cfg.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(after, 1.0)))
        if cfg.schedule == "linear":
            return max(0.0, 1 - after)
        if cfg.schedule == "step":
            return cfg.gamma ** sum(step >= m for m in milestones)
        return 1.0  # constant

    return factor


def schedule(optimizer: torch.optim.Optimizer, cfg: TrainConfig, *, steps_per_epoch: int, epochs: int
             ) -> list[Callable[[int], float]]:
    """Each group's lr multiplier over `epochs` epochs; a whitening stem's bias stops learning after
    `train.whiten_bias_epochs`."""
    factor = lr_factor(cfg, epochs * steps_per_epoch, epochs=epochs)
    stop = round(cfg.whiten_bias_epochs * steps_per_epoch) or math.inf

    def whiten_bias(step: int) -> float:
        return factor(step) if step < stop else 0.0

    return [whiten_bias if group.get("name") == "whiten_bias" else factor for group in optimizer.param_groups]


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, *, steps_per_epoch: int, epochs: int
                   ) -> torch.optim.lr_scheduler.LambdaLR:
    """The `schedule` as a scheduler (`Trainer` replaces its `lr_lambdas` when a time budget refits it)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule(optimizer, cfg, steps_per_epoch=steps_per_epoch,
                                                                 epochs=epochs))


class Lookahead:
    """Every `every` steps, the weights and BatchNorm statistics move toward a slow copy and are reset to it
    (Zhang et al. 2019); the slow copy keeps decay^every * (step / total)^3 of itself, so it follows the
    weights closely early and averages them late (airbench), and the last step ends on it."""

    def __init__(self, model: nn.Module, *, every: int, decay: float, total_steps: int) -> None:
        self.live = [t for t in model.state_dict().values() if t.is_floating_point()]
        self.slow = [t.detach().clone() for t in self.live]
        self.every, self.decay, self.total = every, decay, total_steps

    @torch.no_grad()
    def step(self, step: int) -> None:
        """After optimisation step number `step` (counted from 1)."""
        if step % self.every == 0:
            torch._foreach_lerp_(self.slow, self.live, 1 - self.decay ** self.every * (step / self.total) ** 3)
        if step % self.every == 0 or step == self.total:  # the last step ends on the slow copy
            torch._foreach_copy_(self.live, self.slow)

    def state_dict(self) -> list[torch.Tensor]:
        return self.slow

    def load_state_dict(self, slow: list[torch.Tensor]) -> None:
        torch._foreach_copy_(self.slow, [t.to(s.device) for t, s in zip(slow, self.slow)])
