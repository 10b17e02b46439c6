"""Sharpness-aware minimisation (SAM, Foret et al. 2021) and its adaptive form (ASAM, Kwon et al. 2021).

SAM wraps no optimizer: it moves the weights to the worst point of a small neighbourhood before the second
forward-backward pass, and back afterwards, so the configured base optimizer (with its schedule, weight
decay, gradient scaler and clipping) steps with the gradient taken there. A step reads:

    loss at w, backward             -> g
    sam.perturb()                   w <- w + e,  e = rho * g / ||g||   (ASAM: rho * |w|^2 g / || |w| g ||)
    with frozen_norm_stats(model):  loss at w + e, backward -> g'   (BatchNorm's running statistics untouched)
    sam.restore()                   w <- the saved w, bit for bit
    optimizer.step()                with g'

The perturbation is invariant to a common scale of the gradients, so the first pass may use a gradient
scaler's scaled gradients. SAM keeps no state between steps: resuming a run needs nothing from it.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator

import torch
from torch import nn

from ..config import ConfigError, TrainConfig

_EPS = 1e-12  # keeps rho / ||g|| finite when the gradient vanishes


class SAM:
    """Perturbs `params` along their current gradients by radius `rho`; `adaptive` scales it by |w| (ASAM)."""

    def __init__(self, params: Iterable[torch.Tensor], rho: float, adaptive: bool = False) -> None:
        if not rho > 0:
            raise ConfigError(f"train.sam_rho: the SAM radius must be positive, got {rho!r} (0 turns SAM off)")
        self.params = [p for p in params if p.requires_grad]
        self.rho, self.adaptive = rho, adaptive
        self._perturbed: list[torch.Tensor] = []
        self._saved: list[torch.Tensor] | None = None

    @torch.no_grad()
    def perturb(self) -> None:
        """w <- w + e(w) from the gradients in `.grad`, keeping a copy of w for `restore`."""
        params = [p for p in self.params if p.grad is not None]
        grads = [p.grad for p in params]
        self._saved = [p.detach().clone() for p in params]
        self._perturbed = params
        if self.adaptive:  # ASAM: the neighbourhood is stretched by |w|, so e = rho |w|^2 g / || |w| g ||
            scaled = torch._foreach_mul(grads, torch._foreach_abs(self._saved))
            norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(scaled)))
            steps = torch._foreach_mul(scaled, torch._foreach_abs(self._saved))
        else:
            norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
            steps = grads
        torch._foreach_add_(params, torch._foreach_mul(steps, self.rho / (norm + _EPS)))

    @torch.no_grad()
    def restore(self) -> None:
        """Put back the weights saved by `perturb` (a copy, so w comes back exactly)."""
        if self._saved is None:
            raise RuntimeError("SAM.restore() called without a preceding perturb()")
        torch._foreach_copy_(self._perturbed, self._saved)
        self._saved = None


def make_sam(model: nn.Module, cfg: TrainConfig) -> SAM | None:
    """The SAM perturbation of `cfg` (train.sam_rho, train.sam_adaptive) for `model`, or None when off."""
    if cfg.sam_adaptive and not cfg.sam_rho:
        raise ConfigError("train.sam_adaptive needs train.sam_rho > 0 (ASAM's published radius is about 0.5-2.0)")
    return SAM(model.parameters(), cfg.sam_rho, cfg.sam_adaptive) if cfg.sam_rho else None


@contextmanager
def frozen_norm_stats(model: nn.Module) -> Iterator[None]:
    """Inside, BatchNorm still normalises with batch statistics, but its running statistics (and batch
    counters) are restored on exit, so a second pass over the same batch does not count it twice.

    Saving and copying back the buffers (about 2 floats per channel) works the same eagerly and under
    torch.compile; changing `momentum` instead would be read by the compiled graph as a new constant and
    recompile it.
    """
    buffers = [b for m in model.modules() if isinstance(m, nn.modules.batchnorm._NormBase)
               for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None]
    saved = [b.clone() for b in buffers]
    try:
        yield
    finally:
        with torch.no_grad():
            if buffers:
                torch._foreach_copy_(buffers, saved)
