"""GPU-resident batches: the whole split lives on the device as uint8, augmentation runs batched there.

Per training batch, all on `device`: an optional torchvision `transforms.v2` policy on uint8 images (one
sampled operation per group of `policy_group` images), random crop with reflect padding and horizontal flip
in one gather, normalisation, cutout. Every random choice comes from the loader's own seeded generator, so a
run is reproducible and its state can be checkpointed. The same code runs on a CPU.
"""

from __future__ import annotations

from typing import Iterator

import torch

from .config import ConfigError, DataConfig
from .data import MEAN, STD, CIFAR10Split

_POLICIES = ("none", "trivialaugment", "randaugment", "autoaugment")


def make_policy(name: str):
    """The torchvision `transforms.v2` policy called `name`, or None for "none"."""
    if name not in _POLICIES:
        raise ConfigError(f"data.policy: unknown policy {name!r}; choose one of {', '.join(_POLICIES)}")
    if name == "none":
        return None
    from torchvision.transforms import v2

    return {"trivialaugment": v2.TrivialAugmentWide, "randaugment": v2.RandAugment,
            "autoaugment": v2.AutoAugment}[name]()


def crop_flip(images: torch.Tensor, padding: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random crop of uint8 (B, C, H, W) images after reflect-padding by `padding`, and random horizontal flip.

    One gather does both: each output pixel reads its (reflected) source row and column, so no padded copy
    of the batch is made.
    """
    b, _, h, w = images.shape
    device = images.device
    rows = torch.arange(h, device=device).expand(b, h)
    cols = torch.arange(w, device=device).expand(b, w)
    if padding:
        rows = rows + torch.randint(-padding, padding + 1, (b, 1), device=device, generator=generator)
        cols = cols + torch.randint(-padding, padding + 1, (b, 1), device=device, generator=generator)
        rows = torch.where(rows < 0, -rows, torch.where(rows >= h, 2 * (h - 1) - rows, rows))
        cols = torch.where(cols < 0, -cols, torch.where(cols >= w, 2 * (w - 1) - cols, cols))
    if flip:
        flipped = torch.rand(b, 1, device=device, generator=generator) < 0.5
        cols = torch.where(flipped, w - 1 - cols, cols)
    batch = torch.arange(b, device=device)[:, None, None]
    return images[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Zero a `size` x `size` square centred at a random pixel of each image (it may cross the border)."""
    b, _, h, w = x.shape
    cy = torch.randint(0, h, (b, 1, 1), device=x.device, generator=generator) - size // 2
    cx = torch.randint(0, w, (b, 1, 1), device=x.device, generator=generator) - size // 2
    ys = torch.arange(h, device=x.device)[None, :, None]
    xs = torch.arange(w, device=x.device)[None, None, :]
    inside = (ys >= cy) & (ys < cy + size) & (xs >= cx) & (xs < cx + size)
    return x * ~inside[:, None]


class GpuLoader:
    """Shuffled, normalised (and, for training, augmented) batches of one split, kept on `device`.

    Images are stored once as uint8 (N, 3, 32, 32); each batch comes out as float32 (B, 3, 32, 32) in
    channels_last memory format when asked, with int64 labels.
    """

    def __init__(self, split: CIFAR10Split, *, batch_size: int, device: torch.device | str, train: bool,
                 augment: DataConfig | None = None, seed: int = 0, channels_last: bool = False) -> None:
        self.device = torch.device(device)
        images = split.images if split.images.shape[1] == 3 else split.images.permute(0, 3, 1, 2)
        self.images = images.contiguous().to(self.device)  # uint8, stays uint8 on the device
        self.labels = split.labels.to(self.device)
        self.batch_size = batch_size
        self.train = train
        self.augment = augment or DataConfig(crop_padding=0, flip=False)
        self.policy = make_policy(self.augment.policy) if train else None
        self.channels_last = channels_last
        self.mean = torch.tensor(MEAN, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(STD, device=self.device).view(1, 3, 1, 1)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)

    def __len__(self) -> int:
        n = len(self.labels)
        return max(1, n // self.batch_size) if self.train else -(-n // self.batch_size)  # training drops the ragged end

    def state_dict(self) -> dict:
        """The random state, for checkpoints."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) on the device -> normalised float32, channels_last if the loader is."""
        x = (images.float() - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def augment_batch(self, images: torch.Tensor) -> torch.Tensor:
        """Augment a uint8 batch and normalise it (what a training batch goes through)."""
        aug = self.augment
        if self.policy is not None:
            images = self._apply_policy(images)
        if aug.crop_padding or aug.flip:
            images = crop_flip(images, aug.crop_padding, aug.flip, self.generator)
        x = (images.float() - self.mean) / self.std
        if aug.cutout:
            x = cutout(x, aug.cutout, self.generator)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _apply_policy(self, images: torch.Tensor) -> torch.Tensor:
        # v2 policies sample from torch's global CPU generator: seed a forked copy from ours, so the
        # loader's generator alone decides the outcome and the caller's random stream is untouched.
        seed = int(torch.randint(0, 2**62, (1,), device=self.device, generator=self.generator))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            groups = images.split(max(1, self.augment.policy_group))
            return torch.cat([self.policy(g) for g in groups])

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        if self.train:
            order = torch.randperm(n, device=self.device, generator=self.generator)
            for i in range(len(self)):
                index = order[i * self.batch_size:(i + 1) * self.batch_size]
                yield self.augment_batch(self.images[index]), self.labels[index]
        else:
            for start in range(0, n, self.batch_size):
                yield self.normalize(self.images[start:start + self.batch_size]), self.labels[start:start + self.batch_size]
