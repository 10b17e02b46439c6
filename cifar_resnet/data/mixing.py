"""Batch mixing on the device: MixUp and CutMix (torchvision `transforms.v2`) or RICAP.

Each takes a normalised batch and its int64 labels and returns the mixed batch with soft targets (B, classes)
whose rows sum to one, which `nn.CrossEntropyLoss` takes as they are, label smoothing included. They act on
the batch after the loader's augmentation, so cutout and a policy combine with any of them.

RICAP (Takahashi et al. 2018, "Data augmentation using random image cropping and patching"): a boundary
point (w, h) drawn from Beta(beta, beta) on each axis splits the output into four rectangles; each is filled
with a random crop of the same size from another image of the batch (one permutation per rectangle), and
the target is the four labels weighted by their rectangles' areas. The whole batch is one gather on the
device, with no synchronisation, from the mix's own seeded generator, whose state goes into checkpoints.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ..config import ConfigError, TrainConfig

RICAP_SEED_OFFSET = 0x5EED  # RICAP's stream is seeded with train.seed + this, apart from the loader's


class Ricap:
    """Random image cropping and patching of four images per output image; `beta` shapes the boundary."""

    def __init__(self, beta: float, *, num_classes: int = 10, device: torch.device | str = "cpu",
                 seed: int = 0) -> None:
        if not beta > 0:
            raise ConfigError(f"train.ricap_beta: must be > 0 (the paper uses 0.3), got {beta!r}")
        self.beta, self.num_classes = beta, num_classes
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)

    def state_dict(self) -> dict:
        """The random state, for checkpoints."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, H, W) images and (B,) labels -> patched images of the same shape and (B, classes) targets."""
        b, _, height, width = x.shape
        g, device = self.generator, x.device
        # torch.distributions.Beta takes no generator; _sample_dirichlet is the sampler it calls underneath.
        split = torch._sample_dirichlet(torch.full((2, 2), self.beta, device=device), generator=g)[:, 0]
        split = split.nan_to_num(0.5).clamp(0, 1)  # guards the 0/0 of two underflowed Gamma draws
        w = torch.round(split[0] * width).long()  # the boundary: rectangles are w | width - w across ...
        h = torch.round(split[1] * height).long()  # ... and h | height - h down; k = 2 * (below) + (right)
        widths = torch.stack([w, width - w, w, width - w])
        heights = torch.stack([h, h, height - h, height - h])
        source = torch.stack([torch.randperm(b, device=device, generator=g) for _ in range(4)], 1)  # (B, 4)
        left = (torch.rand(b, 4, device=device, generator=g) * (width - widths + 1)).long()  # crop corners
        top = (torch.rand(b, 4, device=device, generator=g) * (height - heights + 1)).long()

        below = (torch.arange(height, device=device) >= h).long()  # (H,)
        right = (torch.arange(width, device=device) >= w).long()  # (W,)
        k = (2 * below[:, None] + right[None, :]).expand(b, height, width)  # rectangle of each output pixel
        rows = torch.arange(height, device=device) - h * below  # position inside the rectangle
        cols = torch.arange(width, device=device) - w * right
        image = source.gather(1, k.reshape(b, -1)).view(b, height, width)
        src_row = top.gather(1, k.reshape(b, -1)).view(b, height, width) + rows[None, :, None]
        src_col = left.gather(1, k.reshape(b, -1)).view(b, height, width) + cols[None, None, :]
        mixed = x[image, :, src_row, src_col].permute(0, 3, 1, 2)  # (B, H, W, C) -> (B, C, H, W)
        if not x.is_contiguous(memory_format=torch.channels_last):
            mixed = mixed.contiguous()

        area = (widths * heights).float() / (width * height)  # (4,), sums to one
        target = (F.one_hot(y[source], self.num_classes).float() * area[None, :, None]).sum(1)
        return mixed, target


def make_batch_mix(cfg: TrainConfig, device: torch.device | str, num_classes: int = 10) -> Callable | None:
    """The batch mixing of `cfg` (train.mixup_alpha, cutmix_alpha, ricap_beta), or None when all are off.

    MixUp and CutMix together alternate at random per batch (torchvision's RandomChoice, global generator).
    RICAP is not combined with them: one patching scheme per batch, as in the papers that compare them.
    """
    if cfg.ricap_beta:
        if cfg.mixup_alpha or cfg.cutmix_alpha:
            raise ConfigError("train.ricap_beta cannot be combined with train.mixup_alpha or train.cutmix_alpha: "
                              "set the other ones to 0")
        return Ricap(cfg.ricap_beta, num_classes=num_classes, device=device, seed=cfg.seed + RICAP_SEED_OFFSET)
    if not (cfg.mixup_alpha or cfg.cutmix_alpha):
        return None
    from torchvision.transforms import v2

    mixes = ([v2.MixUp(alpha=cfg.mixup_alpha, num_classes=num_classes)] if cfg.mixup_alpha else []) + \
            ([v2.CutMix(alpha=cfg.cutmix_alpha, num_classes=num_classes)] if cfg.cutmix_alpha else [])
    return mixes[0] if len(mixes) == 1 else v2.RandomChoice(mixes)
