"""GPU-resident batches: the whole split lives on the device as uint8, augmentation runs batched there.

Per training batch, all on `device`: an optional TrivialAugment / RandAugment / AutoAugment policy on the
uint8 images (`auto_augment.BatchedPolicy`: every image draws its own operations, torchvision's operations
batched), random crop with reflect padding and horizontal flip in one gather, normalisation, cutout; or, with
`data.augment_per: epoch` (airbench's loader), the same once for the whole shuffled split at the start of each
epoch, batches then being slices of it. The flip is random, or airbench's alternating flip (`data.flip_alternate`): random in the first epoch, then each
image is mirrored on every other epoch. Every random choice comes from the loader's own seeded generator,
and the loader's state (generator and flip state) is checkpointed, so a run is reproducible and resumes
exactly. The same code runs on a CPU.
"""

from __future__ import annotations

from typing import Iterator

import torch

from ..config import DataConfig
from .cifar10 import CIFAR10Split, MEAN, STD


def make_policy(name: str):
    """torchvision's own `transforms.v2` policy called `name` (one draw per call; the reference that
    `BatchedPolicy` reproduces per image), or None for "none"."""
    if name == "none":
        return None
    from torchvision.transforms import v2

    from .auto_augment import BatchedPolicy

    BatchedPolicy(name)  # checks the name: one line saying which names exist
    return {"trivialaugment": v2.TrivialAugmentWide(), "randaugment": v2.RandAugment(),
            "autoaugment": v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10)}[name]


def crop_flip(images: torch.Tensor, padding: int, flip: bool | torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random crop of uint8 (B, C, H, W) images after reflect-padding by `padding`, and horizontal flip:
    random per image for `flip=True`, or of the images where a (B,) bool tensor `flip` is True.

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
    if isinstance(flip, torch.Tensor):
        cols = torch.where(flip.view(b, 1), w - 1 - cols, cols)
    elif flip:
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


def train_steps(images: int, batch_size: int) -> int:
    """Training steps of an epoch over `images` images: the ragged end is dropped, never below one step."""
    return max(1, images // batch_size)


class GpuLoader:
    """Shuffled, normalised (and, for training, augmented) batches of one split, kept on `device`.

    Images are stored once as uint8 (N, 3, 32, 32); each batch comes out as float32 (B, 3, 32, 32) in
    channels_last memory format when asked, else contiguous, with int64 labels.
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
        self.policy = None
        if train and self.augment.policy != "none":
            from .auto_augment import BatchedPolicy  # torchvision loads here, not on `import cifar_resnet`

            self.policy = BatchedPolicy(self.augment.policy)
        # alternating flip: which images are mirrored in the current epoch, by dataset index (None before the first)
        self.flip_state: torch.Tensor | None = None
        # the crop's gather leaves a batch channels-last: contiguous() makes it the format the network uses
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.mean = torch.tensor(MEAN, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(STD, device=self.device).view(1, 3, 1, 1)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)

    def __len__(self) -> int:
        n = len(self.labels)
        return train_steps(n, self.batch_size) if self.train else -(-n // self.batch_size)

    def state_dict(self) -> dict:
        """The random state and the alternating flip's state, for checkpoints."""
        return {"generator": self.generator.get_state(), "flip_state": self.flip_state}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        if self.train and self.augment.flip and self.augment.flip_alternate:
            flips = state["flip_state"]
            self.flip_state = None if flips is None else flips.to(self.device)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) on the device -> normalised float32, in the loader's memory format."""
        x = (images.float() - self.mean) / self.std
        return x.contiguous(memory_format=self.memory_format)

    def augment_batch(self, images: torch.Tensor, flip: torch.Tensor | None = None) -> torch.Tensor:
        """Augment a uint8 batch and normalise it (what a training batch goes through); `flip` (B,) bool
        says which images to mirror (the alternating flip), else the flip is random when `data.flip`."""
        aug = self.augment
        if self.policy is not None:
            images = self.policy(images, self.generator)
        if aug.crop_padding or aug.flip:
            images = crop_flip(images, aug.crop_padding, aug.flip if flip is None else flip, self.generator)
        x = (images.float() - self.mean) / self.std
        if aug.cutout:
            x = cutout(x, aug.cutout, self.generator)
        return x.contiguous(memory_format=self.memory_format)

    def _epoch_flips(self) -> torch.Tensor:
        """The alternating flip of this epoch, per dataset index: random at first, then each image's opposite.

        Over any two consecutive epochs every image is seen both ways, which a random flip only achieves on
        average (airbench's "alternating flip", Jordan 2024)."""
        if self.flip_state is None:
            self.flip_state = torch.rand(len(self.labels), device=self.device, generator=self.generator) < 0.5
        else:
            self.flip_state = ~self.flip_state
        return self.flip_state

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        if self.train:
            order = torch.randperm(n, device=self.device, generator=self.generator)
            flips = self._epoch_flips() if self.augment.flip and self.augment.flip_alternate else None
            if self.augment.augment_per == "epoch":
                epoch = self.augment_batch(self.images[order], None if flips is None else flips[order])
                labels = self.labels[order]
                for i in range(len(self)):
                    batch = slice(i * self.batch_size, (i + 1) * self.batch_size)
                    yield epoch[batch], labels[batch]
                return
            for i in range(len(self)):
                index = order[i * self.batch_size:(i + 1) * self.batch_size]
                yield self.augment_batch(self.images[index], None if flips is None else flips[index]), self.labels[index]
        else:
            for start in range(0, n, self.batch_size):
                yield self.normalize(self.images[start:start + self.batch_size]), self.labels[start:start + self.batch_size]
